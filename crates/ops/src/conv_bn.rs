//! Conv → batch norm (→ ReLU) in training mode as one autograd node on the CPU: ResNet's stem,
//! the first conv of every basic block and the downsampling shortcuts.
//!
//! As two nodes, Candle's backward hands the norm's input gradient to the conv through its
//! gradient store, which starts every gradient as a zero tensor of the conv's output size and
//! adds into it; the conv's output is also a graph tensor of its own, read once more by a
//! separate statistics op. Here the forward keeps the conv output for the backward (as the
//! norm node kept its input), computes the batch statistics, normalises, and the backward runs
//! the norm's gradient sums and input gradient straight into the conv's backward kernel. The
//! arithmetic is the two nodes' own: the conv kernels of `conv`, the norm kernels of `norm`.

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage as _;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Storage, Tensor};
use candle_nn::{BatchNorm, Conv2d};

use crate::bn_layer::{check_trainable, update_running};
use crate::conv::kernel::{Needs, Route, backward, forward};
use crate::conv::plan::{Epilogue, Geometry};
use crate::gemm::Float;
use crate::norm::{Affine, GradInput, channel_stats, grad_input, grad_sums, normalise};
use crate::profile;
use crate::storage::contiguous;

const NAME: &str = "fkd-conv-batch-norm";

/// What the forward leaves for the backward and for the running-statistics update.
struct Saved {
    /// The conv's output, (n, o, ho, wo), in the input's float type.
    y: CpuStorage,
    affine: Affine,
    /// The batch's biased variances (the affine map keeps 1/σ).
    var: Vec<f64>,
}

/// The node: `(x, w, [γ; β]) → relu?(bn(conv(x, w)))` with batch statistics.
struct ConvBn {
    g: Geometry,
    o: usize,
    relu: bool,
    eps: f64,
    saved: Arc<OnceLock<Saved>>,
}

impl ConvBn {
    fn label(&self) -> String {
        let epilogue = if self.relu {
            Epilogue::Relu
        } else {
            Epilogue::None
        };
        self.g.label(self.o, epilogue)
    }

    fn fwd<T: Float>(&self, x: &[T], w: &[T], gb: &[T]) -> Result<Vec<T>> {
        let (g, o) = (&self.g, self.o);
        let (y, _) = forward(x, w, None, g, o, Epilogue::None);
        let hw = g.ho * g.wo;
        let stats = channel_stats(&y, g.n, o, hw);
        let f64s = |v: &[T]| v.iter().map(|v| v.to_f64()).collect::<Vec<f64>>();
        let var: Vec<f64> = stats.iter().map(|s| s.1).collect();
        let affine = Affine::new(
            (g.n, o, hw),
            stats.iter().map(|s| s.0).collect(),
            &var,
            self.eps,
            f64s(&gb[..o]),
            f64s(&gb[o..2 * o]),
            self.relu,
            true,
        );
        let z = normalise(&y, None, &affine);
        let saved = Saved {
            y: T::to_cpu_storage_owned(y),
            affine,
            var,
        };
        if self.saved.set(saved).is_err() {
            candle_core::bail!("{NAME}: a node's forward ran twice");
        }
        Ok(z)
    }

    fn bwd_typed<T: Float>(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        let (g, o) = (&self.g, self.o);
        let Some(saved) = self.saved.get() else {
            candle_core::bail!("{NAME}: the backward ran before the forward");
        };
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(gs)) = (&*xs, &*ws, &*gs) else {
            candle_core::bail!("{NAME}: the backward needs CPU tensors");
        };
        let y = saved.y.as_slice::<T>()?;
        let dz = contiguous::<T>(NAME, gs, gl)?;
        // (2o): Σg·x̂ (∂γ), then Σg (∂β), in f64; then ∂y, as the norm node's backward.
        let sums = grad_sums(y, dz, &saved.affine);
        let dy = grad_input(
            y,
            dz,
            &GradInput {
                a: saved.affine.clone(),
                sum_gx: sums[..o].to_vec(),
                sum_g: sums[o..].to_vec(),
            },
        );
        let needs = Needs {
            x: x.track_op(),
            w: true,
        };
        let (xd, wd) = (
            contiguous::<T>(NAME, xs, xl)?,
            contiguous::<T>(NAME, ws, wl)?,
        );
        let grads = backward(xd, wd, &dy, Route::Plain, g, o, false, needs);
        let (dx, dw, _) = grads.into_tensors(g, o, NAME)?;
        let dgb = Tensor::from_vec(sums, (2, o), &Device::Cpu)?.to_dtype(x.dtype())?;
        Ok((dx, dw, dgb))
    }
}

