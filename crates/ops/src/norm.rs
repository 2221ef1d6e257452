//! 2-D batch normalisation (optionally followed by a ReLU) as one node with an analytic
//! backward, for the CPU. Candle-nn's `BatchNorm` builds training mode from about ten tensor
//! ops (transpose, mean, sub, sqr, mean, div, mul, add, transpose back), each with its own
//! backward and gradient buffers; here the forward is two passes over the input (statistics,
//! then normalise) and the backward two (per-channel sums, then the input gradient):
//!
//! `x̂ = (x − μ)·σ⁻¹`, `y = γ·x̂ + β`; with `g = ∂y` (masked by `y > 0` after a ReLU) and `M`
//! elements per channel: `∂β = Σg`, `∂γ = Σg·x̂`, and in training mode
//! `∂x = γσ⁻¹/M · (M·g − Σg − x̂·Σg·x̂)`, in inference mode `∂x = γσ⁻¹·g`.
//!
//! Running statistics follow PyTorch: `r ← (1 − momentum)·r + momentum·s`, with the unbiased
//! variance `M/(M − 1)·σ²` for the running variance. [`StatsMomentum`] overrides the layers'
//! momentum on one thread for a while: with `1/k` for the `k`-th batch, the running statistics
//! become the plain mean over the batches seen ("precise BN", see `fkd_train::recompute_bn_stats`).

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor, WithDType,
};
use candle_nn::BatchNorm;
use rayon::prelude::*;

use crate::bn_layer::{candle_forward_t, check_trainable, norm_dims, update_running};
use crate::profile;
use crate::simd;
use crate::storage::float_kernel;
use crate::storage::{contiguous, zeros};

/// Per-channel affine map of one call: `y = x·scale + shift` (scale = γσ⁻¹, shift = β − μγσ⁻¹),
/// with what the backward needs.
#[derive(Clone, Debug)]
pub(super) struct Affine {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) hw: usize,
    pub(super) mean: Vec<f64>,
    pub(super) inv_std: Vec<f64>,
    pub(super) gamma: Vec<f64>,
    pub(super) beta: Vec<f64>,
    pub(super) relu: bool,
    /// Training mode: μ and σ came from this batch, so ∂x has the two extra terms.
    pub(super) batch_stats: bool,
}

impl Affine {
    /// The map of a norm over `n` images of `c` channels of `hw` pixels with these per-channel
    /// statistics (`var` biased), `eps`, γ and β.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        (n, c, hw): (usize, usize, usize),
        mean: Vec<f64>,
        var: &[f64],
        eps: f64,
        gamma: Vec<f64>,
        beta: Vec<f64>,
        relu: bool,
        batch_stats: bool,
    ) -> Self {
        Self {
            n,
            c,
            hw,
            mean,
            inv_std: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
            gamma,
            beta,
            relu,
            batch_stats,
        }
    }

    /// `c channels × hw pixels[, relu]`, for the op profile.
    pub(super) fn label(&self) -> String {
        let relu = if self.relu { ", relu" } else { "" };
        format!("{}×{}{relu}", self.c, self.hw)
    }

    fn scale_shift(&self, ch: usize) -> (f64, f64) {
        let scale = self.gamma[ch] * self.inv_std[ch];
        (scale, self.beta[ch] - self.mean[ch] * scale)
    }
}

/// `Σ f(xs[i], ys[i])` over one row, in eight running sums of `T` (so the loop vectorises)
/// added up in f64: rows are at most a feature map (224² values), and the per-channel totals
/// over rows are f64.
#[inline(always)]
fn row_sum<T: WithDType>(xs: &[T], ys: &[T], f: impl Fn(T, T) -> T) -> f64 {
    let mut acc = [T::zero(); 8];
    let (xc, yc) = (xs.chunks_exact(8), ys.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x, y) in xc.zip(yc) {
        for i in 0..8 {
            acc[i] += f(x[i], y[i]);
        }
    }
    let tail: f64 = xr.iter().zip(yr).map(|(&x, &y)| f(x, y).to_f64()).sum();
    acc.iter().map(|v| v.to_f64()).sum::<f64>() + tail
}

