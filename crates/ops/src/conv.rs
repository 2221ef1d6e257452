//! 2-D convolution on the CPU as blocked im2col + matrix products (see the parent module).
//!
//! The batch's output positions are cut into blocks whose column matrix (c·kh·kw rows) fits in
//! a core's L2 cache: a few output rows of one image for large maps, a few whole images for
//! small ones. Each thread of the rayon pool takes a contiguous run of images and, block by
//! block, builds the columns in a private scratch buffer, multiplies them by the weights with
//! a single-threaded `gemm` call, and writes the block's outputs straight into the NCHW result,
//! adding the bias and applying the optional ReLU on the way. The backward walks the same
//! blocks: it gathers the (ReLU-masked) output gradient of the block, rebuilds the block's
//! columns while they are cache-hot, accumulates `∂W += ∂Y·colsᵀ` and `∂b` in per-thread sums,
//! and, when the input needs a gradient, scatters `Wᵀ·∂Y` back onto the thread's own images
//! (col2im). Nothing the size of the whole column matrix is ever allocated, and every thread
//! writes only its own images, so no locks are needed. The per-thread sums are added in thread
//! order, so a result does not depend on scheduling.

use candle_core::backend::BackendStorage as _;
use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Storage, Tensor,
};
use std::sync::OnceLock;

use crate::gemm::Float;
use crate::profile;
use crate::storage::contiguous;

mod im2col;
pub(crate) mod kernel;
pub(crate) mod plan;
pub(crate) mod winograd;

use kernel::{Needs, Route, backward, forward};
use plan::{Epilogue, Geometry};

/// The autograd node of a CPU convolution: `(x, w[, bias]) → y`; as a `CustomOp2` without a
/// bias, as a `CustomOp3` with one.
struct Conv {
    g: Geometry,
    o: usize,
    epilogue: Epilogue,
    /// A pooled node's argmax record, written by the forward for the backward (1 byte per
    /// pooled output, instead of keeping the unpooled map).
    argmax: OnceLock<Vec<u8>>,
}

impl Conv {
    /// The forward on CPU storages: x, w and the optional bias, all f32 or all f64.
    fn cpu(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (x.0.dtype(), w.0.dtype(), bias.map(|b| b.0.dtype())) {
            (DType::F32, DType::F32, None | Some(DType::F32)) => {
                CpuStorage::F32(self.fwd(x, w, bias)?)
            }
            (DType::F64, DType::F64, None | Some(DType::F64)) => {
                CpuStorage::F64(self.fwd(x, w, bias)?)
            }
            (a, b, c) => candle_core::bail!("fkd-conv2d: unsupported dtypes {a:?}, {b:?}, {c:?}"),
        };
        Ok((out, self.shape()))
    }

    fn fwd<T: Float>(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<Vec<T>> {
        let name = "fkd-conv2d";
        let bias = bias.map(|(s, l)| contiguous::<T>(name, s, l)).transpose()?;
        let (x, w) = (contiguous(name, x.0, x.1)?, contiguous(name, w.0, w.1)?);
        let (y, argmax) = profile::time(
            || format!("conv fwd {}", self.g.label(self.o, self.epilogue)),
            || forward(x, w, bias, &self.g, self.o, self.epilogue),
        );
        if self.epilogue == Epilogue::ReluPool && self.argmax.set(argmax).is_err() {
            candle_core::bail!("{name}: a node's forward ran twice");
        }
        Ok(y)
    }

    fn shape(&self) -> Shape {
        let g = &self.g;
        if self.epilogue == Epilogue::ReluPool {
            Shape::from((g.n, self.o, g.ho / 2, g.wo / 2))
        } else {
            Shape::from((g.n, self.o, g.ho, g.wo))
        }
    }

    /// The gradients of x, w and bias, read straight from the tensors' CPU storage.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: bool,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let needs_x = x.track_op();
        match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(x, w, bias, y, &grad, needs_x),
            DType::F64 => self.bwd_typed::<f64>(x, w, bias, y, &grad, needs_x),
            dt => candle_core::bail!("fkd-conv2d: unsupported dtype {dt:?}"),
        }
    }

    fn bwd_typed<T: Float>(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: bool,
        y: &Tensor,
        grad: &Tensor,
        needs_x: bool,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let (g, o, name) = (&self.g, self.o, "fkd-conv2d");
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (ys, yl) = y.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(gs), Storage::Cpu(ys)) =
            (&*xs, &*ws, &*gs, &*ys)
        else {
            candle_core::bail!("{name}: the backward needs CPU tensors");
        };
        let route = match self.epilogue {
            Epilogue::None => Route::Plain,
            Epilogue::Relu => Route::Relu(contiguous::<T>(name, ys, yl)?),
            Epilogue::ReluPool => match self.argmax.get() {
                Some(args) => Route::Pool(args),
                None => candle_core::bail!("{name}: the backward ran before the forward"),
            },
        };
        let (xd, wd, gd) = (
            contiguous::<T>(name, xs, xl)?,
            contiguous::<T>(name, ws, wl)?,
            contiguous::<T>(name, gs, gl)?,
        );
        let needs = Needs {
            x: needs_x,
            w: true,
        };
        let grads = profile::time(
            || {
                let dx = if needs_x { ", ∂x" } else { "" };
                format!("conv bwd {}{dx}", g.label(o, self.epilogue))
            },
            || backward(xd, wd, gd, route, g, o, bias, needs),
        );
        grads.into_tensors(g, o, name)
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "fkd-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = Conv::bwd(self, x, w, false, y, grad)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "fkd-conv2d"
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
        self.cpu((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _bias: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = Conv::bwd(self, x, w, true, y, grad)?;
        Ok((dx, Some(dw), db))
    }
}

