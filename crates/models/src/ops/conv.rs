//! 2-D convolution as im2col + one `matmul`, with a backward pass of the same shape (see the
//! parent module). The bias rides along in the matrix product: the weight matrix gets the bias
//! as an extra column and the column matrix an extra row of ones, so `∂bias` falls out of the
//! same product as `∂W`.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor,
    WithDType,
};
use rayon::prelude::*;

use super::{valid_range, zeros};
use crate::pool::window_out_len;

/// Sizes of one convolution: input (n, c, h, w), square-or-not kernel (kh, kw), stride,
/// zero padding, output (ho, wo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<(Self, usize)> {
        let (n, c, h, w) = x.dims4()?;
        let (o, ci, kh, kw) = weight.dims4()?;
        if n == 0 {
            candle_core::bail!("conv2d: the batch {:?} is empty", x.dims());
        }
        if ci != c {
            candle_core::bail!(
                "conv2d: the input has {c} channels but the kernel {:?} expects {ci}",
                weight.dims()
            );
        }
        let (Some(ho), Some(wo)) = (
            window_out_len(h, kh, stride, padding),
            window_out_len(w, kw, stride, padding),
        ) else {
            candle_core::bail!(
                "conv2d: a {kh}×{kw} kernel (stride {stride}, padding {padding}) does not fit a {h}×{w} input"
            );
        };
        Ok((
            Self {
                n,
                c,
                h,
                w,
                kh,
                kw,
                stride,
                padding,
                ho,
                wo,
            },
            o,
        ))
    }

    /// Rows of the column matrix that come from the input: c·kh·kw.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image: ho·wo.
    fn l(&self) -> usize {
        self.ho * self.wo
    }

    /// Columns of the column matrix: n·ho·wo.
    fn cols(&self) -> usize {
        self.n * self.l()
    }
}

/// im2col: (n, c, h, w) → (c·kh·kw [+1], n·ho·wo). Row `(ci·kh + ky)·kw + kx` holds, for each
/// image and output position, the input pixel under kernel tap (ky, kx) of channel ci (0 in
/// the padding). With `ones_row`, a last row of ones carries the bias.
struct Im2Col {
    g: Geometry,
    ones_row: bool,
}

fn im2col<T: WithDType>(x: &[T], g: &Geometry, ones_row: bool) -> Vec<T> {
    let (l, ncols) = (g.l(), g.cols());
    let rows = g.k() + usize::from(ones_row);
    let mut cols = zeros(rows * ncols);
    cols.par_chunks_mut(ncols)
        .enumerate()
        .for_each(|(row, out)| {
            if row == g.k() {
                out.fill(T::one());
                return;
            }
            let ci = row / (g.kh * g.kw);
            let (ky, kx) = ((row / g.kw) % g.kh, row % g.kw);
            let (ylo, yhi) = valid_range(g.h, g.ho, g.stride, ky, g.padding);
            let (xlo, xhi) = valid_range(g.w, g.wo, g.stride, kx, g.padding);
            for b in 0..g.n {
                let plane = &x[(b * g.c + ci) * g.h * g.w..][..g.h * g.w];
                let dst = &mut out[b * l..][..l];
                for oy in ylo..yhi {
                    let iy = oy * g.stride + ky - g.padding;
                    let src = &plane[iy * g.w..][..g.w];
                    let drow = &mut dst[oy * g.wo..][..g.wo];
                    if g.stride == 1 {
                        let at = xlo + kx - g.padding;
                        drow[xlo..xhi].copy_from_slice(&src[at..at + (xhi - xlo)]);
                    } else {
                        for ox in xlo..xhi {
                            drow[ox] = src[ox * g.stride + kx - g.padding];
                        }
                    }
                }
            }
        });
    cols
}

/// col2im, the adjoint of im2col: sums each column-matrix entry back onto the input pixel it
/// was read from. (c·kh·kw [+1], n·ho·wo) → (n, c, h, w); a ones row is ignored.
struct Col2Im {
    g: Geometry,
}