/// Per-channel mean and biased variance of (n, c, hw) data (two passes: the mean, then the
/// squared deviations from it).
pub(super) fn channel_stats<T: WithDType>(
    x: &[T],
    n: usize,
    c: usize,
    hw: usize,
) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let m = (n * hw) as f64;
                    let rows = || (0..n).map(|b| &x[(b * c + ch) * hw..][..hw]);
                    let mean = rows().map(|r| row_sum(r, r, |v, _| v)).sum::<f64>() / m;
                    let mt = T::from_f64(mean);
                    let sq = rows()
                        .map(|r| {
                            row_sum(r, r, |v, _| {
                                let d = v - mt;
                                d * d
                            })
                        })
                        .sum::<f64>();
                    (mean, sq / m)
                },
            )
        })
        .collect()
}

struct Stats {
    n: usize,
    c: usize,
    hw: usize,
}

impl candle_core::CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "fkd-batch-norm-stats"
    }

    /// (n, c, h, w) → (2, c): means, then biased variances.
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let label = || format!("bn stats {}×{}", self.c, self.hw);
        let stats = profile::time(label, || -> Result<_> {
            Ok(match s.dtype() {
                DType::F32 => {
                    channel_stats::<f32>(contiguous(self.name(), s, l)?, self.n, self.c, self.hw)
                }
                DType::F64 => {
                    channel_stats::<f64>(contiguous(self.name(), s, l)?, self.n, self.c, self.hw)
                }
                dt => candle_core::bail!("{}: unsupported dtype {dt:?}", self.name()),
            })
        })?;
        let mut out: Vec<f64> = stats.iter().map(|s| s.0).collect();
        out.extend(stats.iter().map(|s| s.1));
        Ok((CpuStorage::F64(out), Shape::from((2, self.c))))
    }
}

/// `y = x·scale + shift [+ residual]`, then the ReLU when the node has one.
pub(super) fn normalise<T: WithDType>(x: &[T], residual: Option<&[T]>, a: &Affine) -> Vec<T> {
    let mut y = zeros(x.len());
    y.par_chunks_mut(a.hw).enumerate().for_each(|(bc, dst)| {
        simd::dispatch(
            #[inline(always)]
            || {
                let (scale, shift) = a.scale_shift(bc % a.c);
                let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
                let relu = |out: T| {
                    if !a.relu || out > T::zero() {
                        out
                    } else {
                        T::zero()
                    }
                };
                let src = &x[bc * a.hw..][..a.hw];
                match residual {
                    Some(r) => {
                        for ((d, &v), &r) in dst.iter_mut().zip(src).zip(&r[bc * a.hw..][..a.hw]) {
                            *d = relu(v * scale + shift + r);
                        }
                    }
                    None => {
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d = relu(v * scale + shift);
                        }
                    }
                }
            },
        )
    });
    y
}

/// The node: (x, [γ; β]) → y as a `CustomOp2`, (x, [γ; β], residual) → y as a `CustomOp3`.
struct Node(Affine);

impl Node {
    /// ∂x (when x needs one) and ∂[γ; β] from the gradient `grad` of the affine map's output
    /// (already masked by the ReLU when `self.0.relu` is false).
    fn grads(
        &self,
        a: &Affine,
        x: &Tensor,
        gb: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let needs_grad_x = x.track_op();
        let x = x.detach();
        // (2, c): Σg·x̂ (∂γ) and Σg (∂β), in f64.
        let sums = x.apply_op2_no_bwd(grad, &GradSums(a.clone()))?;
        let grad_x = if needs_grad_x {
            let s = sums.to_vec2::<f64>()?;
            Some(x.apply_op2_no_bwd(
                grad,
                &GradInput {
                    a: a.clone(),
                    sum_gx: s[0].clone(),
                    sum_g: s[1].clone(),
                },
            )?)
        } else {
            None
        };
        Ok((grad_x, sums.to_dtype(gb.dtype())?))
    }
}

impl CustomOp2 for Node {
    fn name(&self) -> &'static str {
        "fkd-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = &self.0;
        let shape = Shape::from(l1.dims());
        let out = profile::time(
            || format!("bn fwd {}", a.label()),
            || -> Result<_> {
                let name = CustomOp2::name(self);
                Ok(float_kernel!(name, |x| normalise(x, None, a), s1, l1))
            },
        )?;
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.detach().contiguous()?;
        let (grad_x, grad_gb) = profile::time(
            || format!("bn bwd {}", self.0.label()),
            || self.grads(&self.0, x, gb, &grad),
        )?;
        Ok((grad_x, Some(grad_gb)))
    }
}

