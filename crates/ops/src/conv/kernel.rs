//! The convolution's CPU kernels: the blocked forward (with the bias, ReLU and 2×2 pool
//! epilogues fused), the backward (input and kernel gradients through the same blocks, per-thread
//! sums in thread order), and the forward with the kernel gradient that the transposed
//! convolution's backward needs.

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

use crate::conv::im2col::*;
use crate::conv::plan::*;
use crate::conv::winograd;
use crate::gemm::{Float, Mat, MatMut, matmul};
use crate::simd;
use crate::storage::zeros;

/// In a pooled node's argmax record: the window's maximum is not positive, so the ReLU passes
/// no gradient to any of its four pixels.
pub(crate) const NO_GRAD: u8 = u8::MAX;

/// The forward kernel: x (n, c, h, w), w (o, c·kh·kw), bias (o) → y (n, o, ho, wo), or
/// (n, o, ho/2, wo/2) pooled, with the pooled node's argmax record (window position 0..4 of
/// each output's maximum, row-major, or [`NO_GRAD`]).
pub(crate) fn forward<T: Float>(
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
    let plane = if pool { ho2 * wo2 } else { l };
    let per_image = o * plane;
    let mut y = zeros(g.n * per_image);
    let mut argmax = vec![0u8; if pool { g.n * per_image } else { 0 }];
    // Where a block's rows start and end in one output plane.
    let range = |blk: &Block| {
        if pool {
            (blk.oy0 / 2 * wo2, blk.oy1 / 2 * wo2)
        } else {
            (blk.oy0 * g.wo, blk.oy1 * g.wo)
        }
    };
    // The block's product with `o` output channels' weights (`w`, or `u` transformed).
    let product = |blk: &Block, s: &mut Scratch<T>, w: &[T], u: &[T], o: usize, threads: usize| {
        let nc = blk.cols(g);
        s.prod.resize(o * nc, T::zero());
        if use_wino {
            winograd::block(x, u, g, o, blk, &mut s.wino, &mut s.prod, threads);
        } else {
            s.cols.resize(k * nc, T::zero());
            im2col_block(x, g, blk, &mut s.cols, &mut s.poly);
            matmul(
                MatMut::rows(&mut s.prod, o, nc, nc),
                false,
                Mat::rows(w, o, k, k),
                Mat::rows(&s.cols, k, nc, nc),
                threads,
            );
        }
    };
    // Bias and epilogue of image `bi`'s product row `row` (output channel `oc`) into `dst`
    // (and `args`), which start at the block's first output row in that channel's plane.
    // (A macro, not a closure, so that it is inlined into the workers' `simd::dispatch`.)
    macro_rules! finish {
        ($s:expr, $blk:expr, $bi:expr, $row:expr, $oc:expr, $dst:expr, $args:expr) => {{
            let (s, blk): (&Scratch<T>, &Block) = ($s, $blk);
            let span = blk.span(g);
            let src = &s.prod[$row * blk.cols(g) + $bi * span..][..span];
            let b = bias.map_or(T::zero(), |b| b[$oc]);
            epilogue_rows(epilogue, src, b, g, blk, $dst, $args);
        }};
    }
    let threads = plan.gemm_threads;
    if threads > 1 && o >= CHANNEL_SPLIT_MIN * threads && o >= g.n * l {
        // Fewer units than threads, and more weights than columns (the deep layers of a
        // single face): each thread takes a share of the output channels for every block,
        // so the threads read the weights once between them.
        let shares: Vec<(usize, usize)> = (0..threads)
            .map(|t| (t * o / threads, (t + 1) * o / threads))
            .collect();
        let ys = cut_channels(&mut y, g.n, o, plane, &shares);
        let arg_parts = if pool {
            cut_channels(&mut argmax, g.n, o, plane, &shares)
        } else {
            shares.iter().map(|_| Vec::new()).collect()
        };
        let blocks: Vec<Block> = plan
            .groups
            .iter()
            .flat_map(|grp| grp.blocks.clone())
            .collect();
        shares
            .par_iter()
            .zip(ys)
            .zip(arg_parts)
            .for_each(|((&(o0, o1), mut ys), mut args)| {
                simd::dispatch(
                    #[inline(always)]
                    || {
                        let (w, n_oc) = (&w[o0 * k..o1 * k], o1 - o0);
                        let u = if use_wino {
                            winograd::weights(w, n_oc, g.c)
                        } else {
                            Vec::new()
                        };
                        let mut s = Scratch::default();
                        for blk in &blocks {
                            product(blk, &mut s, w, &u, n_oc, 1);
                            let (lo, _) = range(blk);
                            for bi in 0..blk.nb {
                                let image = blk.b0 + bi;
                                for row in 0..n_oc {
                                    let at = row * plane + lo;
                                    let args = if pool {
                                        &mut args[image][at..]
                                    } else {
                                        &mut [][..]
                                    };
                                    finish!(&s, blk, bi, row, o0 + row, &mut ys[image][at..], args);
                                }
                            }
                        }
                    },
                )
            });
        return (y, argmax);
    }
    let u = if use_wino {
        winograd::weights(w, o, g.c)
    } else {
        Vec::new()
    };
    if let Some(blocks) = plan.row_blocks(g, rows) {
        // Fewer units than threads: each block on one thread, into its own rows of each plane.
        let ys = cut_rows(&mut y, o, plane, &blocks, range);
        let mut arg_parts = if pool {
            cut_rows(&mut argmax, o, plane, &blocks, range)
        } else {
            blocks.iter().map(|_| Vec::new()).collect()
        };
        for parts in &mut arg_parts {
            parts.resize_with(o, Default::default);
        }
        blocks.par_iter().zip(ys).zip(arg_parts).for_each_init(
            Scratch::default,
            |s, ((blk, mut ys), mut args)| {
                simd::dispatch(
                    #[inline(always)]
                    || {
                        product(blk, s, w, &u, o, 1);
                        for (oc, (dst, args)) in ys.iter_mut().zip(args.iter_mut()).enumerate() {
                            finish!(s, blk, 0, oc, oc, dst, args);
                        }
                    },
                )
            },
        );
        return (y, argmax);
    }
    let parts = plan.split(&mut y, per_image);
    let arg_parts = plan.split(&mut argmax, if pool { per_image } else { 0 });
    plan.groups
        .par_iter()
        .zip(parts)
        .zip(arg_parts)
        .for_each(|((grp, ys), args)| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let mut s = Scratch::default();
                    for blk in &grp.blocks {
                        product(blk, &mut s, w, &u, o, threads);
                        let (lo, _) = range(blk);
                        for bi in 0..blk.nb {
                            let image = blk.b0 + bi - grp.b0;
                            for oc in 0..o {
                                let at = (image * o + oc) * plane + lo;
                                let args = if pool { &mut args[at..] } else { &mut [][..] };
                                finish!(&s, blk, bi, oc, oc, &mut ys[at..], args);
                            }
                        }
                    }
                },
            )
        });
    (y, argmax)
}