fn col2im<T: WithDType>(cols: &[T], g: &Geometry) -> Vec<T> {
    let (l, ncols) = (g.l(), g.cols());
    let mut dx = zeros(g.n * g.c * g.h * g.w);
    dx.par_chunks_mut(g.h * g.w)
        .enumerate()
        .for_each(|(bc, plane)| {
            let (b, ci) = (bc / g.c, bc % g.c);
            for ky in 0..g.kh {
                let (ylo, yhi) = valid_range(g.h, g.ho, g.stride, ky, g.padding);
                for kx in 0..g.kw {
                    let (xlo, xhi) = valid_range(g.w, g.wo, g.stride, kx, g.padding);
                    let row = (ci * g.kh + ky) * g.kw + kx;
                    let src = &cols[row * ncols + b * l..][..l];
                    for oy in ylo..yhi {
                        let iy = oy * g.stride + ky - g.padding;
                        let drow = &mut plane[iy * g.w..][..g.w];
                        let srow = &src[oy * g.wo..][..g.wo];
                        if g.stride == 1 {
                            let at = xlo + kx - g.padding;
                            let dst = &mut drow[at..at + (xhi - xlo)];
                            for (d, s) in dst.iter_mut().zip(&srow[xlo..xhi]) {
                                *d += *s;
                            }
                        } else {
                            for ox in xlo..xhi {
                                drow[ox * g.stride + kx - g.padding] += srow[ox];
                            }
                        }
                    }
                }
            }
        });
    dx
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "fkd-im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.g;
        let shape = Shape::from((g.k() + usize::from(self.ones_row), g.cols()));
        let out = float_kernel!(self.name(), |x| im2col(x, g, self.ones_row), s, l);
        Ok((out, shape))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "fkd-col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.g;
        let shape = Shape::from((g.n, g.c, g.h, g.w));
        let out = float_kernel!(self.name(), |x| col2im(x, g), s, l);
        Ok((out, shape))
    }
}

/// The autograd node of a convolution: `(x, wb, y2) → y`, where `wb` is the (o, k [+1]) weight
/// matrix (bias as the last column) and `y2 = wb · cols` the (o, n·ho·wo) product computed
/// outside the node. The forward only lays `y2` out as (n, o, ho, wo); the backward gives
/// `∂x` and `∂wb`.
struct ConvNode {
    g: Geometry,
    o: usize,
    bias: bool,
    relu: bool,
    /// Images per column matrix (see [`CHUNK_FLOATS`]).
    chunk: usize,
    /// The forward's column matrices, one per chunk, kept when the input needs no gradient
    /// (a net's first layer): the backward then need not rebuild them.
    cols: Option<Vec<Tensor>>,
}

impl ConvNode {
    /// The chunks of the batch: (first image, images).
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.g.n)
            .step_by(self.chunk)
            .map(|start| (start, self.chunk.min(self.g.n - start)))
    }
}

/// (o, n·l) → (n, o, l), through a ReLU when `relu`.
fn to_nchw<T: WithDType>(y2: &[T], n: usize, o: usize, l: usize, relu: bool) -> Vec<T> {
    let mut y = zeros(n * o * l);
    y.par_chunks_mut(l).enumerate().for_each(|(bo, dst)| {
        let (b, oc) = (bo / o, bo % o);
        let src = &y2[(oc * n + b) * l..][..l];
        if relu {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = if s > T::zero() { s } else { T::zero() };
            }
        } else {
            dst.copy_from_slice(src);
        }
    });
    y
}

/// The backward's first step: ∂y (n, o, l) → (o, n·l), zeroed where the ReLU output `y` is not
/// positive when `relu` (PyTorch's threshold rule: no gradient at exactly 0).
struct GradToRows {
    n: usize,
    o: usize,
    l: usize,
    relu: bool,
}

fn grad_to_rows<T: WithDType>(grad: &[T], y: &[T], s: &GradToRows) -> Vec<T> {
    let mut g2 = zeros(s.n * s.o * s.l);
    g2.par_chunks_mut(s.l).enumerate().for_each(|(ob, dst)| {
        let (oc, b) = (ob / s.n, ob % s.n);
        let at = (b * s.o + oc) * s.l;
        let src = &grad[at..][..s.l];
        if s.relu {
            for ((d, &g), &y) in dst.iter_mut().zip(src).zip(&y[at..][..s.l]) {
                *d = if y > T::zero() { g } else { T::zero() };
            }
        } else {
            dst.copy_from_slice(src);
        }
    });
    g2
}