/// 2-D convolution (cross-correlation, as PyTorch's and Candle's `conv2d`) of `x` (n, c, h, w)
/// with `weight` (o, c, kh, kw), zero `padding` on every side, `stride` in both directions,
/// plus an optional `bias` (o). Output (n, o, ho, wo) with `ho = (h + 2·padding − kh)/stride + 1`.
///
/// On the CPU (f32, f64) it runs as blocked im2col + `gemm` with a backward of the same kind
/// (module docs); elsewhere it is Candle's `conv2d` and its backward.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_impl(x, weight, bias, stride, padding, Epilogue::None)
}

/// `relu(conv2d(x, weight, bias, stride, padding))` in one node: on the CPU the ReLU is applied
/// as each block's products are written out and its backward as each block's gradient is
/// gathered, so it costs no pass of its own (Candle's ReLU backward takes five). The gradient
/// at exactly 0 is 0, as PyTorch's.
pub fn conv2d_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_impl(x, weight, bias, stride, padding, Epilogue::Relu)
}

/// `max_pool2d(relu(conv2d(x, weight, bias, stride, padding)), 2, 2, 0)` in one node, equal to
/// the composition forward and backward. On the CPU the unpooled map is never stored: each
/// block is pooled while it is in cache and the node keeps one byte per pooled output (which
/// pixel of the window won) for the backward.
pub fn conv2d_relu_pool(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_impl(x, weight, bias, stride, padding, Epilogue::ReluPool)
}

fn conv2d_impl(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    epilogue: Epilogue,
) -> Result<Tensor> {
    let (g, o) = Geometry::new(x, weight, stride, padding)?;
    if epilogue == Epilogue::ReluPool && (g.ho < 2 || g.wo < 2) {
        candle_core::bail!(
            "conv2d: a 2×2 pool does not fit the {}×{} output of the conv",
            g.ho,
            g.wo
        );
    }
    let fused = matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64);
    if !fused {
        let y = crate::cuda::cudnn::conv(x, weight, g, o, false)?;
        let y = match y {
            Some(y) => y,
            None => x.conv2d(weight, padding, stride, 1, 1)?,
        };
        let y = match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, o, 1, 1))?)?,
            None => y,
        };
        return match epilogue {
            Epilogue::None => Ok(y),
            Epilogue::Relu => crate::relu::relu(&y),
            Epilogue::ReluPool => crate::pool::max_pool2d(&crate::relu::relu(&y)?, 2, 2, 0),
        };
    }
    if let Some(b) = bias
        && b.dims() != [o]
    {
        candle_core::bail!(
            "conv2d: the bias {:?} does not match {o} output channels",
            b.dims()
        );
    }
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    let op = Conv {
        g,
        o,
        epilogue,
        argmax: OnceLock::new(),
    };
    match bias {
        Some(b) => x.apply_op3(&weight, &b.contiguous()?, op),
        None => x.apply_op2(&weight, op),
    }
}

/// [`conv2d`] with the weights, bias, stride and padding of a candle-nn `Conv2d` layer. Layers
/// with dilation or groups other than 1 run through Candle's own conv.
pub fn conv2d_layer(layer: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    layer_impl(layer, x, Epilogue::None)
}

/// [`conv2d_relu`] with a candle-nn `Conv2d` layer's parameters (see [`conv2d_layer`]).
pub fn conv2d_relu_layer(layer: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    layer_impl(layer, x, Epilogue::Relu)
}