impl CustomOp3 for ConvBn {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = profile::time(
            || format!("conv-bn fwd {}", self.label()),
            || -> Result<CpuStorage> {
                Ok(match (s1.dtype(), s2.dtype(), s3.dtype()) {
                    (DType::F32, DType::F32, DType::F32) => CpuStorage::F32(self.fwd::<f32>(
                        contiguous(NAME, s1, l1)?,
                        contiguous(NAME, s2, l2)?,
                        contiguous(NAME, s3, l3)?,
                    )?),
                    (DType::F64, DType::F64, DType::F64) => CpuStorage::F64(self.fwd::<f64>(
                        contiguous(NAME, s1, l1)?,
                        contiguous(NAME, s2, l2)?,
                        contiguous(NAME, s3, l3)?,
                    )?),
                    (a, b, c) => {
                        candle_core::bail!("{NAME}: unsupported dtypes {a:?}, {b:?}, {c:?}")
                    }
                })
            },
        )?;
        let g = &self.g;
        Ok((out, Shape::from((g.n, self.o, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _gb: &Tensor,
        _z: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (dx, dw, dgb) = profile::time(
            || format!("conv-bn bwd {}", self.label()),
            || match x.dtype() {
                DType::F32 => self.bwd_typed::<f32>(x, w, &grad),
                DType::F64 => self.bwd_typed::<f64>(x, w, &grad),
                dt => candle_core::bail!("{NAME}: unsupported dtype {dt:?}"),
            },
        )?;
        Ok((dx, Some(dw), Some(dgb)))
    }
}

/// `batch_norm2d(bn, conv2d(x), train = true, relu)` as one node, when it applies: CPU, f32 or
/// f64, a conv without bias, dilation or groups, a norm with an affine part. `None` otherwise
/// (the caller runs the two ops). Updates the norm's running statistics as the norm node does.
pub(super) fn train(
    conv: &Conv2d,
    bn: &BatchNorm,
    x: &Tensor,
    relu: bool,
) -> Result<Option<Tensor>> {
    let cfg = conv.config();
    let applies = matches!(x.device(), Device::Cpu)
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && conv.weight().dtype() == x.dtype()
        && conv.bias().is_none()
        && (cfg.dilation, cfg.groups) == (1, 1);
    let (true, Some((gamma, beta))) = (applies, bn.weight_and_bias()) else {
        return Ok(None);
    };
    let w = conv.weight();
    let (g, o) = Geometry::new(x, w, cfg.stride, cfg.padding)?;
    if bn.running_mean().dim(0)? != o {
        candle_core::bail!(
            "batch-norm over {} channels got a conv of {o} output channels",
            bn.running_mean().dim(0)?
        );
    }
    let m = g.n * g.ho * g.wo;
    check_trainable(m, "a conv output of", (g.n, o, g.ho, g.wo))?;
    let saved = Arc::new(OnceLock::new());
    let node = ConvBn {
        g,
        o,
        relu,
        eps: bn.eps(),
        saved: Arc::clone(&saved),
    };
    let gb = Tensor::stack(&[gamma, beta], 0)?.to_dtype(x.dtype())?;
    let z = x.contiguous()?.apply_op3(&w.contiguous()?, &gb, node)?;
    let Some(s) = saved.get() else {
        candle_core::bail!("{NAME}: the forward left no statistics");
    };
    update_running(bn, &s.affine.mean, &s.var, m)?;
    Ok(Some(z))
}

/// `batch_norm2d(bn, conv(x), train, relu)` for a candle-nn `Conv2d` without bias. In
/// inference mode on the CPU the norm is folded into the conv (weights scaled by γ/σ, bias
/// β − μγ/σ, from the running statistics), so the pair costs one pass over the output instead
/// of two; it equals the unfolded pair up to float rounding. In training mode, or for layers
/// the fold does not cover, it is the two ops.
pub fn conv2d_batch_norm(
    conv: &candle_nn::Conv2d,
    bn: &BatchNorm,
    x: &Tensor,
    train: bool,
    relu: bool,
) -> Result<Tensor> {
    let cfg = conv.config();
    let foldable = !train
        && matches!(x.device(), Device::Cpu)
        && conv.bias().is_none()
        && (cfg.dilation, cfg.groups) == (1, 1);
    if let (true, Some((gamma, beta))) = (foldable, bn.weight_and_bias()) {
        let o = conv.weight().dim(0)?;
        let scale = (gamma / (bn.running_var() + bn.eps())?.sqrt()?)?;
        let w = conv
            .weight()
            .broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?
            .detach();
        let b = (beta - (bn.running_mean() * &scale)?)?.detach();
        return if relu {
            crate::conv::conv2d_relu(x, &w, Some(&b), cfg.stride, cfg.padding)
        } else {
            crate::conv::conv2d(x, &w, Some(&b), cfg.stride, cfg.padding)
        };
    }
    if train && let Some(z) = self::train(conv, bn, x, relu)? {
        return Ok(z);
    }
    crate::norm::batch_norm2d(bn, &crate::conv::conv2d_layer(conv, x)?, train, relu)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::norm::batch_norm2d;
    use crate::testutil::{
        assert_affine_grads_match, max_diff, random_in, twin_layers, weighted_grads,
    };
    use candle_core::Var;
    use candle_nn::VarBuilder;
    use candle_nn::VarMap;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The conv + norm (+ ReLU) pair equals the two ops: folded into the conv in inference
    /// mode; in training mode one node (`conv_bn`) whose output, running statistics and
    /// gradients of x, the kernel, γ and β equal those of the conv node then the norm node.
    #[test]
    fn conv_norm_pair_matches_the_two_ops() {
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let cfg = candle_nn::Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let conv = candle_nn::conv2d_no_bias(3, 5, 3, cfg, vb).unwrap();
        let x = Var::from_tensor(&random_in(&[2, 3, 9, 8], &mut rng, -1.0, 1.0)).unwrap();
        for (train, relu) in [(false, false), (false, true), (true, false), (true, true)] {
            let ctx = format!("train {train} relu {relu}");
            let [(vm_a, bn_a), (vm_b, bn_b)] = twin_layers(5, &mut rng);
            let ours = conv2d_batch_norm(&conv, &bn_a, &x, train, relu).unwrap();
            let y = crate::conv::conv2d_layer(&conv, &x).unwrap();
            let theirs = batch_norm2d(&bn_b, &y, train, relu).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-12, "{ctx}");
            for (a, b) in [
                (bn_a.running_mean(), bn_b.running_mean()),
                (bn_a.running_var(), bn_b.running_var()),
            ] {
                assert!(max_diff(a, b) < 1e-12, "{ctx}: running statistics");
            }
            if !train {
                continue;
            }
            let r = random_in(ours.dims(), &mut rng, -1.0, 1.0);
            let (ga, gb) = (weighted_grads(&ours, &r), weighted_grads(&theirs, &r));
            for (name, t) in [("x", x.as_tensor()), ("kernel", conv.weight())] {
                let d = max_diff(ga.get(t).unwrap(), gb.get(t).unwrap());
                assert!(d < 1e-10, "{ctx}: ∂{name} off by {d}");
            }
            assert_affine_grads_match(&vm_a, &vm_b, &ga, &gb, &ctx);
        }
    }
}