impl CustomOp3 for Node {
    fn name(&self) -> &'static str {
        "fkd-batch-norm-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _: &CpuStorage,
        _: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = &self.0;
        let shape = Shape::from(l1.dims());
        let name = CustomOp3::name(self);
        let out = profile::time(
            || format!("bn-add fwd {}", a.label()),
            || -> Result<_> {
                Ok(float_kernel!(
                    name,
                    |x, r| normalise(x, Some(r), a),
                    s1,
                    l1,
                    s3,
                    l3
                ))
            },
        )?;
        Ok((out, shape))
    }

    /// The residual's gradient is the output gradient masked by the ReLU (`y > 0`); the affine
    /// map sees that same masked gradient.
    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        _residual: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.detach().contiguous()?;
        profile::time(
            || format!("bn-add bwd {}", self.0.label()),
            || {
                let masked = if self.0.relu {
                    grad.apply_op2_no_bwd(&y.detach(), &crate::relu_mask::ReluMask)?
                } else {
                    grad
                };
                let a = Affine {
                    relu: false,
                    ..self.0.clone()
                };
                let (grad_x, grad_gb) = self.grads(&a, x, gb, &masked)?;
                Ok((grad_x, Some(grad_gb), Some(masked)))
            },
        )
    }
}

/// The upstream gradient `g` as the affine map saw it: zero where the ReLU cut the output
/// (recomputed from the input `v` with the forward's own `T` arithmetic).
#[inline(always)]
fn masked<T: WithDType>(relu: bool, scale: T, shift: T, v: T, g: T) -> T {
    if !relu || v * scale + shift > T::zero() {
        g
    } else {
        T::zero()
    }
}

struct GradSums(Affine);

pub(super) fn grad_sums<T: WithDType>(x: &[T], grad: &[T], a: &Affine) -> Vec<f64> {
    let per: Vec<(f64, f64)> = (0..a.c)
        .into_par_iter()
        .map(|ch| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let (scale, shift) = a.scale_shift(ch);
                    let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
                    let mean = T::from_f64(a.mean[ch]);
                    let (mut sum_gx, mut sum_g) = (0.0, 0.0);
                    for b in 0..a.n {
                        let at = (b * a.c + ch) * a.hw;
                        let (xs, gs) = (&x[at..][..a.hw], &grad[at..][..a.hw]);
                        sum_g += row_sum(xs, gs, |v, g| masked(a.relu, scale, shift, v, g));
                        sum_gx += row_sum(xs, gs, |v, g| {
                            masked(a.relu, scale, shift, v, g) * (v - mean)
                        });
                    }
                    (sum_gx * a.inv_std[ch], sum_g)
                },
            )
        })
        .collect();
    let mut out: Vec<f64> = per.iter().map(|p| p.0).collect();
    out.extend(per.iter().map(|p| p.1));
    out
}

impl CustomOp2 for GradSums {
    fn name(&self) -> &'static str {
        "fkd-batch-norm-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let out = match (s1.dtype(), s2.dtype()) {
            (DType::F32, DType::F32) => grad_sums::<f32>(
                contiguous(name, s1, l1)?,
                contiguous(name, s2, l2)?,
                &self.0,
            ),
            (DType::F64, DType::F64) => grad_sums::<f64>(
                contiguous(name, s1, l1)?,
                contiguous(name, s2, l2)?,
                &self.0,
            ),
            (a, b) => candle_core::bail!("{name}: unsupported dtypes {a:?}, {b:?}"),
        };
        Ok((CpuStorage::F64(out), Shape::from((2, self.0.c))))
    }
}

pub(super) struct GradInput {
    pub(super) a: Affine,
    pub(super) sum_gx: Vec<f64>,
    pub(super) sum_g: Vec<f64>,
}

