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
use rayon::prelude::*;
use std::sync::OnceLock;

use super::gemm::{Float, Mat, MatMut, matmul};
use super::{contiguous, profile, valid_range, zeros};
use crate::pool::window_out_len;

mod winograd;

/// Target size, in elements, of one block's column matrix: about half of a core's L2 cache in
/// f32, so the columns, the block's products and the packed operands stay cached.
const BLOCK_FLOATS: usize = 1 << 16;

/// The fewest output positions a block holds when the column matrix is tall (deep layers with
/// many input channels): below this, `gemm` spends more time packing the weights than
/// multiplying.
const MIN_BLOCK_COLS: usize = 128;

/// The kernel gradient `∂W += ∂Y·colsᵀ` reads and writes all of `∂W` (o × c·kh·kw) once per
/// block, so the backward's blocks hold at least `o·c·kh·kw / DW_REUSE` columns: on ResNet-18
/// at 224 pixels, batch 32, the last stage's blocks of 2 images (98 columns) made its backward
/// run at half the forward's speed, re-reading a 9 MB `∂W` 8 times per thread; at this bound
/// (whole 16-image runs there, 2-image blocks in the stage before) the training step ran 9%
/// faster (3 rounds each; Part 4's net at 128 pixels unchanged).
const DW_REUSE: usize = 1024;

/// Output positions per Winograd block: 256 tiles of 2×2, so each of the 16 products is
/// (o × c)·(c × 256), large enough to amortise `gemm`'s packing and call overhead, while one
/// product's operands stay in L2.
const WINOGRAD_BLOCK_COLS: usize = 1024;

/// Target size, in elements, of the transformed input tiles that one block of a Winograd
/// kernel gradient multiplies by its transformed output gradient: half a megabyte in f32, so
/// both stay in a core's L2 across the 16 products. Measured on the 2-core AMD EPYC (1 MiB L2
/// per core), Part 4's deconv net at batch 16: the 64×32×32 stage's backward ran 5–10%
/// faster than with the forward's 1024-pixel blocks, and 4096-pixel blocks 20–30% slower.
const WINOGRAD_GRAD_FLOATS: usize = 1 << 17;

/// Sizes of one convolution: input (n, c, h, w), square-or-not kernel (kh, kw), stride,
/// zero padding, output (ho, wo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Geometry {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    pub(super) padding: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
}

impl Geometry {
    pub(super) fn new(
        x: &Tensor,
        weight: &Tensor,
        stride: usize,
        padding: usize,
    ) -> Result<(Self, usize)> {
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
        if stride == 0 {
            candle_core::bail!("conv2d: the stride must be at least 1");
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

    /// Rows of the column matrix: c·kh·kw.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image: ho·wo.
    fn l(&self) -> usize {
        self.ho * self.wo
    }

    /// `c×h×w → o, kh×kw/stride[, epilogue]`, for the op profile.
    pub(super) fn label(&self, o: usize, epilogue: Epilogue) -> String {
        let tail = match epilogue {
            Epilogue::None => "",
            Epilogue::Relu => ", relu",
            Epilogue::ReluPool => ", relu, pool",
        };
        format!(
            "{}×{}×{} → {o}, {}×{}/{}{tail}",
            self.c, self.h, self.w, self.kh, self.kw, self.stride
        )
    }
}

/// One block of output positions: images `b0..b0 + nb`, output rows `oy0..oy1` of each (all
/// rows when `nb > 1`). Its column matrix has `nb·(oy1 − oy0)·wo` columns, image-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    b0: usize,
    nb: usize,
    oy0: usize,
    oy1: usize,
}

impl Block {
    /// Output positions per image in this block.
    fn span(&self, g: &Geometry) -> usize {
        (self.oy1 - self.oy0) * g.wo
    }

    /// Columns of the block's column matrix.
    fn cols(&self, g: &Geometry) -> usize {
        self.nb * self.span(g)
    }
}

/// A contiguous run of images `b0..b1` that one thread processes, block by block.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    b0: usize,
    b1: usize,
    blocks: Vec<Block>,
}

/// What a plan's blocks are sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sizing {
    /// An im2col column matrix that stays in L2 ([`BLOCK_FLOATS`]).
    Im2col,
    /// [`winograd::block`]'s 16 products ([`WINOGRAD_BLOCK_COLS`]).
    Winograd,
    /// [`winograd::kernel_grad_block`]: the block's 16 transformed input tiles (16·c floats
    /// per 4 output pixels) hold [`WINOGRAD_GRAD_FLOATS`], and at least [`MIN_BLOCK_COLS`]
    /// pixels.
    WinogradGrad,
    /// The backward with a kernel gradient of `o` output channels: as `Im2col`, and at least
    /// `o·c·kh·kw / DW_REUSE` columns.
    KernelGradient { o: usize },
}

