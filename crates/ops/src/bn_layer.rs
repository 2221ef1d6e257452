//! A candle-nn `BatchNorm` layer as fkd's norms see it, on every device: its shape checks, the
//! momentum of its running statistics (and [`StatsMomentum`], which imposes one on a thread),
//! their update, and candle-nn's own forward under an imposed momentum (the fallback where no
//! fused node applies).

use candle_core::{DType, ModuleT, Result, Tensor, Var};
use candle_nn::BatchNorm;
use std::cell::Cell;

thread_local! {
    /// The momentum that [`StatsMomentum`] imposes on this thread's training-mode batch norms.
    static STATS_MOMENTUM: Cell<Option<f64>> = const { Cell::new(None) };
}

/// While a value of this type lives, every training-mode batch norm run on this thread
/// ([`batch_norm2d`], [`batch_norm2d_add_relu`], [`conv2d_batch_norm`]) updates its running
/// statistics with this momentum instead of its own; dropping it restores what was in force
/// before. With momentum `1/k` for the `k`-th of a series of forward passes, each layer's
/// running statistics end as the mean of the batch statistics of the series (momentum 1 for the
/// first pass discards the old values).
#[derive(Debug)]
#[must_use = "the momentum applies only while the guard lives"]
pub struct StatsMomentum {
    previous: Option<f64>,
}

impl StatsMomentum {
    /// Imposes `momentum` (in (0, 1]) on this thread until the guard is dropped.
    pub fn set(momentum: f64) -> Result<Self> {
        if !(momentum > 0.0 && momentum <= 1.0) {
            candle_core::bail!("batch-norm momentum must be in (0, 1], got {momentum}");
        }
        Ok(Self {
            previous: STATS_MOMENTUM.replace(Some(momentum)),
        })
    }
}

impl Drop for StatsMomentum {
    fn drop(&mut self) {
        STATS_MOMENTUM.set(self.previous);
    }
}

/// Candle-nn's training-mode forward, its running-statistics update redone with the momentum
/// that [`StatsMomentum`] imposes (if any): candle-nn applied `r₁ = (1 − m)·r₀ + m·s` with the
/// layer's own `m`, so `s = (r₁ − (1 − m)·r₀)/m` and the update becomes `(1 − m')·r₀ + m'·s`.
pub(crate) fn candle_forward_t(bn: &BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    let imposed = STATS_MOMENTUM.get().filter(|_| train);
    let Some(imposed) = imposed else {
        return bn.forward_t(x, train);
    };
    let old = [bn.running_mean().copy()?, bn.running_var().copy()?];
    let y = bn.forward_t(x, train)?;
    let m = bn.momentum();
    for (stat, old) in [bn.running_mean(), bn.running_var()].into_iter().zip(old) {
        let batch = ((stat - (&old * (1.0 - m))?)? / m)?;
        let new = ((old * (1.0 - imposed))? + (batch * imposed)?)?;
        Var::from_tensor(stat)?.set(&new)?;
    }
    Ok(y)
}

/// `(n, c, h·w)` of the (n, c, h, w) input `x` of the norm `bn`, or an error when `bn` has
/// another number of channels.
pub(crate) fn norm_dims(bn: &BatchNorm, x: &Tensor) -> Result<(usize, usize, usize)> {
    let (n, c, h, w) = x.dims4()?;
    if bn.running_mean().dim(0)? != c {
        candle_core::bail!(
            "batch-norm over {} channels got an input of shape {:?}",
            bn.running_mean().dim(0)?,
            x.dims()
        );
    }
    Ok((n, c, h * w))
}

/// Training needs more than one value per channel (`m` of them, in the norm's input, `what`
/// of `shape`): PyTorch refuses fewer, and the unbiased variance would divide by zero.
pub(crate) fn check_trainable(m: usize, what: &str, shape: impl std::fmt::Debug) -> Result<()> {
    if m < 2 {
        candle_core::bail!(
            "batch-norm needs more than one value per channel to train, got {what} {shape:?}"
        );
    }
    Ok(())
}

/// PyTorch's running-statistics update, written into the layer's vars.
pub(crate) fn update_running(bn: &BatchNorm, mean: &[f64], var: &[f64], m: usize) -> Result<()> {
    let momentum = running_momentum(bn);
    let unbiased = m as f64 / (m as f64 - 1.0);
    for (stat, batch, factor) in [
        (bn.running_mean(), mean, 1.0),
        (bn.running_var(), var, unbiased),
    ] {
        let old = stat.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let new: Vec<f64> = old
            .iter()
            .zip(batch)
            .map(|(r, s)| (1.0 - momentum) * r + momentum * factor * s)
            .collect();
        let new = Tensor::from_vec(new, old.len(), stat.device())?.to_dtype(stat.dtype())?;
        // The layer's statistics are VarMap variables: `from_tensor` returns the same var.
        Var::from_tensor(stat)?.set(&new)?;
    }
    Ok(())
}

/// The momentum of `bn`'s running-statistics update on this thread: [`StatsMomentum`]'s if one
/// is in force, else the layer's own.
pub(crate) fn running_momentum(bn: &BatchNorm) -> f64 {
    STATS_MOMENTUM.get().unwrap_or_else(|| bn.momentum())
}