/// `∂x = A·g + B·x + C` per channel, the module docs' formula with x̂ expanded, so the
/// per-element work is two multiply-adds in `T`.
pub(super) fn grad_input<T: WithDType>(x: &[T], grad: &[T], s: &GradInput) -> Vec<T> {
    let a = &s.a;
    let m = (a.n * a.hw) as f64;
    let mut dx = zeros(x.len());
    dx.par_chunks_mut(a.hw).enumerate().for_each(|(bc, dst)| {
        simd::dispatch(
            #[inline(always)]
            || {
                let ch = bc % a.c;
                let (scale, shift) = a.scale_shift(ch);
                let k = a.gamma[ch] * a.inv_std[ch];
                let (ca, cb, cc) = if a.batch_stats {
                    let b = -k / m * a.inv_std[ch] * s.sum_gx[ch];
                    (k, b, -k / m * s.sum_g[ch] - b * a.mean[ch])
                } else {
                    (k, 0.0, 0.0)
                };
                let (ca, cb, cc) = (T::from_f64(ca), T::from_f64(cb), T::from_f64(cc));
                let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
                let at = bc * a.hw;
                for ((d, &v), &g) in dst
                    .iter_mut()
                    .zip(&x[at..][..a.hw])
                    .zip(&grad[at..][..a.hw])
                {
                    let g = masked(a.relu, scale, shift, v, g);
                    *d = ca * g + cb * v + cc;
                }
            },
        )
    });
    dx
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "fkd-batch-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let shape = Shape::from(l1.dims());
        let out = float_kernel!(name, |x, g| grad_input(x, g, self), s1, l1, s2, l2);
        Ok((out, shape))
    }
}

/// A candle-nn `BatchNorm` (affine, mean-removing, as ResNet's) applied to an (n, c, h, w)
/// tensor, followed by a ReLU when `relu`: `train` normalises with the batch's statistics and
/// updates the layer's running statistics in place; otherwise it uses the running ones.
///
/// On the CPU (f32, f64) this is the fused node of the module docs; elsewhere, or for a layer
/// without an affine part, it is candle-nn's own `forward_t` (then `relu`).
pub fn batch_norm2d(bn: &BatchNorm, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
    batch_norm_impl(bn, x, None, train, relu)
}

/// `relu(batch_norm2d(bn, x, train, false) + residual)` in one node: the end of a ResNet basic
/// block. On the CPU it saves the add and the ReLU their own passes and gradient buffers (Candle's
/// ReLU backward alone makes five); elsewhere it is candle-nn's ops.
pub fn batch_norm2d_add_relu(
    bn: &BatchNorm,
    x: &Tensor,
    residual: &Tensor,
    train: bool,
) -> Result<Tensor> {
    if residual.dims() != x.dims() {
        candle_core::bail!(
            "batch-norm: the residual {:?} does not match the input {:?}",
            residual.dims(),
            x.dims()
        );
    }
    batch_norm_impl(bn, x, Some(residual), train, true)
}