/// How a batch is split: one group per thread, and how many threads each `gemm` call may use
/// (more than one only when there are fewer groups than threads, e.g. a single image).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    groups: Vec<Group>,
    gemm_threads: usize,
}

/// Where a block's rows may start and end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rows {
    /// Anywhere.
    Any,
    /// On even rows (Winograd's 2×2 tiles); the last block may end on an odd height.
    Pairs,
    /// On even rows, and the last row of an odd height, which the 2×2 floor-mode pool that
    /// follows drops, is not computed.
    Pooled,
}

impl Plan {
    fn new(g: &Geometry, threads: usize, rows: Rows, sizing: Sizing) -> Self {
        let threads = threads.max(1);
        let im2col = (BLOCK_FLOATS / g.k().max(1)).max(MIN_BLOCK_COLS);
        let target = match sizing {
            Sizing::Im2col => im2col,
            Sizing::Winograd => WINOGRAD_BLOCK_COLS,
            Sizing::WinogradGrad => {
                (WINOGRAD_GRAD_FLOATS * 4 / (16 * g.c.max(1))).max(MIN_BLOCK_COLS)
            }
            Sizing::KernelGradient { o } => im2col.max(o * g.k() / DW_REUSE),
        };
        let (step, ho) = match rows {
            Rows::Any => (1, g.ho),
            Rows::Pairs => (2, g.ho),
            Rows::Pooled => (2, g.ho / 2 * 2),
        };
        // Units of work: one image cut into row blocks, or a few whole images as one block.
        let units: Vec<Group> = if g.l() > target {
            let rows = (target / g.wo / step).max(1) * step;
            (0..g.n)
                .map(|b| Group {
                    b0: b,
                    b1: b + 1,
                    blocks: (0..ho)
                        .step_by(rows)
                        .map(|oy0| Block {
                            b0: b,
                            nb: 1,
                            oy0,
                            oy1: (oy0 + rows).min(ho),
                        })
                        .collect(),
                })
                .collect()
        } else {
            let per = (target / g.l()).clamp(1, g.n.div_ceil(threads));
            (0..g.n)
                .step_by(per)
                .map(|b0| {
                    let nb = per.min(g.n - b0);
                    Group {
                        b0,
                        b1: b0 + nb,
                        blocks: vec![Block {
                            b0,
                            nb,
                            oy0: 0,
                            oy1: ho,
                        }],
                    }
                })
                .collect()
        };
        let gemm_threads = if units.len() < threads { threads } else { 1 };
        if units.len() <= threads {
            return Self {
                groups: units,
                gemm_threads,
            };
        }
        // Deal the units out to the threads in contiguous runs of near-equal length.
        let total = units.len();
        let mut units = units.into_iter();
        let groups = (0..threads)
            .map(|t| {
                let take = (t + 1) * total / threads - t * total / threads;
                let run: Vec<Group> = units.by_ref().take(take).collect();
                Group {
                    b0: run[0].b0,
                    b1: run[run.len() - 1].b1,
                    blocks: run.into_iter().flat_map(|u| u.blocks).collect(),
                }
            })
            .collect();
        Self {
            groups,
            gemm_threads,
        }
    }

    /// `data` (per_image elements per image) cut into each group's images.
    fn split<'a, T>(&self, mut data: &'a mut [T], per_image: usize) -> Vec<&'a mut [T]> {
        let mut parts = Vec::with_capacity(self.groups.len());
        for grp in &self.groups {
            let (head, tail) =
                std::mem::take(&mut data).split_at_mut((grp.b1 - grp.b0) * per_image);
            parts.push(head);
            data = tail;
        }
        parts
    }
}