/// The bias and `epilogue` of one output channel's block rows `src` into `dst` (and `args`),
/// which start at the block's first output row in that channel's plane. Inlined into the
/// forward's workers, which run at the CPU's widest vector level.
#[inline(always)]
fn epilogue_rows<T: Float>(
    epilogue: Epilogue,
    src: &[T],
    b: T,
    g: &Geometry,
    blk: &Block,
    dst: &mut [T],
    args: &mut [u8],
) {
    match epilogue {
        Epilogue::ReluPool => pool_rows(src, b, g.wo, blk, dst, args),
        Epilogue::Relu => {
            for (d, &s) in dst[..src.len()].iter_mut().zip(src) {
                let v = s + b;
                *d = if v > T::zero() { v } else { T::zero() };
            }
        }
        Epilogue::None => {
            for (d, &s) in dst[..src.len()].iter_mut().zip(src) {
                *d = s + b;
            }
        }
    }
}

/// The fewest output channels per thread for the forward to split a few images' channels
/// among the threads rather than their rows.
const CHANNEL_SPLIT_MIN: usize = 16;

/// `data`'s planes (`plane` elements each, `o` per image, `n` images) cut into the channel
/// ranges `shares`, which run from 0 to `o` in order: for each share, its run of planes in
/// every image.
fn cut_channels<'a, U>(
    data: &'a mut [U],
    n: usize,
    o: usize,
    plane: usize,
    shares: &[(usize, usize)],
) -> Vec<Vec<&'a mut [U]>> {
    let mut out: Vec<Vec<&'a mut [U]>> = shares.iter().map(|_| Vec::with_capacity(n)).collect();
    debug_assert!(shares.windows(2).all(|p| p[0].1 == p[1].0));
    debug_assert_eq!((shares[0].0, shares[shares.len() - 1].1), (0, o));
    let mut rest = data;
    for _ in 0..n {
        for (i, &(o0, o1)) in shares.iter().enumerate() {
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut((o1 - o0) * plane);
            out[i].push(piece);
            rest = tail;
        }
    }
    out
}

/// A forward block's scratch: its column matrix, polyphase planes, Winograd tiles and product.
struct Scratch<T> {
    cols: Vec<T>,
    poly: Vec<T>,
    wino: winograd::Scratch<T>,
    prod: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Self {
            cols: Vec::new(),
            poly: Vec::new(),
            wino: winograd::Scratch::default(),
            prod: Vec::new(),
        }
    }
}