impl CustomOp2 for GradToRows {
    fn name(&self) -> &'static str {
        "fkd-conv2d-grad-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = Shape::from((self.o, self.n * self.l));
        let name = self.name();
        let out = float_kernel!(name, |g, y| grad_to_rows(g, y, self), s1, l1, s2, l2);
        Ok((out, shape))
    }
}

impl CustomOp3 for ConvNode {
    fn name(&self) -> &'static str {
        "fkd-conv2d"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        s: &CpuStorage,
        l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.g;
        let shape = Shape::from((g.n, self.o, g.ho, g.wo));
        let out = float_kernel!(
            self.name(),
            |y2| to_nchw(y2, g.n, self.o, g.l(), self.relu),
            s,
            l
        );
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _y2: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.g;
        // (n, o, ho, wo) → (o, n·ho·wo), the layout of the forward product.
        let g2 = grad.detach().contiguous()?.apply_op2_no_bwd(
            &y.detach(),
            &GradToRows {
                n: g.n,
                o: self.o,
                l: g.l(),
                relu: self.relu,
            },
        )?;
        let needs_x = x.track_op();
        let x = x.detach();
        let w = wb.detach().narrow(1, 0, g.k())?;
        let l = g.l();
        let mut grad_wb: Option<Tensor> = None;
        let mut dx = Vec::new();
        for (i, (start, len)) in self.chunks().enumerate() {
            let gc = Geometry { n: len, ..g };
            let cols = match self.cols.as_ref().and_then(|c| c.get(i)) {
                Some(cols) => cols.clone(),
                None => x.narrow(0, start, len)?.apply_op1_no_bwd(&Im2Col {
                    g: gc,
                    ones_row: self.bias,
                })?,
            };
            // This chunk's columns of the (o, n·l) gradient: a strided view, which matmul
            // reads in place.
            let g2c = g2.narrow(1, start * l, len * l)?;
            let part = g2c.matmul(&cols.t()?)?;
            grad_wb = Some(match grad_wb {
                None => part,
                Some(acc) => (acc + part)?,
            });
            if needs_x {
                dx.push(w.t()?.matmul(&g2c)?.apply_op1_no_bwd(&Col2Im { g: gc })?);
            }
        }
        let grad_x = match dx.len() {
            0 => None,
            1 => dx.pop(),
            _ => Some(Tensor::cat(&dx, 0)?),
        };
        // `Geometry::new` refuses empty batches, so there is at least one chunk.
        Ok((grad_x, grad_wb, None))
    }
}

/// 2-D convolution (cross-correlation, as PyTorch's and Candle's `conv2d`) of `x` (n, c, h, w)
/// with `weight` (o, c, kh, kw), zero `padding` on every side, `stride` in both directions,
/// plus an optional `bias` (o). Output (n, o, ho, wo) with `ho = (h + 2·padding − kh)/stride + 1`.
///
/// On the CPU (f32, f64) it runs as im2col + `matmul` with a backward of the same kind (module
/// docs); elsewhere it is Candle's `conv2d` and its backward.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_impl(x, weight, bias, stride, padding, false)
}

/// `relu(conv2d(x, weight, bias, stride, padding))` in one node: on the CPU the ReLU is applied
/// while the product is laid out and its backward while the gradient is, so it costs no pass of
/// its own (Candle's ReLU backward takes five). The gradient at exactly 0 is 0, as PyTorch's.
pub fn conv2d_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_impl(x, weight, bias, stride, padding, true)
}

