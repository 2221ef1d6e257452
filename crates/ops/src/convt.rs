//! 2-D transposed convolution on the CPU, built on the convolution kernels of module `conv`.
//!
//! A transposed convolution of `x` (n, c_in, h, w) with `w` (c_in, c_out, kh, kw) is exactly the
//! input gradient of the convolution whose kernel is `w` read as (o = c_in, c = c_out, kh, kw),
//! taken at the output gradient `x`: with that conv's input (n, c_out, ho, wo), where
//! `ho = (h − 1)·stride − 2·padding + kh`, its output is (n, c_in, h, w). So
//! - the forward is the col2im half of the conv's backward (`Wᵀ·∂Y` scattered back, blocked and
//!   parallel over images), without its kernel gradient and without any conv input;
//! - the gradient of `x` is that conv's forward applied to the output gradient;
//! - the gradient of `w` is that conv's kernel gradient with the output gradient as the conv's
//!   input and `x` as its output gradient, summed per thread and then in thread order, so a
//!   result does not depend on scheduling;
//! - when both are needed they come from one pass that builds each block's column matrix of the
//!   output gradient once ([`crate::conv::kernel`]'s `forward_and_kernel_grad`): two passes built it
//!   twice.
//!
//! Candle 0.11's `conv_transpose2d` is a single-threaded loop on the CPU, and its backward runs
//! through Candle's conv (a dilated one for the kernel gradient). On CUDA and Metal this op is
//! Candle's.

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Storage, Tensor};

use crate::conv::kernel::{Needs, Route, backward, forward, forward_and_kernel_grad};
use crate::conv::plan::{Epilogue, Geometry};
use crate::gemm::Float;
use crate::profile;
use crate::storage::contiguous;
use crate::storage::float_kernel;

/// The op's name in errors.
const NAME: &str = "fkd-conv-transpose2d";