/// The block's column matrix, (c·kh·kw) × cols: row `(ci·kh + ky)·kw + kx` holds, for each
/// output position of the block, the input pixel under kernel tap (ky, kx) of channel ci (0 in
/// the padding). A strided conv first splits the input rows it reads into their s×s
/// polyphase components (`poly`, see [`Polyphase`]), so that every row of the column matrix is
/// a contiguous copy instead of an every-s-th gather: each input pixel is gathered once instead
/// of once per tap that reads it (4 times for a 4×4/2 kernel, 12 for the 7×7/2 stem).
fn im2col_block<T: Float>(x: &[T], g: &Geometry, blk: &Block, cols: &mut [T], poly: &mut Vec<T>) {
    let (span, nc) = (blk.span(g), blk.cols(g));
    let phases = (g.stride > 1).then(|| Polyphase::new(x, g, blk, poly));
    for (row, out) in cols.chunks_exact_mut(nc).enumerate() {
        let ci = row / (g.kh * g.kw);
        let (ky, kx) = ((row / g.kw) % g.kh, row % g.kw);
        let (ylo, yhi) = valid_range(g.h, g.ho, g.stride, ky, g.padding);
        let (xlo, xhi) = valid_range(g.w, g.wo, g.stride, kx, g.padding);
        // Rows inside the block that read the input; the others read only padding.
        // (`valid_range` gives lo ≤ hi, which the clamps keep.)
        let (y0, y1) = (ylo.clamp(blk.oy0, blk.oy1), yhi.clamp(blk.oy0, blk.oy1));
        for bi in 0..blk.nb {
            let plane = &x[((blk.b0 + bi) * g.c + ci) * g.h * g.w..][..g.h * g.w];
            let dst = &mut out[bi * span..][..span];
            // Only the padding is zeroed: the rest is overwritten below.
            dst[..(y0 - blk.oy0) * g.wo].fill(T::zero());
            dst[(y1 - blk.oy0) * g.wo..].fill(T::zero());
            for oy in y0..y1 {
                let drow = &mut dst[(oy - blk.oy0) * g.wo..][..g.wo];
                drow[..xlo].fill(T::zero());
                drow[xhi..].fill(T::zero());
                if xlo == xhi {
                    continue;
                }
                let iy = oy * g.stride + ky - g.padding;
                let n = xhi - xlo;
                let src = match &phases {
                    None => &plane[iy * g.w + xlo + kx - g.padding..][..n],
                    Some(ph) => &poly[ph.start(bi, ci, iy, kx, xlo)..][..n],
                };
                drow[xlo..xhi].copy_from_slice(src);
            }
        }
    }
}

/// The input rows a strided block reads, split into their s×s polyphase components: component
/// (a, b) of a plane holds the pixels (i·s + a, j·s + b). The input pixel (iy, ix) of tap
/// column kx is then entry `ix / s` of a component row, and the outputs ox that tap reads,
/// (ix + p − kx) / s, are consecutive entries: one contiguous copy per output row.
struct Polyphase {
    s: usize,
    /// First input row held (a multiple of s) and rows held per component.
    r0: usize,
    rows: usize,
    /// Entries per component row: ceil(w / s).
    cols: usize,
    c: usize,
    padding: usize,
}

impl Polyphase {
    /// The layout for the input rows the block's taps read (rows `r0..end`).
    fn layout(g: &Geometry, blk: &Block) -> (Self, usize) {
        let s = g.stride;
        let first = (blk.oy0 * s).saturating_sub(g.padding).min(g.h);
        let end = ((blk.oy1 - 1) * s + g.kh)
            .saturating_sub(g.padding)
            .min(g.h);
        let r0 = first / s * s;
        let ph = Self {
            s,
            r0,
            rows: end.div_ceil(s) - r0 / s,
            cols: g.w.div_ceil(s),
            c: g.c,
            padding: g.padding,
        };
        (ph, end)
    }

    /// Elements of `poly` for `nb` images.
    fn len(&self, nb: usize) -> usize {
        nb * self.c * self.s * self.s * self.rows * self.cols
    }

    /// Splits the rows of the block's images that its taps read into `poly`.
    fn new<T: Float>(x: &[T], g: &Geometry, blk: &Block, poly: &mut Vec<T>) -> Self {
        let (ph, end) = Self::layout(g, blk);
        poly.resize(ph.len(blk.nb), T::zero());
        for bi in 0..blk.nb {
            for ci in 0..g.c {
                let plane = &x[((blk.b0 + bi) * g.c + ci) * g.h * g.w..][..g.h * g.w];
                for iy in ph.r0..end {
                    let src = &plane[iy * g.w..][..g.w];
                    for b in 0..ph.s.min(g.w) {
                        let dst = &mut poly[ph.at(bi, ci, iy, b)..][..ph.cols];
                        for (d, &v) in dst.iter_mut().zip(src[b..].iter().step_by(ph.s)) {
                            *d = v;
                        }
                    }
                }
            }
        }
        ph
    }