fn conv2d_impl(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    relu: bool,
) -> Result<Tensor> {
    let (g, o) = Geometry::new(x, weight, stride, padding)?;
    let fused = matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64);
    if !fused {
        let y = x.conv2d(weight, padding, stride, 1, 1)?;
        let y = match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, o, 1, 1))?)?,
            None => y,
        };
        return if relu { y.relu() } else { Ok(y) };
    }
    let w = weight.reshape((o, g.k()))?;
    let wb = match bias {
        Some(b) => Tensor::cat(&[&w, &b.reshape((o, 1))?], 1)?,
        None => w,
    };
    // Images per chunk: keep each column matrix near CHUNK_FLOATS, so that it stays in the
    // allocator's reusable size classes (a 30 MB buffer is mapped fresh and page-faulted in at
    // every step) and closer to the caches. One node covers the whole batch, so autograd sees
    // one op, not a concatenation of chunks.
    let per_image = (g.k() + 1) * g.l();
    let chunk = (CHUNK_FLOATS / per_image).clamp(1, g.n);
    let x = x.contiguous()?;
    let keep_cols = !x.track_op();
    let wd = wb.detach();
    let (mut products, mut kept) = (Vec::new(), Vec::new());
    for start in (0..g.n).step_by(chunk) {
        let len = chunk.min(g.n - start);
        let cols = x
            .detach()
            .narrow(0, start, len)?
            .apply_op1_no_bwd(&Im2Col {
                g: Geometry { n: len, ..g },
                ones_row: bias.is_some(),
            })?;
        products.push(wd.matmul(&cols)?);
        if keep_cols {
            kept.push(cols);
        }
    }
    let y2 = if products.len() == 1 {
        products.remove(0)
    } else {
        Tensor::cat(&products, 1)?
    };
    x.apply_op3(
        &wb,
        &y2,
        ConvNode {
            g,
            o,
            bias: bias.is_some(),
            relu,
            chunk,
            cols: keep_cols.then_some(kept),
        },
    )
}

/// [`conv2d`] with the weights, bias, stride and padding of a candle-nn `Conv2d` layer. Layers
/// with dilation or groups other than 1 run through Candle's own conv.
pub fn conv2d_layer(layer: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    layer_impl(layer, x, false)
}

/// [`conv2d_relu`] with a candle-nn `Conv2d` layer's parameters (see [`conv2d_layer`]).
pub fn conv2d_relu_layer(layer: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    layer_impl(layer, x, true)
}

fn layer_impl(layer: &candle_nn::Conv2d, x: &Tensor, relu: bool) -> Result<Tensor> {
    let cfg = layer.config();
    if cfg.dilation != 1 || cfg.groups != 1 {
        let y = candle_core::Module::forward(layer, x)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    conv2d_impl(
        x,
        layer.weight(),
        layer.bias(),
        cfg.stride,
        cfg.padding,
        relu,
    )
}

/// Target size, in elements, of one column matrix (see [`conv2d`]).
const CHUNK_FLOATS: usize = 1 << 20;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ops::testutil::{max_diff, random, weighted_grads};
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

    /// A batch split into several chunks gives the same result and gradients as one chunk.
    #[test]
    fn chunked_batches_match_whole_batches() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        // 1×64×64 images with a 7×7 kernel: (49 + 1) · 4096 elements per image, so CHUNK_FLOATS
        // holds 5 of them and a batch of 12 runs as 5 + 5 + 2.
        let x = Var::from_tensor(&random(&[12, 1, 64, 64], &mut rng)).unwrap();
        let w = Var::from_tensor(&random(&[3, 1, 7, 7], &mut rng)).unwrap();
        let ours = conv2d(&x, &w, None, 1, 3).unwrap();
        let theirs = x.conv2d(&w, 3, 1, 1, 1).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-10);
        let ga = ours.sum_all().unwrap().backward().unwrap();
        let gb = theirs.sum_all().unwrap().backward().unwrap();
        for v in [&x, &w] {
            assert!(max_diff(ga.get(v).unwrap(), gb.get(v).unwrap()) < 1e-9);
        }
        // A plain input (a net's first layer): the node keeps the forward's column matrices
        // and reuses them for ∂W.
        let plain = x.as_tensor().detach();
        let ours = conv2d(&plain, &w, None, 1, 3).unwrap();
        let ga = ours.sum_all().unwrap().backward().unwrap();
        assert!(ga.get(&plain).is_none());
        assert!(max_diff(ga.get(&w).unwrap(), gb.get(&w).unwrap()) < 1e-9);
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