/// The geometry of the convolution whose input gradient is the transposed convolution of `x`
/// (n, c_in, h, w) with `weight` (c_in, c_out, kh, kw), and its output channels (c_in).
pub(super) fn geometry(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<(Geometry, usize)> {
    let (n, ci, h, w) = x.dims4()?;
    let (o, c, kh, kw) = weight.dims4()?;
    if n == 0 {
        candle_core::bail!("conv_transpose2d: the batch {:?} is empty", x.dims());
    }
    if ci != o {
        candle_core::bail!(
            "conv_transpose2d: the input has {ci} channels but the kernel {:?} expects {o}",
            weight.dims()
        );
    }
    if [ci, h, w, c, kh, kw].contains(&0) {
        candle_core::bail!(
            "conv_transpose2d: empty input {:?} or kernel {:?}",
            x.dims(),
            weight.dims()
        );
    }
    if stride == 0 {
        candle_core::bail!("conv_transpose2d: the stride must be at least 1");
    }
    let out = |len: usize, k: usize| {
        ((len - 1) * stride + k)
            .checked_sub(2 * padding)
            .filter(|&v| v > 0)
    };
    let (Some(ho), Some(wo)) = (out(h, kh), out(w, kw)) else {
        candle_core::bail!(
            "conv_transpose2d: a {kh}×{kw} kernel (stride {stride}, padding {padding}) on a {h}×{w} input leaves no output"
        );
    };
    // The conv maps (ho, wo) back to exactly (h, w): ho + 2·padding − kh = (h − 1)·stride.
    let g = Geometry {
        n,
        c,
        h: ho,
        w: wo,
        kh,
        kw,
        stride,
        padding,
        ho: h,
        wo: w,
    };
    Ok((g, o))
}

/// `cin×h×w → cout, kh×kw/stride` of the transposed conv whose conv is `g`, for the op
/// profile.
fn label(g: &Geometry, o: usize) -> String {
    format!(
        "{o}×{}×{} → {}, {}×{}/{}",
        g.ho, g.wo, g.c, g.kh, g.kw, g.stride
    )
}

/// The transposed conv's forward: `x` (n, o, ho, wo of the conv) → (n, c, h, w of the conv).
fn transposed<T: Float>(x: &[T], w: &[T], g: &Geometry, o: usize) -> Vec<T> {
    let needs = Needs { x: true, w: false };
    let grads = profile::time(
        || format!("convT fwd {}", label(g, o)),
        || backward(&[], w, x, Route::Plain, g, o, false, needs),
    );
    grads.x.unwrap_or_default()
}

/// The autograd node of a CPU transposed convolution, `(x, w) → y`.
struct ConvTranspose {
    /// The convolution whose input gradient this is (see the module docs).
    g: Geometry,
    /// Its output channels: the transposed conv's input channels.
    o: usize,
}

impl ConvTranspose {
    fn bwd_typed<T: Float>(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (g, o) = (&self.g, self.o);
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(gs)) = (&*xs, &*ws, &*gs) else {
            candle_core::bail!("{NAME}: the backward needs CPU tensors");
        };
        let (xd, wd, gd) = (
            contiguous::<T>(NAME, xs, xl)?,
            contiguous::<T>(NAME, ws, wl)?,
            contiguous::<T>(NAME, gs, gl)?,
        );
        let cpu = Device::Cpu;
        if x.track_op() && w.track_op() {
            let both = profile::time(
                || format!("convT bwd ∂x+∂w {}", label(g, o)),
                || forward_and_kernel_grad(gd, wd, xd, g, o),
            );
            if let Some((dx, dw)) = both {
                return Ok((
                    Some(Tensor::from_vec(dx, (g.n, o, g.ho, g.wo), &cpu)?),
                    Some(Tensor::from_vec(dw, (o, g.c, g.kh, g.kw), &cpu)?),
                ));
            }
        }
        let dx = if x.track_op() {
            let (dx, _) = profile::time(
                || format!("convT bwd ∂x {}", label(g, o)),
                || forward(gd, wd, None, g, o, Epilogue::None),
            );
            Some(Tensor::from_vec(dx, (g.n, o, g.ho, g.wo), &cpu)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            let needs = Needs { x: false, w: true };
            let grads = profile::time(
                || format!("convT bwd ∂w {}", label(g, o)),
                || backward(gd, &[], xd, Route::Plain, g, o, false, needs),
            );
            let Some(dw) = grads.w else {
                candle_core::bail!("{NAME}: the backward gave no kernel gradient");
            };
            Some(Tensor::from_vec(dw, (o, g.c, g.kh, g.kw), &cpu)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

impl CustomOp2 for ConvTranspose {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, o) = (&self.g, self.o);
        let out = float_kernel!(NAME, |x, w| transposed(x, w, g, o), s1, l1, s2, l2);
        Ok((out, Shape::from((g.n, g.c, g.h, g.w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(x, w, &grad),
            DType::F64 => self.bwd_typed::<f64>(x, w, &grad),
            dt => candle_core::bail!("{NAME}: unsupported dtype {dt:?}"),
        }
    }
}

/// 2-D transposed convolution of `x` (n, c_in, h, w) with `weight` (c_in, c_out, kh, kw), as
/// PyTorch's `conv_transpose2d` without output padding, dilation or groups: output
/// (n, c_out, (h − 1)·stride − 2·padding + kh, (w − 1)·stride − 2·padding + kw). It is the
/// input gradient of `conv2d(·, weight, stride, padding)`, and the adjoint of that conv.
///
/// On the CPU (f32, f64) it runs on the blocked col2im kernel of [`crate::conv::conv2d`]'s backward,
/// with a backward of a conv forward (for `x`) and a conv kernel gradient (for `weight`)
/// (module docs); elsewhere it is Candle's `conv_transpose2d` and its backward. An empty batch,
/// mismatched channels or an empty output are errors.
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (g, o) = geometry(x, weight, stride, padding)?;
    let fused = matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64);
    if !fused {
        if let Some(y) = crate::cuda::cudnn::conv(x, weight, g, o, true)? {
            return Ok(y);
        }
        return x.conv_transpose2d(weight, padding, 0, stride, 1);
    }
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    x.apply_op2(&weight, ConvTranspose { g, o })
}

/// [`conv_transpose2d`] with the weights, stride and padding of a candle-nn `ConvTranspose2d`
/// layer, plus its bias if it has one. Layers with output padding or dilation run through
/// Candle's own transposed conv.
pub fn conv_transpose2d_layer(layer: &candle_nn::ConvTranspose2d, x: &Tensor) -> Result<Tensor> {
    let cfg = layer.config();
    if cfg.output_padding != 0 || cfg.dilation != 1 {
        return candle_core::Module::forward(layer, x);
    }
    let y = conv_transpose2d(x, layer.weight(), cfg.stride, cfg.padding)?;
    match layer.bias() {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dims1()?, 1, 1))?),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testutil::{max_diff, on_threads, random, weighted_grads};
    use candle_core::Var;
    use candle_nn::ConvTranspose2dConfig;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Forward and both gradients of ours and Candle's transposed conv of (n, ci, h, w) by
    /// (ci, co, k, k), on 1 to 3 threads; `ctx` names the case in failures.
    #[allow(clippy::too_many_arguments)]
    fn check_against_candle(
        rng: &mut ChaCha8Rng,
        (n, ci, co): (usize, usize, usize),
        (h, w): (usize, usize),
        k: usize,
        stride: usize,
        padding: usize,
    ) {
        let x = Var::from_tensor(&random(&[n, ci, h, w], rng)).unwrap();
        let wt = Var::from_tensor(&random(&[ci, co, k, k], rng)).unwrap();
        let theirs = x.conv_transpose2d(&wt, padding, 0, stride, 1).unwrap();
        let r = random(theirs.dims(), rng);
        let gb = weighted_grads(&theirs, &r);
        for threads in 1..=3 {
            let ctx =
                format!("n{n} ci{ci} co{co} {h}×{w} k{k} s{stride} p{padding}, {threads} threads");
            let (ours, ga) = on_threads(threads, || {
                let y = conv_transpose2d(&x, &wt, stride, padding).unwrap();
                let ga = weighted_grads(&y, &r);
                (y, ga)
            });
            assert_eq!(ours.dims(), theirs.dims(), "{ctx}");
            let d = max_diff(&ours, &theirs);
            assert!(d < 1e-10, "{ctx}: y off by {d}");
            for (name, v) in [("x", &x), ("w", &wt)] {
                let d = max_diff(ga.get(v).unwrap(), gb.get(v).unwrap());
                assert!(d < 1e-9, "{ctx}: ∂{name} off by {d}");
            }
        }
    }

    /// Random shapes (channels 1 to 16, odd and even sizes, batch 1 to 3), kernels 1 to 5,
    /// strides 1 and 2, paddings 0 to 2: forward and both gradients equal Candle's.
    #[test]
    fn matches_candle_forward_and_backward() {
        let mut rng = ChaCha8Rng::seed_from_u64(41);
        let mut compared = 0;
        for case in 0..30 {
            let n = [1, 3, 2][case % 3];
            let ci = rng.random_range(1..=16);
            let co = rng.random_range(1..=16);
            let k = [4, 1, 2, 3, 5][case % 5];
            let stride = 1 + case % 2;
            let padding = rng.random_range(0..=2);
            let h = rng.random_range(1..8);
            let w = rng.random_range(1..8);
            if (h - 1) * stride + k <= 2 * padding || (w - 1) * stride + k <= 2 * padding {
                continue;
            }
            check_against_candle(&mut rng, (n, ci, co), (h, w), k, stride, padding);
            compared += 1;
        }
        assert!(compared >= 20, "only {compared} cases compared");
    }

    /// The Part 4 nets' 4×4/2 pad-1 upsampling, batches cut into row blocks that share output
    /// rows (large maps) and into multi-image blocks (small maps), and a Winograd-sized 3×3
    /// stride-1 case, whose forward and input gradient run through Winograd.
    #[test]
    fn blocked_and_winograd_cases_match_candle() {
        let mut rng = ChaCha8Rng::seed_from_u64(43);
        for (nc, hw, k, stride, padding) in [
            ((3, 8, 6), (5, 7), 4, 2, 1),
            ((1, 16, 16), (4, 4), 4, 2, 1),
            ((2, 5, 16), (19, 15), 4, 2, 1),
            ((7, 3, 2), (3, 2), 4, 2, 1),
            ((2, 16, 17), (16, 17), 3, 1, 1),
            ((1, 18, 16), (16, 16), 3, 1, 0),
        ] {
            check_against_candle(&mut rng, nc, hw, k, stride, padding);
        }
    }

    /// Central finite differences on every entry of x and w of a tiny 4×4/2 pad-1 case.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(47);
        let (n, ci, co, k, h, w) = (2, 2, 3, 4, 3, 2);
        let xs = random(&[n, ci, h, w], &mut rng);
        let ws = random(&[ci, co, k, k], &mut rng);
        let r = random(&[n, co, 2 * h, 2 * w], &mut rng);
        let loss = |x: &Tensor, wt: &Tensor| -> f64 {
            let y = conv_transpose2d(x, wt, 2, 1).unwrap();
            (y * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let (x, wt) = (
            Var::from_tensor(&xs).unwrap(),
            Var::from_tensor(&ws).unwrap(),
        );
        let grads = weighted_grads(&conv_transpose2d(&x, &wt, 2, 1).unwrap(), &r);
        let eps = 1e-5;
        for which in 0..2 {
            let base = [&xs, &ws][which];
            let analytic = grads.get([&x, &wt][which]).unwrap();
            let flat: Vec<f64> = analytic.flatten_all().unwrap().to_vec1().unwrap();
            let values: Vec<f64> = base.flatten_all().unwrap().to_vec1().unwrap();
            for i in 0..values.len() {
                let bump = |d: f64| {
                    let mut v = values.clone();
                    v[i] += d;
                    let t = Tensor::from_vec(v, base.dims(), &Device::Cpu).unwrap();
                    if which == 0 {
                        loss(&t, &ws)
                    } else {
                        loss(&xs, &t)
                    }
                };
                let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps);
                assert!(
                    (numeric - flat[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
                    "arg {which} index {i}: numeric {numeric} vs {}",
                    flat[i]
                );
            }
        }
    }

    /// On a given thread count, two runs give bit-identical results (per-thread sums are added
    /// in thread order).
    #[test]
    fn deterministic_for_a_thread_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(53);
        let x = Var::from_tensor(&random(&[5, 6, 6, 7], &mut rng)).unwrap();
        let wt = Var::from_tensor(&random(&[6, 4, 4, 4], &mut rng)).unwrap();
        let r = random(&[5, 4, 12, 14], &mut rng);
        let run = || {
            on_threads(2, || {
                let ga = weighted_grads(&conv_transpose2d(&x, &wt, 2, 1).unwrap(), &r);
                let get = |v: &Var| -> Vec<f64> {
                    ga.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap()
                };
                (get(&x), get(&wt))
            })
        };
        assert_eq!(run(), run());
    }

    /// The layer wrapper adds the bias and equals candle-nn's layer, forward and backward (f32);
    /// a layer with output padding runs through Candle's.
    #[test]
    fn layer_matches_candle_nn() {
        let mut rng = ChaCha8Rng::seed_from_u64(59);
        let f32v = |shape: &[usize], rng: &mut ChaCha8Rng| {
            Var::from_tensor(&random(shape, rng).to_dtype(DType::F32).unwrap()).unwrap()
        };
        let (x, w, b) = (
            f32v(&[2, 8, 5, 6], &mut rng),
            f32v(&[8, 6, 4, 4], &mut rng),
            f32v(&[6], &mut rng),
        );
        for output_padding in [0, 1] {
            let cfg = ConvTranspose2dConfig {
                padding: 1,
                output_padding,
                stride: 2,
                dilation: 1,
            };
            let layer = candle_nn::ConvTranspose2d::new(
                w.as_tensor().clone(),
                Some(b.as_tensor().clone()),
                cfg,
            );
            let ours = conv_transpose2d_layer(&layer, &x).unwrap();
            let theirs = candle_core::Module::forward(&layer, &x).unwrap();
            let r = ours.ones_like().unwrap();
            let (ga, gb) = (weighted_grads(&ours, &r), weighted_grads(&theirs, &r));
            let diff = |a: &Tensor, b: &Tensor| {
                let a = a.to_dtype(DType::F64).unwrap();
                max_diff(&a, &b.to_dtype(DType::F64).unwrap())
            };
            assert!(
                diff(&ours, &theirs) < 1e-5,
                "output padding {output_padding}"
            );
            for v in [&x, &w, &b] {
                let d = diff(ga.get(v).unwrap(), gb.get(v).unwrap());
                assert!(d < 1e-4, "output padding {output_padding}: off by {d}");
            }
        }
    }

    /// A plain input tensor gets no gradient; only the kernel does.
    #[test]
    fn no_input_gradient_for_plain_tensors() {
        let mut rng = ChaCha8Rng::seed_from_u64(61);
        let x = random(&[2, 3, 4, 4], &mut rng);
        let w = Var::from_tensor(&random(&[3, 2, 4, 4], &mut rng)).unwrap();
        let y = conv_transpose2d(&x, &w, 2, 1).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        assert_eq!(grads.get(&w).unwrap().dims(), &[3, 2, 4, 4]);
    }

    #[test]
    fn rejects_empty_batches_mismatched_channels_and_empty_outputs() {
        let cpu = Device::Cpu;
        let w = Tensor::zeros((2, 3, 4, 4), DType::F32, &cpu).unwrap();
        let empty = Tensor::zeros((0, 2, 4, 4), DType::F32, &cpu).unwrap();
        let err = conv_transpose2d(&empty, &w, 2, 1).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &cpu).unwrap();
        let err = conv_transpose2d(&x, &w, 2, 1).unwrap_err().to_string();
        assert!(err.contains("3 channels"), "{err}");
        let x = Tensor::zeros((1, 2, 1, 1), DType::F32, &cpu).unwrap();
        let w = Tensor::zeros((2, 3, 1, 1), DType::F32, &cpu).unwrap();
        for padding in [1, 2] {
            let err = conv_transpose2d(&x, &w, 1, padding)
                .unwrap_err()
                .to_string();
            assert!(err.contains("no output"), "{err}");
        }
        let err = conv_transpose2d(&x, &w, 0, 0).unwrap_err().to_string();
        assert!(err.contains("stride"), "{err}");
    }
}