fn batch_norm_impl(
    bn: &BatchNorm,
    x: &Tensor,
    residual: Option<&Tensor>,
    train: bool,
    relu: bool,
) -> Result<Tensor> {
    if let Some(y) = crate::cuda::batch_norm(bn, x, residual, train, relu)? {
        return Ok(y);
    }
    let fused = matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64);
    let (Some((gamma, beta)), true) = (bn.weight_and_bias(), fused) else {
        let y = candle_forward_t(bn, x, train)?;
        let y = match residual {
            Some(r) => (y + r)?,
            None => y,
        };
        return if relu { y.relu() } else { Ok(y) };
    };
    let (n, c, hw) = norm_dims(bn, x)?;
    let x = x.contiguous()?;
    let (mean, var) = if train {
        let m = n * hw;
        check_trainable(m, "input", x.dims())?;
        let s = x
            .detach()
            .apply_op1_no_bwd(&Stats { n, c, hw })?
            .to_vec2::<f64>()?;
        let (mean, var) = (s[0].clone(), s[1].clone());
        update_running(bn, &mean, &var, m)?;
        (mean, var)
    } else {
        let f = |t: &Tensor| -> Result<Vec<f64>> { t.to_dtype(DType::F64)?.to_vec1::<f64>() };
        (f(bn.running_mean())?, f(bn.running_var())?)
    };
    let affine = Affine::new(
        (n, c, hw),
        mean,
        &var,
        bn.eps(),
        gamma.to_dtype(DType::F64)?.to_vec1::<f64>()?,
        beta.to_dtype(DType::F64)?.to_vec1::<f64>()?,
        relu,
        train,
    );
    let gb = Tensor::stack(&[gamma, beta], 0)?;
    match residual {
        Some(r) => x.apply_op3(&gb, &r.contiguous()?, Node(affine)),
        None => x.apply_op2(&gb, Node(affine)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bn_layer::StatsMomentum;
    use crate::testutil::{
        assert_affine_grads_match, max_diff, random_in, twin_layers, weighted_grads,
    };
    use candle_core::{ModuleT, Var};

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Training and inference mode, with and without the ReLU: outputs, running statistics and
    /// the gradients of x, γ and β equal candle-nn's BatchNorm (then `relu`).
    #[test]
    fn matches_candle_batch_norm() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        for (train, relu, shape) in [
            (true, false, [4, 3, 5, 6]),
            (true, true, [2, 5, 3, 3]),
            (false, true, [3, 2, 4, 4]),
            (false, false, [1, 4, 2, 7]),
        ] {
            let [(vm_a, bn_a), (vm_b, bn_b)] = twin_layers(shape[1], &mut rng);
            let x = Var::from_tensor(&random_in(&shape, &mut rng, -2.0, 2.0)).unwrap();
            let ours = batch_norm2d(&bn_a, &x, train, relu).unwrap();
            let theirs = bn_b.forward_t(&x, train).unwrap();
            let theirs = if relu { theirs.relu().unwrap() } else { theirs };
            let ctx = format!("train {train} relu {relu}");
            assert!(max_diff(&ours, &theirs) < 1e-10, "{ctx}");
            for name in ["running_mean", "running_var"] {
                let a = vm_a.data().lock().unwrap()[name].as_tensor().clone();
                let b = vm_b.data().lock().unwrap()[name].as_tensor().clone();
                assert!(max_diff(&a, &b) < 1e-12, "{ctx}: {name}");
            }
            let r = random_in(ours.dims(), &mut rng, -1.0, 1.0);
            let ga = weighted_grads(&ours, &r);
            let gb = weighted_grads(&theirs, &r);
            assert!(
                max_diff(ga.get(&x).unwrap(), gb.get(&x).unwrap()) < 1e-9,
                "{ctx}: ∂x"
            );
            assert_affine_grads_match(&vm_a, &vm_b, &ga, &gb, &ctx);
        }
    }

    /// The norm's loops run at the CPU's widest vector level (`simd`): every level gives the
    /// baseline's bits, in training (statistics, normalising and both backward passes) and in
    /// inference mode, with and without the ReLU and the residual.
    #[test]
    fn every_vector_level_gives_the_baseline_bits() {
        use crate::testutil::bits;
        let mut rng = ChaCha8Rng::seed_from_u64(41);
        let shape = [3, 5, 7, 9];
        let x = Var::from_tensor(&random_in(&shape, &mut rng, -2.0, 2.0)).unwrap();
        let res = Var::from_tensor(&random_in(&shape, &mut rng, -1.0, 1.0)).unwrap();
        let r = random_in(&shape, &mut rng, -1.0, 1.0);
        let runs = crate::simd::at_each_level(|| {
            // A fresh layer per level: training updates the running statistics.
            let [(vm, bn), _] = twin_layers(shape[1], &mut ChaCha8Rng::seed_from_u64(43));
            let mut vars: Vec<(String, Var)> =
                vm.data().lock().unwrap().clone().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Vec::new();
            for train in [true, false] {
                for y in [
                    batch_norm2d(&bn, &x, train, true).unwrap(),
                    batch_norm2d(&bn, &x, train, false).unwrap(),
                    batch_norm2d_add_relu(&bn, &x, &res, train).unwrap(),
                ] {
                    let g = weighted_grads(&y, &r);
                    out.push(bits(&y));
                    out.push(bits(g.get(&x).unwrap()));
                    for (_, v) in &vars {
                        if let Some(gv) = g.get(v) {
                            out.push(bits(gv));
                        }
                        out.push(bits(v.as_tensor()));
                    }
                }
            }
            out
        });
        for (level, got) in &runs[1..] {
            assert!(got == &runs[0].1, "{level:?}");
        }
    }

    /// The residual form equals batch norm, add, ReLU (candle-nn's ops), forward and the
    /// gradients of x, the residual, γ and β, in both modes.
    #[test]
    fn residual_form_matches_norm_add_relu() {
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        for train in [true, false] {
            let shape = [3, 4, 5, 6];
            let [(vm_a, bn_a), (vm_b, bn_b)] = twin_layers(shape[1], &mut rng);
            let x = Var::from_tensor(&random_in(&shape, &mut rng, -2.0, 2.0)).unwrap();
            let res = Var::from_tensor(&random_in(&shape, &mut rng, -1.0, 1.0)).unwrap();
            let ours = batch_norm2d_add_relu(&bn_a, &x, &res, train).unwrap();
            let theirs = (bn_b.forward_t(&x, train).unwrap() + res.as_tensor())
                .unwrap()
                .relu()
                .unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-10, "train {train}");
            let r = random_in(ours.dims(), &mut rng, -1.0, 1.0);
            let ga = weighted_grads(&ours, &r);
            let gb = weighted_grads(&theirs, &r);
            for v in [&x, &res] {
                assert!(
                    max_diff(ga.get(v).unwrap(), gb.get(v).unwrap()) < 1e-9,
                    "train {train}"
                );
            }
            assert_affine_grads_match(&vm_a, &vm_b, &ga, &gb, &format!("train {train}"));
        }
        let [(_, bn), _] = twin_layers(4, &mut rng);
        let x = random_in(&[2, 4, 3, 3], &mut rng, -1.0, 1.0);
        let wrong = random_in(&[2, 4, 3, 2], &mut rng, -1.0, 1.0);
        let err = batch_norm2d_add_relu(&bn, &x, &wrong, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("residual"), "{err}");
    }

    /// Under `StatsMomentum::set(1/k)` for the k-th batch, the running statistics of the fused
    /// node and of candle-nn's layer (its update redone) both end as the mean over the batches of
    /// the batch mean and of the unbiased batch variance; the layer's own momentum is back after.
    #[test]
    fn imposed_momentum_averages_batch_statistics() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let [(vm_a, bn_a), (vm_b, bn_b)] = twin_layers(3, &mut rng);
        let batches: Vec<Tensor> = (0..3)
            .map(|k| random_in(&[2, 3, 4, 5], &mut rng, -1.0 + k as f64, 2.0 + k as f64))
            .collect();
        let (mut mean, mut var) = (vec![0.0; 3], vec![0.0; 3]);
        for (k, x) in batches.iter().enumerate() {
            let guard = StatsMomentum::set(1.0 / (k + 1) as f64).unwrap();
            batch_norm2d(&bn_a, x, true, false).unwrap();
            candle_forward_t(&bn_b, x, true).unwrap();
            drop(guard);
            let per_channel = x.transpose(0, 1).unwrap().flatten_from(1).unwrap();
            let m = per_channel.mean(1).unwrap().to_vec1::<f64>().unwrap();
            let v = per_channel
                .broadcast_sub(&per_channel.mean_keepdim(1).unwrap())
                .unwrap()
                .sqr()
                .unwrap()
                .sum(1)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for ch in 0..3 {
                mean[ch] += m[ch] / 3.0;
                var[ch] += v[ch] / 39.0 / 3.0; // 40 values per channel, unbiased
            }
        }
        for (vm, who) in [(&vm_a, "fused"), (&vm_b, "candle-nn")] {
            let data = vm.data().lock().unwrap();
            for (name, want) in [("running_mean", &mean), ("running_var", &var)] {
                let got = data[name].as_tensor().to_vec1::<f64>().unwrap();
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() < 1e-9, "{who} {name}: {got:?} vs {want:?}");
                }
            }
        }
        // The guard is gone: the layer's momentum 0.1 applies again.
        let before = vm_a.data().lock().unwrap()["running_mean"]
            .as_tensor()
            .to_vec1::<f64>()
            .unwrap();
        let x = &batches[0];
        batch_norm2d(&bn_a, x, true, false).unwrap();
        let after = vm_a.data().lock().unwrap()["running_mean"]
            .as_tensor()
            .to_vec1::<f64>()
            .unwrap();
        let m = x
            .transpose(0, 1)
            .unwrap()
            .flatten_from(1)
            .unwrap()
            .mean(1)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for ch in 0..3 {
            assert!((after[ch] - (0.9 * before[ch] + 0.1 * m[ch])).abs() < 1e-12);
        }
        assert!(StatsMomentum::set(0.0).is_err() && StatsMomentum::set(1.5).is_err());
    }

    #[test]
    fn training_needs_two_values_per_channel() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let [(_, bn), _] = twin_layers(3, &mut rng);
        let x = random_in(&[1, 3, 1, 1], &mut rng, -1.0, 1.0);
        let err = batch_norm2d(&bn, &x, true, false).unwrap_err().to_string();
        assert!(err.contains("more than one value"), "{err}");
        assert!(batch_norm2d(&bn, &x, false, false).is_ok());
    }
}