/// [`conv2d_relu_pool`] with a candle-nn `Conv2d` layer's parameters (see [`conv2d_layer`]).
pub fn conv2d_relu_pool_layer(layer: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    layer_impl(layer, x, Epilogue::ReluPool)
}

fn layer_impl(layer: &candle_nn::Conv2d, x: &Tensor, epilogue: Epilogue) -> Result<Tensor> {
    let cfg = layer.config();
    if cfg.dilation != 1 || cfg.groups != 1 {
        let y = candle_core::Module::forward(layer, x)?;
        return match epilogue {
            Epilogue::None => Ok(y),
            Epilogue::Relu => y.relu(),
            Epilogue::ReluPool => crate::pool::max_pool2d(&y.relu()?, 2, 2, 0),
        };
    }
    conv2d_impl(
        x,
        layer.weight(),
        layer.bias(),
        cfg.stride,
        cfg.padding,
        epilogue,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::conv::kernel::*;
    use crate::conv::plan::*;
    use crate::testutil::{max_diff, on_threads, random, weighted_grads};
    use candle_core::Var;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random shapes, strides and paddings: forward and every gradient equal Candle's own conv.
    #[test]
    fn matches_candle_conv_forward_and_backward() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut compared = 0;
        for case in 0..40 {
            let n = rng.random_range(1..4);
            let c = rng.random_range(1..5);
            let o = rng.random_range(1..6);
            let k = [1, 2, 3, 5, 7][case % 5];
            let stride = 1 + case % 3;
            let padding = rng.random_range(0..=k / 2);
            let h = rng.random_range(k..k + 9);
            let w = rng.random_range(k..k + 9);
            let x = Var::from_tensor(&random(&[n, c, h, w], &mut rng)).unwrap();
            let wt = Var::from_tensor(&random(&[o, c, k, k], &mut rng)).unwrap();
            let b = Var::from_tensor(&random(&[o], &mut rng)).unwrap();
            let ours = conv2d(&x, &wt, Some(&b), stride, padding).unwrap();
            let theirs = x
                .conv2d(&wt, padding, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, o, 1, 1)).unwrap())
                .unwrap();
            let ctx = format!("case {case}: n{n} c{c} o{o} k{k} s{stride} p{padding} {h}×{w}");
            assert!(max_diff(&ours, &theirs) < 1e-10, "{ctx}");
            let r = random(ours.dims(), &mut rng);
            let ga = weighted_grads(&ours, &r);
            // Candle 0.11's conv backward uses the height's output padding for the width too,
            // so it fails when the two leave different remainders after striding.
            let uneven = (h + 2 * padding - k) % stride != (w + 2 * padding - k) % stride;
            let gb = match (&theirs * &r).unwrap().sum_all().unwrap().backward() {
                Ok(gb) => gb,
                Err(e) if uneven => {
                    assert!(e.to_string().contains("shape mismatch"), "{ctx}: {e}");
                    continue;
                }
                Err(e) => panic!("{ctx}: {e}"),
            };
            compared += 1;
            for (name, v) in [("x", &x), ("w", &wt), ("b", &b)] {
                let (a, b) = (ga.get(v).unwrap(), gb.get(v).unwrap());
                assert!(max_diff(a, b) < 1e-9, "{ctx}: ∂{name} differs");
            }
        }
        assert!(compared >= 20, "only {compared} cases compared");
    }

    /// Central finite differences on a few entries of x, w and b, with a stride-2, padded conv
    /// and no bias (the other form of the bias column).
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (stride, padding, with_bias) in [(1, 1, true), (2, 1, false), (2, 3, true)] {
            let (n, c, o, k, h, w) = (2, 3, 4, 7 - 2 * usize::from(padding == 1), 9, 8);
            let xs = random(&[n, c, h, w], &mut rng);
            let ws = random(&[o, c, k, k], &mut rng);
            let bs = random(&[o], &mut rng);
            let r = random(
                &[
                    n,
                    o,
                    (h + 2 * padding - k) / stride + 1,
                    (w + 2 * padding - k) / stride + 1,
                ],
                &mut rng,
            );
            let loss = |x: &Tensor, wt: &Tensor, b: &Tensor| -> f64 {
                let y = conv2d(x, wt, with_bias.then_some(b), stride, padding).unwrap();
                (y * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let (x, wt, b) = (
                Var::from_tensor(&xs).unwrap(),
                Var::from_tensor(&ws).unwrap(),
                Var::from_tensor(&bs).unwrap(),
            );
            let y = conv2d(&x, &wt, with_bias.then_some(b.as_tensor()), stride, padding).unwrap();
            let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let eps = 1e-5;
            for which in 0..3 {
                if which == 2 && !with_bias {
                    assert!(grads.get(&b).is_none());
                    continue;
                }
                let base = [&xs, &ws, &bs][which];
                let analytic = grads.get([&x, &wt, &b][which]).unwrap();
                let flat: Vec<f64> = analytic.flatten_all().unwrap().to_vec1().unwrap();
                let values: Vec<f64> = base.flatten_all().unwrap().to_vec1().unwrap();
                for _ in 0..6 {
                    let i = rng.random_range(0..values.len());
                    let bump = |d: f64| {
                        let mut v = values.clone();
                        v[i] += d;
                        let t = Tensor::from_vec(v, base.dims(), &Device::Cpu).unwrap();
                        match which {
                            0 => loss(&t, &ws, &bs),
                            1 => loss(&xs, &t, &bs),
                            _ => loss(&xs, &ws, &t),
                        }
                    };
                    let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps);
                    assert!(
                        (numeric - flat[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
                        "s{stride} p{padding} arg {which} index {i}: numeric {numeric} vs {}",
                        flat[i]
                    );
                }
            }
        }
    }

    /// The fused ReLU equals conv then ReLU, forward and backward (random data: no output is
    /// exactly 0, where Candle's ReLU backward would pass the gradient and ours does not).
    #[test]
    fn fused_relu_matches_conv_then_relu() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for (stride, padding, n) in [(1, 2, 3), (2, 1, 10)] {
            let x = Var::from_tensor(&random(&[n, 2, 11, 9], &mut rng)).unwrap();
            let w = Var::from_tensor(&random(&[5, 2, 5, 5], &mut rng)).unwrap();
            let b = Var::from_tensor(&random(&[5], &mut rng)).unwrap();
            let ours = conv2d_relu(&x, &w, Some(&b), stride, padding).unwrap();
            let theirs = conv2d(&x, &w, Some(&b), stride, padding)
                .unwrap()
                .relu()
                .unwrap();
            assert_eq!(max_diff(&ours, &theirs), 0.0);
            let r = random(ours.dims(), &mut rng);
            let ga = weighted_grads(&ours, &r);
            let gb = weighted_grads(&theirs, &r);
            for v in [&x, &w, &b] {
                assert!(max_diff(ga.get(v).unwrap(), gb.get(v).unwrap()) < 1e-10);
            }
        }
    }

    /// Batches cut into row blocks (large maps, blocks that share input rows in col2im) and
    /// into multi-image blocks (small maps), on 1 to 3 threads, give Candle's results.
    #[test]
    fn blocked_batches_match_candle_on_any_thread_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for (n, c, h, k, stride, padding) in [
            (3, 2, 64, 7, 1, 3),
            (7, 3, 6, 3, 2, 1),
            (1, 1, 70, 5, 1, 2),
            (2, 40, 20, 3, 1, 1),
            // Strided row blocks (the polyphase split of only the rows a block reads), odd
            // and even heights.
            (2, 3, 141, 7, 2, 3),
            (1, 5, 96, 4, 2, 1),
        ] {
            let w_in = h + 2 * stride;
            let x = Var::from_tensor(&random(&[n, c, h, w_in], &mut rng)).unwrap();
            let wt = Var::from_tensor(&random(&[3, c, k, k], &mut rng)).unwrap();
            let b = Var::from_tensor(&random(&[3], &mut rng)).unwrap();
            let theirs = x
                .conv2d(&wt, padding, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 3, 1, 1)).unwrap())
                .unwrap();
            let r = random(theirs.dims(), &mut rng);
            let gb = weighted_grads(&theirs, &r);
            let (g, _) = Geometry::new(&x, &wt, stride, padding).unwrap();
            for threads in 1..=3 {
                let blocks: usize = Plan::new(&g, threads, Rows::Any, Sizing::Im2col)
                    .groups
                    .iter()
                    .map(|grp| grp.blocks.len())
                    .sum();
                let ctx = format!(
                    "n{n} c{c} {h}×{w_in} k{k} s{stride}, {threads} threads, {blocks} blocks"
                );
                let (ours, ga) = on_threads(threads, || {
                    let y = conv2d(&x, &wt, Some(&b), stride, padding).unwrap();
                    let ga = weighted_grads(&y, &r);
                    (y, ga)
                });
                assert!(max_diff(&ours, &theirs) < 1e-10, "{ctx}");
                for v in [&x, &wt, &b] {
                    assert!(
                        max_diff(ga.get(v).unwrap(), gb.get(v).unwrap()) < 1e-9,
                        "{ctx}"
                    );
                }
            }
        }
    }

    /// The pooled node equals conv, ReLU, then 2×2 max-pool (fkd's own ops), forward and every
    /// gradient: odd and even sizes, row blocks and multi-image blocks, 1 to 3 threads, and
    /// inputs on a coarse grid, so that windows hold ties and all-zero ReLU outputs.
    #[test]
    fn fused_pool_matches_conv_relu_then_pool() {
        let mut rng = ChaCha8Rng::seed_from_u64(19);
        for (n, c, h, w, k, stride, padding) in [
            (3, 1, 61, 47, 7, 1, 3),
            (5, 4, 9, 11, 3, 1, 1),
            (2, 3, 10, 8, 3, 2, 1),
            // One image: its rows dealt to the threads, an odd height.
            (1, 2, 13, 9, 3, 1, 1),
            // Fewer units (two-image blocks) than 3 threads: whole images dealt.
            (4, 4, 9, 11, 3, 1, 1),
        ] {
            let grid = |t: Tensor| (t * 2.0).unwrap().round().unwrap() / 2.0;
            let x = Var::from_tensor(&grid(random(&[n, c, h, w], &mut rng)).unwrap()).unwrap();
            let wt = Var::from_tensor(&grid(random(&[4, c, k, k], &mut rng)).unwrap()).unwrap();
            let b = Var::from_tensor(&grid(random(&[4], &mut rng)).unwrap()).unwrap();
            let theirs = crate::pool::max_pool2d(
                &conv2d_relu(&x, &wt, Some(&b), stride, padding).unwrap(),
                2,
                2,
                0,
            )
            .unwrap();
            let r = random(theirs.dims(), &mut rng);
            let gb = weighted_grads(&theirs, &r);
            for threads in 1..=3 {
                let (ours, ga) = on_threads(threads, || {
                    let y = conv2d_relu_pool(&x, &wt, Some(&b), stride, padding).unwrap();
                    let ga = weighted_grads(&y, &r);
                    (y, ga)
                });
                let ctx = format!("n{n} c{c} {h}×{w} k{k} s{stride}, {threads} threads");
                assert_eq!(max_diff(&ours, &theirs), 0.0, "{ctx}");
                for v in [&x, &wt, &b] {
                    assert!(
                        max_diff(ga.get(v).unwrap(), gb.get(v).unwrap()) < 1e-10,
                        "{ctx}"
                    );
                }
            }
        }
        let x = Tensor::zeros((1, 1, 3, 1), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((2, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let err = conv2d_relu_pool(&x, &w, None, 1, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2×2 pool does not fit"), "{err}");
    }

    /// The forward's workers run at the CPU's widest vector level (`simd`): every level gives
    /// the baseline's bits, in f32 and f64, for the pooled, ReLU and plain epilogues (forward and
    /// every gradient), on the im2col and the Winograd paths, on 1 and 2 threads (and a single
    /// image's output channels dealt to them), with inputs on a coarse grid so that pooling
    /// windows tie.
    #[test]
    fn every_vector_level_gives_the_baseline_bits() {
        use crate::testutil::bits;
        let mut rng = ChaCha8Rng::seed_from_u64(37);
        for (dtype, (n, c, h, w, k, o)) in [
            (DType::F32, (3, 1, 31, 45, 7, 12)),
            (DType::F64, (2, 3, 12, 10, 5, 4)),
            (DType::F32, (2, 16, 18, 18, 3, 16)),
            (DType::F32, (1, 8, 4, 4, 3, 64)),
        ] {
            let grid = |t: Tensor| {
                let t = (t * 2.0).unwrap().round().unwrap() / 2.0;
                Var::from_tensor(&t.unwrap().to_dtype(dtype).unwrap()).unwrap()
            };
            let x = grid(random(&[n, c, h, w], &mut rng));
            let wt = grid(random(&[o, c, k, k], &mut rng));
            let b = grid(random(&[o], &mut rng));
            for threads in [1, 2] {
                let runs = crate::simd::at_each_level(|| {
                    on_threads(threads, || {
                        let ys = [
                            conv2d_relu_pool(&x, &wt, Some(&b), 1, k / 2).unwrap(),
                            conv2d_relu(&x, &wt, Some(&b), 1, k / 2).unwrap(),
                            conv2d(&x, &wt, Some(&b), 1, k / 2).unwrap(),
                        ];
                        let mut out = Vec::new();
                        for y in &ys {
                            let r = y.ones_like().unwrap().affine(0.5, 0.25).unwrap();
                            let g = weighted_grads(&y.sqr().unwrap(), &r);
                            out.push(bits(y));
                            for v in [&x, &wt, &b] {
                                out.push(bits(g.get(v).unwrap()));
                            }
                        }
                        out
                    })
                });
                for (level, got) in &runs[1..] {
                    assert!(
                        got == &runs[0].1,
                        "{level:?}, {dtype:?} c{c} k{k}, {threads} threads"
                    );
                }
            }
        }
    }

    /// 3×3 stride-1 convs with 16 or more channels and 256 or more output pixels per image, or
    /// 128 or more channels and 64 or more pixels, run through Winograd F(2×2, 3×3) (a 7×9
    /// output does not), the input gradient through a second one and the kernel gradient of a
    /// plain output gradient through its transpose: forward and every gradient equal Candle's
    /// conv (f64), with paddings 0 to 2, odd and even sizes, row blocks and multi-image blocks,
    /// the ReLU and the pooled epilogue, on 1 to 3 threads (so also a single image's rows or
    /// output channels dealt to the threads).
    #[test]
    fn winograd_matches_candle_conv() {
        let mut rng = ChaCha8Rng::seed_from_u64(29);
        for (n, c, o, h, w, padding) in [
            (2, 16, 17, 21, 19, 1),
            (5, 20, 16, 17, 16, 1),
            (1, 18, 24, 30, 33, 0),
            (3, 16, 16, 14, 17, 2),
            // By im2col: a narrow layer on a small map.
            (3, 16, 20, 9, 11, 1),
            // By Winograd: a wide layer on a small map (odd, then even).
            (2, 128, 130, 7, 11, 1),
            (2, 128, 128, 8, 8, 1),
            // Across channels in row blocks (more than 1024 output pixels).
            (1, 128, 128, 35, 33, 1),
            // One image, more channels than pixels: the threads split the output channels
            // (by im2col, then by Winograd).
            (1, 16, 48, 5, 4, 1),
            (1, 128, 160, 8, 8, 1),
            // The channel split over blocks of two images, and over two row blocks of one
            // image (odd height, pooled too).
            (4, 16, 48, 3, 3, 1),
            (1, 64, 192, 13, 13, 1),
        ] {
            let x = Var::from_tensor(&random(&[n, c, h, w], &mut rng)).unwrap();
            let wt = Var::from_tensor(&random(&[o, c, 3, 3], &mut rng)).unwrap();
            let b = Var::from_tensor(&random(&[o], &mut rng)).unwrap();
            let (g, _) = Geometry::new(&x, &wt, 1, padding).unwrap();
            let (plane, wide) = (g.ho * g.wo, c.min(o) >= 128);
            assert_eq!(
                winograd::applies(&g, o),
                plane >= 256 || (plane >= 64 && wide)
            );
            let small = Geometry { ho: 7, wo: 9, ..g };
            assert!(!winograd::applies(&small, o));
            let conv = x
                .conv2d(&wt, padding, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, o, 1, 1)).unwrap())
                .unwrap();
            for epilogue in [Epilogue::None, Epilogue::Relu, Epilogue::ReluPool] {
                let theirs = match epilogue {
                    Epilogue::None => conv.clone(),
                    Epilogue::Relu => conv.relu().unwrap(),
                    Epilogue::ReluPool => {
                        crate::pool::max_pool2d(&conv.relu().unwrap(), 2, 2, 0).unwrap()
                    }
                };
                let r = random(theirs.dims(), &mut rng);
                let gb = weighted_grads(&theirs, &r);
                for threads in 1..=3 {
                    let (ours, ga) = on_threads(threads, || {
                        let y = conv2d_impl(&x, &wt, Some(&b), 1, padding, epilogue).unwrap();
                        let ga = weighted_grads(&y, &r);
                        (y, ga)
                    });
                    let ctx = format!(
                        "n{n} c{c} o{o} {h}×{w} p{padding} {epilogue:?}, {threads} threads"
                    );
                    assert!(max_diff(&ours, &theirs) < 1e-10, "{ctx}");
                    for (name, v) in [("x", &x), ("w", &wt), ("b", &b)] {
                        let d = max_diff(ga.get(v).unwrap(), gb.get(v).unwrap());
                        assert!(d < 1e-9, "{ctx}: ∂{name} off by {d}");
                    }
                }
            }
        }
    }

    /// Behind a fused ReLU + pool the kernel gradient stays the direct sum: a kernel tap whose
    /// gradient is exactly 0 in Candle's f32 conv (on a 7×10 map, 4 images, the pool passes a
    /// quarter of the gradient) is exactly 0 here too, not a Winograd rounding residue that
    /// Adam would turn into a full step.
    #[test]
    fn pooled_kernel_gradient_keeps_exact_zeros() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (n, c, o, h, w) = (4, 128, 128, 7, 10);
        let f = |t: Tensor| t.to_dtype(DType::F32).unwrap();
        let x = Var::from_tensor(&f(random(&[n, c, h, w], &mut rng).relu().unwrap())).unwrap();
        let wt = Var::from_tensor(&f((random(&[o, c, 3, 3], &mut rng) * 0.1).unwrap())).unwrap();
        let r = f(random(&[n, o, h / 2, w / 2], &mut rng));
        let (g, _) = Geometry::new(&x, &wt, 1, 1).unwrap();
        assert!(winograd::applies(&g, o));
        let kernel_grad = |y: &Tensor| -> Vec<f32> {
            let gw = weighted_grads(y, &r)
                .get(&wt)
                .unwrap()
                .flatten_all()
                .unwrap();
            gw.to_vec1().unwrap()
        };
        let theirs = x.conv2d(&wt, 1, 1, 1, 1).unwrap().relu().unwrap();
        let theirs = kernel_grad(&crate::pool::max_pool2d(&theirs, 2, 2, 0).unwrap());
        let ours = kernel_grad(&conv2d_impl(&x, &wt, None, 1, 1, Epilogue::ReluPool).unwrap());
        let zeros: Vec<usize> = (0..theirs.len()).filter(|&i| theirs[i] == 0.0).collect();
        assert!(!zeros.is_empty(), "the case should have exactly-zero taps");
        for i in zeros {
            assert_eq!(ours[i], 0.0, "tap {i}: exactly 0 in Candle's gradient");
        }
    }

    /// Every plan covers each output row of each image exactly once, in at most one group per
    /// thread, each group a contiguous run of images that holds its blocks.
    #[test]
    fn plans_cover_every_output_row_once() {
        for (n, c, h, k) in [
            (8, 1, 120, 7),
            (8, 512, 7, 3),
            (1, 64, 56, 3),
            (5, 3, 9, 3),
            (13, 1, 4, 1),
            (4, 1, 121, 7),
            // One image whose rows or row pairs do not divide evenly among 3 or 4 threads.
            (1, 1, 10, 3),
            (1, 1, 5, 3),
            (1, 16, 18, 3),
        ] {
            for threads in 1..=4 {
                let g = Geometry {
                    n,
                    c,
                    h,
                    w: h + 1,
                    kh: k,
                    kw: k,
                    stride: 1,
                    padding: k / 2,
                    ho: h,
                    wo: h + 1,
                };
                for (mode, sizing) in [
                    (Rows::Any, Sizing::Im2col),
                    (Rows::Any, Sizing::KernelGradient { o: 512 }),
                    (Rows::Pairs, Sizing::Winograd),
                    (Rows::Pooled, Sizing::Im2col),
                    (Rows::Pooled, Sizing::KernelGradient { o: 64 }),
                    (Rows::Pooled, Sizing::Winograd),
                ] {
                    let plan = Plan::new(&g, threads, mode, sizing);
                    let rows = if mode == Rows::Pooled { h / 2 * 2 } else { h };
                    assert!(plan.groups.len() <= threads);
                    let mut seen = vec![0; n * h];
                    let mut next = 0;
                    for grp in &plan.groups {
                        assert_eq!(grp.b0, next);
                        next = grp.b1;
                        for blk in &grp.blocks {
                            assert!(blk.b0 >= grp.b0 && blk.b0 + blk.nb <= grp.b1);
                            assert!(blk.nb == 1 || (blk.oy0 == 0 && blk.oy1 == rows));
                            if mode != Rows::Any {
                                assert!(blk.oy0 % 2 == 0 && (blk.oy1 % 2 == 0 || blk.oy1 == rows));
                            }
                            for b in blk.b0..blk.b0 + blk.nb {
                                for oy in blk.oy0..blk.oy1 {
                                    seen[b * h + oy] += 1;
                                }
                            }
                        }
                    }
                    assert_eq!(next, n);
                    let once = |i: usize| seen[i] == usize::from(i % h < rows);
                    let ctx = format!("n{n} c{c} h{h} k{k} t{threads} {mode:?} {sizing:?}");
                    assert!((0..n * h).all(once), "{ctx}");
                    // Fewer units than threads: single-image blocks, ascending within each
                    // image, covering it once, enough for every thread when the rows allow.
                    let Some(blocks) = plan.row_blocks(&g, mode) else {
                        assert_eq!(plan.gemm_threads, 1, "{ctx}");
                        continue;
                    };
                    assert!(plan.gemm_threads > 1, "{ctx}");
                    let mut seen = vec![0; n * h];
                    for (i, blk) in blocks.iter().enumerate() {
                        assert_eq!(blk.nb, 1, "{ctx}");
                        if i > 0 && blocks[i - 1].b0 == blk.b0 {
                            assert_eq!(blocks[i - 1].oy1, blk.oy0, "{ctx}");
                        }
                        if mode != Rows::Any {
                            assert!(blk.oy0 % 2 == 0 && (blk.oy1 % 2 == 0 || blk.oy1 == rows));
                        }
                        for oy in blk.oy0..blk.oy1 {
                            seen[blk.b0 * h + oy] += 1;
                        }
                    }
                    assert!((0..n * h).all(once), "{ctx}: dealt rows");
                    let step = if mode == Rows::Any { 1 } else { 2 };
                    assert!(
                        blocks.len() >= threads.min(n * rows.div_ceil(step)),
                        "{ctx}"
                    );
                    // One image: a multiple of the threads, or one block per row (pair).
                    if n == 1 && rows.div_ceil(step) >= threads {
                        let even = blocks.len() % threads == 0;
                        assert!(
                            even || blocks.len() == rows.div_ceil(step),
                            "{ctx}: {blocks:?}"
                        );
                    }
                }
            }
        }
    }

    /// The one-pass forward + kernel gradient gives the forward's output and the backward's
    /// kernel gradient (the same blocks, so the same sums), on 1 to 3 threads; Winograd-sized
    /// convs are left to the two passes.
    #[test]
    fn one_pass_forward_and_kernel_gradient_match_two_passes() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (n, c, hw, o, k, stride, pad) in [
            (3, 5, 9, 4, 4, 2, 1),
            (2, 16, 12, 8, 3, 2, 1),
            (5, 3, 7, 6, 1, 1, 0),
        ] {
            let x = random(&[n, c, hw, hw], &mut rng)
                .to_dtype(DType::F32)
                .unwrap();
            let w = random(&[o, c, k, k], &mut rng)
                .to_dtype(DType::F32)
                .unwrap();
            let (g, _) = Geometry::new(&x, &w, stride, pad).unwrap();
            let dy = random(&[n, o, g.ho, g.wo], &mut rng)
                .to_dtype(DType::F32)
                .unwrap();
            let (xs, ws, dys) = (
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                dy.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            for threads in 1..=3 {
                on_threads(threads, || {
                    let (y, dw) = forward_and_kernel_grad(&xs, &ws, &dys, &g, o).unwrap();
                    let (y2, _) = forward(&xs, &ws, None, &g, o, Epilogue::None);
                    let needs = Needs { x: false, w: true };
                    let dw2 = backward(&xs, &[], &dys, Route::Plain, &g, o, false, needs)
                        .w
                        .unwrap();
                    let ctx = format!("n{n} c{c} {hw}² o{o} k{k}/{stride} t{threads}");
                    assert_eq!(dw, dw2, "{ctx}");
                    let worst = y
                        .iter()
                        .zip(&y2)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(worst < 1e-5, "{ctx}: {worst}");
                });
            }
        }
        let x = Tensor::zeros((1, 16, 16, 16), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((16, 16, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let (g, o) = Geometry::new(&x, &w, 1, 1).unwrap();
        assert!(winograd::applies(&g, o));
        let zero = vec![0f32; 16 * 16 * 16];
        assert!(forward_and_kernel_grad(&zero, &zero[..16 * 16 * 9], &zero, &g, o).is_none());
    }

    /// The input image of a net needs no gradient: none is computed for it.
    #[test]
    fn no_input_gradient_for_plain_tensors() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = random(&[2, 1, 6, 6], &mut rng)
            .to_dtype(DType::F32)
            .unwrap();
        let w = Var::from_tensor(
            &random(&[3, 1, 3, 3], &mut rng)
                .to_dtype(DType::F32)
                .unwrap(),
        )
        .unwrap();
        let y = conv2d(&x, &w, None, 1, 1).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        assert_eq!(grads.get(&w).unwrap().dims(), &[3, 1, 3, 3]);
    }

    #[test]
    fn rejects_mismatched_channels_and_oversized_kernels() {
        let x = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let err = conv2d(&x, &w, None, 1, 1).unwrap_err().to_string();
        assert!(err.contains("2 channels"), "{err}");
        let w = Tensor::zeros((3, 2, 7, 7), DType::F32, &Device::Cpu).unwrap();
        let err = conv2d(&x, &w, None, 1, 0).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
        let empty = Tensor::zeros((0, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let err = conv2d(&empty, &w, None, 1, 1).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