/// `data`'s planes (`plane` elements each, `o` per image) cut into each block's rows, `range`
/// giving where a block starts and ends in a plane: one slice per output channel for every
/// block, in block order. The blocks of an image cover disjoint, ascending row ranges.
fn cut_rows<'a, U>(
    data: &'a mut [U],
    o: usize,
    plane: usize,
    blocks: &[Block],
    range: impl Fn(&Block) -> (usize, usize),
) -> Vec<Vec<&'a mut [U]>> {
    let mut out: Vec<Vec<&'a mut [U]>> = blocks.iter().map(|_| Vec::with_capacity(o)).collect();
    if plane == 0 {
        return out;
    }
    for (p, mut rest) in data.chunks_mut(plane).enumerate() {
        let mut pos = 0;
        for (i, blk) in blocks.iter().enumerate().filter(|(_, b)| b.b0 == p / o) {
            let (lo, hi) = range(blk);
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(lo - pos);
            let (piece, tail) = tail.split_at_mut(hi - lo);
            out[i].push(piece);
            (rest, pos) = (tail, hi);
        }
    }
    out
}

/// ReLU, then 2×2 max-pool, of one channel's rows `blk.oy0..blk.oy1` (`src`, `wo` wide, bias
/// `b` still to add) into the pooled plane's rows from `blk.oy0 / 2` on (`out`, and its argmax
/// record `args`, start there). Exactly
/// `max_pool2d(relu(·))`: the first maximum of the ReLU'd window, row-major, takes the
/// gradient, and none is passed when that maximum is 0. Inlined into the forward's workers,
/// which run at the CPU's widest vector level (its selects need AVX2 or AVX-512 to vectorise).
#[inline(always)]
pub(crate) fn pool_rows<T: Float>(
    src: &[T],
    b: T,
    wo: usize,
    blk: &Block,
    out: &mut [T],
    args: &mut [u8],
) {
    let wo2 = wo / 2;
    let relu = |v: T| {
        let v = v + b;
        if v > T::zero() { v } else { T::zero() }
    };
    for r in (0..blk.oy1 - blk.oy0).step_by(2) {
        let (top, bottom) = (&src[r * wo..][..wo], &src[(r + 1) * wo..][..wo]);
        let at = r / 2 * wo2;
        let (out, args) = (&mut out[at..][..wo2], &mut args[at..][..wo2]);
        // Branch-free (selects, which compile to blends or conditional moves): the first
        // maximum of each pair, then of the two pairs, is the window's first maximum, as
        // `v > max` scanning in row-major order finds it (ReLU'd values are never NaN).
        let pairs = top.chunks_exact(2).zip(bottom.chunks_exact(2));
        for ((o, a), (t, u)) in out.iter_mut().zip(args.iter_mut()).zip(pairs) {
            let (v0, v1, v2, v3) = (relu(t[0]), relu(t[1]), relu(u[0]), relu(u[1]));
            let (m01, i01) = if v1 > v0 { (v1, 1u8) } else { (v0, 0u8) };
            let (m23, i23) = if v3 > v2 { (v3, 3u8) } else { (v2, 2u8) };
            let (max, best) = if m23 > m01 { (m23, i23) } else { (m01, i01) };
            *o = max;
            *a = if max > T::zero() { best } else { NO_GRAD };
        }
    }
}

/// What the backward kernel gives: ∂x and ∂w (o, c·kh·kw) when asked for, and ∂bias when the
/// conv has one.
pub(crate) struct Grads<T> {
    pub(crate) x: Option<Vec<T>>,
    pub(crate) w: Option<Vec<T>>,
    pub(crate) bias: Option<Vec<T>>,
}

impl<T: Float> Grads<T> {
    /// ∂x (n, c, h, w), ∂w (o, c, kh, kw) and ∂bias (o) of the conv `g` with `o` output
    /// channels as CPU tensors; an error naming `op` when ∂w was not computed.
    pub(crate) fn into_tensors(
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
pub(crate) struct Needs {
    /// ∂x, scattered back onto the input (col2im) or, for Winograd-sized convs, a second conv.
    pub(crate) x: bool,
    /// ∂w, from the rebuilt input columns; without it the conv's input is never read (an empty
    /// slice will do), which is how a transposed conv's forward runs.
    pub(crate) w: bool,
}

/// How the backward finds the gradient of the product: from the output gradient as is, masked
/// by the forward's ReLU output (passed only where `y > 0`, PyTorch's threshold rule), or routed
/// through the pooled node's argmax record.
#[derive(Clone, Copy)]
pub(crate) enum Route<'a, T> {
    Plain,
    Relu(&'a [T]),
    Pool(&'a [u8]),
}

/// The per-thread partial sums added in thread order (not in the order threads finished), so
/// a result does not depend on scheduling; empty without any.
pub(crate) fn sum_in_thread_order<T: Float>(sums: impl IntoIterator<Item = Vec<T>>) -> Vec<T> {
    let mut sums = sums.into_iter();
    let mut total = sums.next().unwrap_or_default();
    for part in sums {
        total.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    total
}

/// The backward kernel: the gradients `needs` asks for, and ∂bias with `bias`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Float>(
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
pub(crate) fn forward_and_kernel_grad<T: Float>(
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