    /// The adjoint of [`Polyphase::new`]: adds the components in `poly` onto the block's
    /// images' rows in `dx`, which holds the images from `first` on.
    fn add_into<T: Float>(
        &self,
        poly: &[T],
        g: &Geometry,
        blk: &Block,
        dx: &mut [T],
        first: usize,
    ) {
        let end = (self.r0 + self.s * self.rows).min(g.h);
        for bi in 0..blk.nb {
            for ci in 0..g.c {
                let at = ((blk.b0 + bi - first) * g.c + ci) * g.h * g.w;
                let plane = &mut dx[at..][..g.h * g.w];
                for iy in self.r0..end {
                    let drow = &mut plane[iy * g.w..][..g.w];
                    for b in 0..self.s.min(g.w) {
                        let src = &poly[self.at(bi, ci, iy, b)..][..self.cols];
                        for (d, &v) in drow[b..].iter_mut().step_by(self.s).zip(src) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }

    /// Offset in `poly` of the component row holding input row `iy`, columns b, b + s, ….
    fn at(&self, bi: usize, ci: usize, iy: usize, b: usize) -> usize {
        let (a, i) = (iy % self.s, iy / self.s - self.r0 / self.s);
        ((((bi * self.c + ci) * self.s + a) * self.s + b) * self.rows + i) * self.cols
    }

    /// Where in `poly` the pixels that outputs `xlo..` read from input row `iy` through tap
    /// column `kx` start (consecutive from there); `xlo` must be in the tap's valid range.
    fn start(&self, bi: usize, ci: usize, iy: usize, kx: usize, xlo: usize) -> usize {
        // Output ox reads input column ox·s + kx − p = (ox + q)·s + b.
        let d = kx as isize - self.padding as isize;
        let (b, q) = (d.rem_euclid(self.s as isize), d.div_euclid(self.s as isize));
        (self.at(bi, ci, iy, b as usize) as isize + xlo as isize + q) as usize
    }
}

/// col2im, the adjoint of [`im2col_block`]: adds each column-matrix entry onto the input pixel
/// it was read from, in `dx`, which holds the images from `first` on. A strided conv adds the
/// rows of the column matrix contiguously into the polyphase components of the rows the block
/// touches (`poly`, zeroed here), which are then added onto `dx` once.
fn col2im_block<T: Float>(
    cols: &[T],
    g: &Geometry,
    blk: &Block,
    dx: &mut [T],
    first: usize,
    poly: &mut Vec<T>,
) {
    let (span, nc) = (blk.span(g), blk.cols(g));
    let plane_len = g.h * g.w;
    let phases = (g.stride > 1).then(|| {
        let (ph, _) = Polyphase::layout(g, blk);
        poly.clear();
        poly.resize(ph.len(blk.nb), T::zero());
        ph
    });
    for bi in 0..blk.nb {
        for ci in 0..g.c {
            let at = ((blk.b0 + bi - first) * g.c + ci) * plane_len;
            for ky in 0..g.kh {
                let (ylo, yhi) = valid_range(g.h, g.ho, g.stride, ky, g.padding);
                for kx in 0..g.kw {
                    let (xlo, xhi) = valid_range(g.w, g.wo, g.stride, kx, g.padding);
                    if xlo == xhi {
                        continue;
                    }
                    let row = (ci * g.kh + ky) * g.kw + kx;
                    let src = &cols[row * nc + bi * span..][..span];
                    for oy in ylo.max(blk.oy0)..yhi.min(blk.oy1) {
                        let iy = oy * g.stride + ky - g.padding;
                        let n = xhi - xlo;
                        let dst = match &phases {
                            None => &mut dx[at + iy * g.w + xlo + kx - g.padding..][..n],
                            Some(ph) => &mut poly[ph.start(bi, ci, iy, kx, xlo)..][..n],
                        };
                        let srow = &src[(oy - blk.oy0) * g.wo + xlo..][..n];
                        for (d, &v) in dst.iter_mut().zip(srow) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
    if let Some(ph) = phases {
        ph.add_into(poly, g, blk, dx, first);
    }
}

/// What follows the product in the same node: nothing, a ReLU, or a ReLU and a 2×2, stride-2
/// max-pool (floor mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Epilogue {
    None,
    Relu,
    ReluPool,
}

/// In a pooled node's argmax record: the window's maximum is not positive, so the ReLU passes
/// no gradient to any of its four pixels.
const NO_GRAD: u8 = u8::MAX;

/// The forward kernel: x (n, c, h, w), w (o, c·kh·kw), bias (o) → y (n, o, ho, wo), or
/// (n, o, ho/2, wo/2) pooled, with the pooled node's argmax record (window position 0..4 of
/// each output's maximum, row-major, or [`NO_GRAD`]).
pub(super) fn forward<T: Float>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    o: usize,
    epilogue: Epilogue,
) -> (Vec<T>, Vec<u8>) {
    let (k, l) = (g.k(), g.l());
    let pool = epilogue == Epilogue::ReluPool;
    let use_wino = winograd::applies(g, o);
    let u = if use_wino {
        winograd::weights(w, o, g.c)
    } else {
        Vec::new()
    };
    let rows = match (pool, use_wino) {
        (true, _) => Rows::Pooled,
        (false, true) => Rows::Pairs,
        (false, false) => Rows::Any,
    };
    let sizing = if use_wino {
        Sizing::Winograd
    } else {
        Sizing::Im2col
    };
    let plan = Plan::new(g, rayon::current_num_threads(), rows, sizing);
    let (ho2, wo2) = (g.ho / 2, g.wo / 2);
    let per_image = if pool { o * ho2 * wo2 } else { o * l };
    let mut y = zeros(g.n * per_image);
    let mut argmax = vec![0u8; if pool { g.n * per_image } else { 0 }];
    let parts = plan.split(&mut y, per_image);
    let arg_parts = plan.split(&mut argmax, if pool { per_image } else { 0 });
    plan.groups
        .par_iter()
        .zip(parts)
        .zip(arg_parts)
        .for_each(|((grp, ys), args)| {
            let (mut cols, mut prod, mut poly) = (Vec::new(), Vec::new(), Vec::new());
            let mut wino = winograd::Scratch::default();
            for blk in &grp.blocks {
                let (span, nc) = (blk.span(g), blk.cols(g));
                prod.resize(o * nc, T::zero());
                if use_wino {
                    winograd::block(x, &u, g, o, blk, &mut wino, &mut prod, plan.gemm_threads);
                } else {
                    cols.resize(k * nc, T::zero());
                    im2col_block(x, g, blk, &mut cols, &mut poly);
                    matmul(
                        MatMut::rows(&mut prod, o, nc, nc),
                        false,
                        Mat::rows(w, o, k, k),
                        Mat::rows(&cols, k, nc, nc),
                        plan.gemm_threads,
                    );
                }
                for bi in 0..blk.nb {
                    let image = blk.b0 + bi - grp.b0;
                    for oc in 0..o {
                        let src = &prod[oc * nc + bi * span..][..span];
                        let b = bias.map_or(T::zero(), |b| b[oc]);
                        if pool {
                            let first = (image * o + oc) * ho2 * wo2;
                            pool_rows(src, b, g.wo, blk, &mut ys[first..], &mut args[first..]);
                            continue;
                        }
                        let dst = &mut ys[(image * o + oc) * l + blk.oy0 * g.wo..][..span];
                        if epilogue == Epilogue::Relu {
                            for (d, &s) in dst.iter_mut().zip(src) {
                                let v = s + b;
                                *d = if v > T::zero() { v } else { T::zero() };
                            }
                        } else {
                            for (d, &s) in dst.iter_mut().zip(src) {
                                *d = s + b;
                            }
                        }
                    }
                }
            }
        });
    (y, argmax)
}

/// ReLU, then 2×2 max-pool, of one channel's rows `blk.oy0..blk.oy1` (`src`, `wo` wide, bias
/// `b` still to add) into the pooled plane `out` and its argmax record `args`. Exactly
/// `max_pool2d(relu(·))`: the first maximum of the ReLU'd window, row-major, takes the
/// gradient, and none is passed when that maximum is 0.
fn pool_rows<T: Float>(src: &[T], b: T, wo: usize, blk: &Block, out: &mut [T], args: &mut [u8]) {
    let wo2 = wo / 2;
    let relu = |v: T| {
        let v = v + b;
        if v > T::zero() { v } else { T::zero() }
    };
    for r in (0..blk.oy1 - blk.oy0).step_by(2) {
        let (top, bottom) = (&src[r * wo..][..wo], &src[(r + 1) * wo..][..wo]);
        let at = (blk.oy0 + r) / 2 * wo2;
        let (out, args) = (&mut out[at..][..wo2], &mut args[at..][..wo2]);
        for px in 0..wo2 {
            let c = 2 * px;
            let window = [top[c], top[c + 1], bottom[c], bottom[c + 1]];
            let (mut best, mut max) = (0, relu(window[0]));
            for (i, &v) in window.iter().enumerate().skip(1) {
                let v = relu(v);
                if v > max {
                    (best, max) = (i as u8, v);
                }
            }
            out[px] = max;
            args[px] = if max > T::zero() { best } else { NO_GRAD };
        }
    }
}

/// What the backward kernel gives: ∂x and ∂w (o, c·kh·kw) when asked for, and ∂bias when the
/// conv has one.
pub(super) struct Grads<T> {
    pub(super) x: Option<Vec<T>>,
    pub(super) w: Option<Vec<T>>,
    pub(super) bias: Option<Vec<T>>,
}

impl<T: Float> Grads<T> {
    /// ∂x (n, c, h, w), ∂w (o, c, kh, kw) and ∂bias (o) of the conv `g` with `o` output
    /// channels as CPU tensors; an error naming `op` when ∂w was not computed.
    pub(super) fn into_tensors(
        self,
        g: &Geometry,
        o: usize,
        op: &str,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let cpu = Device::Cpu;
        let Some(dw) = self.w else {
            candle_core::bail!("{op}: the backward gave no kernel gradient");
        };
        Ok((
            self.x
                .map(|dx| Tensor::from_vec(dx, (g.n, g.c, g.h, g.w), &cpu))
                .transpose()?,
            Tensor::from_vec(dw, (o, g.c, g.kh, g.kw), &cpu)?,
            self.bias
                .map(|db| Tensor::from_vec(db, o, &cpu))
                .transpose()?,
        ))
    }
}

/// Which gradients the backward kernel computes besides ∂bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Needs {
    /// ∂x, scattered back onto the input (col2im) or, for Winograd-sized convs, a second conv.
    pub(super) x: bool,
    /// ∂w, from the rebuilt input columns; without it the conv's input is never read (an empty
    /// slice will do), which is how a transposed conv's forward runs.
    pub(super) w: bool,
}

/// How the backward finds the gradient of the product: from the output gradient as is, masked
/// by the forward's ReLU output (passed only where `y > 0`, PyTorch's threshold rule), or routed
/// through the pooled node's argmax record.
#[derive(Clone, Copy)]
pub(super) enum Route<'a, T> {
    Plain,
    Relu(&'a [T]),
    Pool(&'a [u8]),
}

/// Copies a block's rows of the NCHW planes `src` (`o` channels of `g`'s output) into the
/// block's product layout `dst` (channel-major, `blk.cols(g)` columns per channel).
fn gather_block<T: Float>(src: &[T], g: &Geometry, blk: &Block, o: usize, dst: &mut [T]) {
    let (span, nc, l) = (blk.span(g), blk.cols(g), g.l());
    for bi in 0..blk.nb {
        for oc in 0..o {
            let at = ((blk.b0 + bi) * o + oc) * l + blk.oy0 * g.wo;
            dst[oc * nc + bi * span..][..span].copy_from_slice(&src[at..][..span]);
        }
    }
}

/// The inverse of [`gather_block`] into a thread's own images: the block's products `prod`
/// written to their rows of `ys`, whose first image is the batch's image `first`.
fn scatter_block<T: Float>(
    prod: &[T],
    g: &Geometry,
    blk: &Block,
    o: usize,
    ys: &mut [T],
    first: usize,
) {
    let (span, nc, l) = (blk.span(g), blk.cols(g), g.l());
    for bi in 0..blk.nb {
        let image = blk.b0 + bi - first;
        for oc in 0..o {
            ys[(image * o + oc) * l + blk.oy0 * g.wo..][..span]
                .copy_from_slice(&prod[oc * nc + bi * span..][..span]);
        }
    }
}

/// The per-thread partial sums added in thread order (not in the order threads finished), so
/// a result does not depend on scheduling; empty without any.
fn sum_in_thread_order<T: Float>(sums: impl IntoIterator<Item = Vec<T>>) -> Vec<T> {
    let mut sums = sums.into_iter();
    let mut total = sums.next().unwrap_or_default();
    for part in sums {
        total.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    total
}

/// The backward kernel: the gradients `needs` asks for, and ∂bias with `bias`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward<T: Float>(
    x: &[T],
    w: &[T],
    grad: &[T],
    route: Route<'_, T>,
    g: &Geometry,
    o: usize,
    bias: bool,
    needs: Needs,
) -> Grads<T> {
    let needs_x = needs.x;
    let (k, l) = (g.k(), g.l());
    // The kernel gradient of a Winograd-sized conv goes through the same transforms
    // ([`winograd::kernel_grad_block`]): its blocks start on even rows, as the forward's.
    // Only for a plain output gradient (the conv feeds a batch norm, a sum or a loss): behind
    // a fused ReLU or pool much of it is zero, some kernel taps' true gradient is then exactly
    // 0, and the transforms leave a rounding residue (≈ 1e-8) in its place, which Adam scales
    // up to a full step. With those too, Part 1 trained 1.0 px worse on average over seeds 0–9
    // (9 of 10 worse; NoseNet's pooled 15×20 and 7×10 convs); the direct sum keeps the zeros.
    let wino_dw = needs.w && matches!(route, Route::Plain) && winograd::applies(g, o);
    let rows = match route {
        Route::Pool(_) => Rows::Pooled,
        _ if wino_dw => Rows::Pairs,
        _ => Rows::Any,
    };
    let sizing = match (needs.w, wino_dw) {
        (true, true) => Sizing::WinogradGrad,
        (true, false) => Sizing::KernelGradient { o },
        (false, _) => Sizing::Im2col,
    };
    let plan = Plan::new(g, rayon::current_num_threads(), rows, sizing);
    let (ho2, wo2) = (g.ho / 2, g.wo / 2);
    // The input gradient of a Winograd-sized conv is itself such a conv, of the routed output
    // gradient with the flipped weights: the blocks then collect that gradient instead of
    // scattering Wᵀ·∂Y onto the input (col2im).
    let wino_dx = needs_x && winograd::applies(g, o) && g.padding <= 2;
    // Without a ReLU or pool the routed gradient is the output gradient itself: nothing to
    // collect.
    let collect = wino_dx && !matches!(route, Route::Plain);
    let write = needs_x && (collect || !wino_dx);
    let per_image = if wino_dx { o * l } else { g.c * g.h * g.w };
    let mut out = if write {
        zeros(g.n * per_image)
    } else {
        Vec::new()
    };
    let parts: Vec<Option<&mut [T]>> = if write {
        plan.split(&mut out, per_image)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        plan.groups.iter().map(|_| None).collect()
    };
    // Nothing for the blocks to do when only a Winograd ∂x of the plain gradient is asked for.
    let walk = needs.w || bias || write;
    let groups = if walk { &plan.groups[..] } else { &[] };
    let sums: Vec<(Vec<T>, Vec<T>)> = groups
        .par_iter()
        .zip(parts)
        .map(|(grp, mut outs)| {
            // ∂W, or its 16 transformed matrices when `wino_dw`.
            let mut dw = zeros(match (needs.w, wino_dw) {
                (true, true) => 16 * o * g.c,
                (true, false) => o * k,
                (false, _) => 0,
            });
            let mut db = zeros(if bias { o } else { 0 });
            let (mut cols, mut gy, mut poly) = (Vec::new(), Vec::new(), Vec::new());
            let mut wino = winograd::Scratch::default();
            for blk in &grp.blocks {
                let (span, nc) = (blk.span(g), blk.cols(g));
                gy.resize(o * nc, T::zero());
                for bi in 0..blk.nb {
                    for oc in 0..o {
                        let dst = &mut gy[oc * nc + bi * span..][..span];
                        let plane = (blk.b0 + bi) * o + oc;
                        let at = plane * l + blk.oy0 * g.wo;
                        match route {
                            Route::Plain => dst.copy_from_slice(&grad[at..][..span]),
                            Route::Relu(y) => {
                                let (src, y) = (&grad[at..][..span], &y[at..][..span]);
                                for ((d, &s), &v) in dst.iter_mut().zip(src).zip(y) {
                                    *d = if v > T::zero() { s } else { T::zero() };
                                }
                            }
                            Route::Pool(args) => {
                                dst.fill(T::zero());
                                for r in (0..blk.oy1 - blk.oy0).step_by(2) {
                                    let at = plane * ho2 * wo2 + (blk.oy0 + r) / 2 * wo2;
                                    let (src, args) = (&grad[at..][..wo2], &args[at..][..wo2]);
                                    for (px, (&s, &a)) in src.iter().zip(args).enumerate() {
                                        if a != NO_GRAD {
                                            let (dy, dx) = (usize::from(a / 2), usize::from(a % 2));
                                            dst[(r + dy) * g.wo + 2 * px + dx] = s;
                                        }
                                    }
                                }
                            }
                        }
                        if bias {
                            db[oc] += dst.iter().fold(T::zero(), |a, &v| a + v);
                        }
                    }
                }
                if wino_dw {
                    winograd::kernel_grad_block(
                        x,
                        &gy,
                        g,
                        o,
                        blk,
                        &mut wino,
                        &mut dw,
                        plan.gemm_threads,
                    );
                } else if needs.w {
                    cols.resize(k * nc, T::zero());
                    im2col_block(x, g, blk, &mut cols, &mut poly);
                    matmul(
                        MatMut::rows(&mut dw, o, k, k),
                        true,
                        Mat::rows(&gy, o, nc, nc),
                        Mat::rows(&cols, k, nc, nc).t(),
                        plan.gemm_threads,
                    );
                }
                if let (true, Some(routed)) = (wino_dx, outs.as_deref_mut()) {
                    scatter_block(&gy, g, blk, o, routed, grp.b0);
                } else if let Some(dxs) = outs.as_deref_mut() {
                    cols.resize(k * nc, T::zero());
                    matmul(
                        MatMut::rows(&mut cols, k, nc, nc),
                        false,
                        Mat::rows(w, o, k, k).t(),
                        Mat::rows(&gy, o, nc, nc),
                        plan.gemm_threads,
                    );
                    col2im_block(&cols, g, blk, dxs, grp.b0, &mut poly);
                }
            }
            (dw, db)
        })
        .collect();
    // Empty only when the blocks had nothing to do (no ∂w, no ∂bias): then none is returned.
    let (dws, dbs): (Vec<_>, Vec<_>) = sums.into_iter().unzip();
    let (mut dw, db) = (sum_in_thread_order(dws), sum_in_thread_order(dbs));
    if wino_dw {
        dw = winograd::kernel_grad(&dw, o, g.c);
    }
    let dx = if wino_dx {
        let gx = Geometry {
            n: g.n,
            c: o,
            h: g.ho,
            w: g.wo,
            kh: 3,
            kw: 3,
            stride: 1,
            padding: 2 - g.padding,
            ho: g.h,
            wo: g.w,
        };
        let flipped = winograd::flipped(w, o, g.c);
        let routed = if collect { &out[..] } else { grad };
        Some(forward(routed, &flipped, None, &gx, g.c, Epilogue::None).0)
    } else {
        needs_x.then_some(out)
    };
    Grads {
        x: dx,
        w: needs.w.then_some(dw),
        bias: bias.then_some(db),
    }
}

/// The conv's forward of `x` (no bias or epilogue) and its kernel gradient for the output
/// gradient `dy`, in one pass that builds each block's column matrix once for both products:
/// `y = W·cols`, `∂W += ∂Y·colsᵀ`. A transposed conv's backward is exactly this pair (its ∂x is
/// the conv's forward of the output gradient, its ∂W this kernel gradient; see `convt`), and
/// two separate passes rebuilt the same columns. ∂W is summed per thread, then in thread order,
/// with the blocks of [`backward`]'s kernel gradient, so it equals that function's to the bit.
/// Not for Winograd-sized convs (`None`): their forward does not build columns.
pub(super) fn forward_and_kernel_grad<T: Float>(
    x: &[T],
    w: &[T],
    dy: &[T],
    g: &Geometry,
    o: usize,
) -> Option<(Vec<T>, Vec<T>)> {
    if winograd::applies(g, o) {
        return None;
    }
    let (k, l) = (g.k(), g.l());
    let plan = Plan::new(
        g,
        rayon::current_num_threads(),
        Rows::Any,
        Sizing::KernelGradient { o },
    );
    let mut y = zeros(g.n * o * l);
    let parts = plan.split(&mut y, o * l);
    let sums: Vec<Vec<T>> = plan
        .groups
        .par_iter()
        .zip(parts)
        .map(|(grp, ys)| {
            let mut dw = zeros(o * k);
            let (mut cols, mut prod, mut gy, mut poly) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for blk in &grp.blocks {
                let nc = blk.cols(g);
                cols.resize(k * nc, T::zero());
                im2col_block(x, g, blk, &mut cols, &mut poly);
                prod.resize(o * nc, T::zero());
                matmul(
                    MatMut::rows(&mut prod, o, nc, nc),
                    false,
                    Mat::rows(w, o, k, k),
                    Mat::rows(&cols, k, nc, nc),
                    plan.gemm_threads,
                );
                scatter_block(&prod, g, blk, o, ys, grp.b0);
                gy.resize(o * nc, T::zero());
                gather_block(dy, g, blk, o, &mut gy);
                matmul(
                    MatMut::rows(&mut dw, o, k, k),
                    true,
                    Mat::rows(&gy, o, nc, nc),
                    Mat::rows(&cols, k, nc, nc).t(),
                    plan.gemm_threads,
                );
            }
            dw
        })
        .collect();
    Some((y, sum_in_thread_order(sums)))
}

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
        let y = super::cuda::cudnn::conv(x, weight, g, o, false)?;
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
            Epilogue::Relu => super::relu(&y),
            Epilogue::ReluPool => super::max_pool2d(&super::relu(&y)?, 2, 2, 0),
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
            Epilogue::ReluPool => super::max_pool2d(&y.relu()?, 2, 2, 0),
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
    use crate::ops::testutil::{max_diff, on_threads, random, weighted_grads};
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
        ] {
            let grid = |t: Tensor| (t * 2.0).unwrap().round().unwrap() / 2.0;
            let x = Var::from_tensor(&grid(random(&[n, c, h, w], &mut rng)).unwrap()).unwrap();
            let wt = Var::from_tensor(&grid(random(&[4, c, k, k], &mut rng)).unwrap()).unwrap();
            let b = Var::from_tensor(&grid(random(&[4], &mut rng)).unwrap()).unwrap();
            let theirs = crate::ops::max_pool2d(
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

    /// 3×3 stride-1 convs with 16 or more channels and 256 or more output pixels per image, or
    /// 128 or more channels and 64 or more pixels, run through Winograd F(2×2, 3×3) (a 7×9
    /// output does not), the input gradient through a second one and the kernel gradient of a
    /// plain output gradient through its transpose: forward and every gradient equal Candle's
    /// conv (f64), with paddings 0 to 2, odd and even sizes, row blocks and multi-image blocks,
    /// the ReLU and the pooled epilogue, on 1 to 3 threads.
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
                        crate::ops::max_pool2d(&conv.relu().unwrap(), 2, 2, 0).unwrap()
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
        let theirs = kernel_grad(&crate::ops::max_pool2d(&theirs, 2, 2, 0).unwrap());
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
