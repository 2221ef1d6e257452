//! Winograd's minimal filtering F(2×2, 3×3) for the stride-1 3×3 convolutions that carry most
//! of ResNet-18's work: each 2×2 output tile costs 16 multiplies per (input, output) channel
//! pair instead of 36, as 16 independent matrix products `M[ξ] = U[ξ]·V[ξ]` between the
//! transformed weights `U = G·g·Gᵀ` (o × c per ξ) and the transformed input tiles
//! `V = Bᵀ·d·B` (c × tiles per ξ), followed by the output transform `Y = Aᵀ·M·A` (Lavin and
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). With the points 0, ±1
//! and ∞ every transform is adds and halvings, so the result differs from the direct
//! convolution only by float rounding (checked against it in the tests).
//!
//! A block of output rows (an even number, starting on an even row) is computed into the same
//! (o × cols) product layout as the im2col path, so the caller's epilogue (bias, ReLU, pool)
//! is shared. The input gradient of such a convolution is again one (see [`flipped`]). The
//! kernel gradient runs through the same transforms backwards ([`kernel_grad_block`], then
//! [`kernel_grad`]): the output gradient's tiles are carried back through the output
//! transform, multiplied by the input tiles over the batch in 16 products of (o × c), and the
//! sum carried back through the weight transform; 16 multiply-adds per tile and channel pair
//! instead of 36.
//!
//! The transforms run in one of two ways, chosen per layer ([`channels_last`]): along tile
//! rows of the NCHW input (narrow layers on large maps), or across channels after laying the
//! block's input out channel-last (wide layers on small maps, whose tile rows are a few tiles
//! long). The arithmetic is the same either way.

use crate::conv::plan::{Block, Geometry};
use crate::gemm::{Float, Mat, MatMut, matmul};
use rayon::prelude::*;

/// Whether a convolution runs through Winograd: 3×3, stride 1, and enough channels and output
/// pixels that the 16 products are not dominated by the transforms. The same bound serves the
/// kernel gradient ([`kernel_grad_block`]).
pub(crate) fn applies(g: &Geometry, o: usize) -> bool {
    let (plane, channels) = (g.ho * g.wo, g.c.min(o));
    (g.kh, g.kw, g.stride) == (3, 3, 1)
        && channels >= MIN_CHANNELS
        && (plane >= MIN_PLANE
            || (plane >= MIN_SMALL_PLANE && channels >= MIN_SMALL_PLANE_CHANNELS))
}

/// From this many output pixels per image (16×16) on, Winograd serves any conv of at least
/// [`MIN_CHANNELS`] channels each way.
const MIN_PLANE: usize = 256;

/// Down to this many output pixels per image (8×8), Winograd serves convs of at least
/// [`MIN_SMALL_PLANE_CHANNELS`] channels each way: the transforms cost about (c + o) per pixel
/// against the products' c·o, so on small maps only wide layers repay them. Measured on two
/// cores with [`block_channels_last`], Part 4's deconv net (128-pixel input, batch
/// 16): the 256×8×8 stage ran about 30% faster forward and 15% faster backward than by
/// im2col. At 4×4 (its 512-channel stage) the 2×2 tile grid gained nothing: half its input
/// tiles are padding, and the 16·o·c transformed weights outweigh the few tiles they serve.
const MIN_SMALL_PLANE: usize = 64;

/// See [`MIN_SMALL_PLANE`].
const MIN_SMALL_PLANE_CHANNELS: usize = 128;

/// Below this many input or output channels the im2col path is used.
const MIN_CHANNELS: usize = 16;

/// `U = G·g·Gᵀ` for every (output, input) channel pair of `w` (o, c, 3, 3): for output channel
/// `oc` and tile position ξ, the row `U[ξ][oc][..]` of the (o × c) matrix `U[ξ]` is the run
/// `u[(oc·16 + ξ)·c..][..c]` ([`u_mat`]), so each output channel's 16 rows are one contiguous
/// run, computed in parallel over output channels and, within one, as whole rows across the
/// input channels (so it vectorises).
pub(crate) fn weights<T: Float>(w: &[T], o: usize, c: usize) -> Vec<T> {
    let mut u = vec![T::zero(); 16 * o * c];
    u.par_chunks_mut(16 * c)
        .zip(w.par_chunks(9 * c))
        .take(o)
        .for_each_init(
            || vec![T::zero(); 21 * c],
            |scratch, (uo, wo)| weights_row(wo, c, uo, scratch),
        );
    u
}

/// `out[i] = f(a[i], b[i], d[i])`.
#[inline(always)]
fn comb3<T: Float>(out: &mut [T], a: &[T], b: &[T], d: &[T], f: impl Fn(T, T, T) -> T) {
    for (((o, &a), &b), &d) in out.iter_mut().zip(a).zip(b).zip(d) {
        *o = f(a, b, d);
    }
}

/// One output channel's 16 transformed rows (`uo`, 16·c) from its kernels `wo` (c, 3, 3), with
/// `scratch` (21·c) for the taps as rows across the input channels and for `G·g`.
fn weights_row<T: Float>(wo: &[T], c: usize, uo: &mut [T], scratch: &mut [T]) {
    let half = T::from_f64(0.5);
    let (wt, gg) = scratch.split_at_mut(9 * c);
    // Tap k of every input channel as one row: wt[k][ci].
    for (ci, taps) in wo.chunks_exact(9).enumerate() {
        for (k, &v) in taps.iter().enumerate() {
            wt[k * c + ci] = v;
        }
    }
    fn row<T>(d: &[T], i: usize, c: usize) -> &[T] {
        &d[i * c..][..c]
    }
    // G·g: 4 × 3 rows, gg[i][j] at (3·i + j)·c; column j of g is the taps (j, 3 + j, 6 + j).
    for j in 0..3 {
        let (a, b, d) = (row(wt, j, c), row(wt, 3 + j, c), row(wt, 6 + j, c));
        comb3(&mut gg[j * c..][..c], a, b, d, |a, _, _| a);
        comb3(&mut gg[(3 + j) * c..][..c], a, b, d, |a, b, d| {
            (a + b + d) * half
        });
        comb3(&mut gg[(6 + j) * c..][..c], a, b, d, |a, b, d| {
            (a - b + d) * half
        });
        comb3(&mut gg[(9 + j) * c..][..c], a, b, d, |_, _, d| d);
    }
    // (G·g)·Gᵀ: row i of G·g gives U[4i + j] for j = 0..4.
    for i in 0..4 {
        let (a, b, d) = (
            row(gg, 3 * i, c),
            row(gg, 3 * i + 1, c),
            row(gg, 3 * i + 2, c),
        );
        let out = &mut uo[4 * i * c..][..4 * c];
        let (o0, rest) = out.split_at_mut(c);
        let (o1, rest) = rest.split_at_mut(c);
        let (o2, o3) = rest.split_at_mut(c);
        comb3(o0, a, b, d, |a, _, _| a);
        comb3(o1, a, b, d, |a, b, d| (a + b + d) * half);
        comb3(o2, a, b, d, |a, b, d| (a - b + d) * half);
        comb3(o3, a, b, d, |_, _, d| d);
    }
}

/// `U[ξ]` (o × c) of [`weights`]' output, as a strided view.
fn u_mat<T>(u: &[T], xi: usize, o: usize, c: usize) -> Mat<'_, T> {
    Mat::rows(&u[xi * c..], o, c, 16 * c)
}

/// The weights of the input-gradient convolution: `w` (o, c, 3, 3) with input and output
/// channels swapped and each kernel turned by 180°, (c, o, 3, 3). With padding `2 − p` it maps
/// an (o, ho, wo) output gradient to the (c, h, w) input gradient.
pub(crate) fn flipped<T: Float>(w: &[T], o: usize, c: usize) -> Vec<T> {
    let mut f = vec![T::zero(); o * c * 9];
    for oc in 0..o {
        for ci in 0..c {
            let src = &w[(oc * c + ci) * 9..][..9];
            let dst = &mut f[(ci * o + oc) * 9..][..9];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[8 - i];
            }
        }
    }
    f
}

/// The block's grid of 2×2 output tiles per image: (tile rows, tiles per row), the last row or
/// column of tiles clipped where the block's height or the map's width is odd.
fn tile_grid(g: &Geometry, blk: &Block) -> (usize, usize) {
    ((blk.oy1 - blk.oy0).div_ceil(2), g.wo.div_ceil(2))
}

/// Whether a conv's transforms sweep across channels ([`block_channels_last`],
/// [`kernel_grad_block_channels_last`]) rather than along tile rows ([`block_rows`],
/// [`kernel_grad_block_rows`]): for wide layers, whose maps are small. Measured on two
/// cores, Part 4's deconv net at batch 16: the 128×16×16 and 256×8×8 stages ran 10% and
/// 30% faster across channels, the 64×32×32 stage 10–15% slower (its tile rows are 16 tiles
/// long, its channel sweeps 64).
fn channels_last(g: &Geometry, o: usize) -> bool {
    g.c.min(o) >= MIN_SMALL_PLANE_CHANNELS
}

/// One block's product (o × `blk.cols(g)`, image-major, rows `blk.oy0..blk.oy1` of each
/// image) by F(2×2, 3×3), with `s` as scratch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block<T: Float>(
    x: &[T],
    u: &[T],
    g: &Geometry,
    o: usize,
    blk: &Block,
    s: &mut Scratch<T>,
    prod: &mut [T],
    threads: usize,
) {
    if channels_last(g, o) {
        block_channels_last(x, u, g, o, blk, s, prod, threads);
    } else {
        block_rows(x, u, g, o, blk, &mut s.v, &mut s.m, prod, threads);
    }
}

/// Adds one block's share of the transformed kernel gradient to `du` (16 row-major (o × c)
/// matrices, one per ξ), with `s` as scratch; [`kernel_grad`] after the last block.
#[allow(clippy::too_many_arguments)]
pub(crate) fn kernel_grad_block<T: Float>(
    x: &[T],
    gy: &[T],
    g: &Geometry,
    o: usize,
    blk: &Block,
    s: &mut Scratch<T>,
    du: &mut [T],
    threads: usize,
) {
    if channels_last(g, o) {
        kernel_grad_block_channels_last(x, gy, g, o, blk, s, du, threads);
    } else {
        kernel_grad_block_rows(x, gy, g, o, blk, &mut s.v, &mut s.m, du, threads);
    }
}

/// The block's transformed input tiles into `v`: 16 row-major (c × tiles) matrices
/// `V[ξ] = (Bᵀ·d·B)[ξ]`, one column per 2×2 output tile (image-major, then tile row, then tile
/// column), and the number of tiles.
fn input_tiles_rows<T: Float>(x: &[T], g: &Geometry, blk: &Block, v: &mut Vec<T>) -> usize {
    let c = g.c;
    let (trows, tw) = tile_grid(g, blk);
    let tiles = blk.nb * trows * tw;
    v.resize(16 * c * tiles, T::zero());
    let pad = g.padding as isize;
    // Input transform: V[ξ][ci][t] = (Bᵀ·d·B)[ξ] of the 4×4 patch under tile t, one row of
    // tiles at a time, with every step a contiguous run (so it vectorises): the four input rows
    // under the tile row, zero-padded and split into even and odd columns (tile tx starts at
    // column 2·tx), Bᵀ's combinations of the rows, then B's along them, written to 16
    // contiguous runs of V.
    let half = tw + 1;
    // One padded input row; [even | odd] halves of the 4 rows, then of their Bᵀ combinations.
    let mut padded = vec![T::zero(); 2 * half];
    let mut d = vec![T::zero(); 8 * half];
    let mut bd = vec![T::zero(); 8 * half];
    for bi in 0..blk.nb {
        for ci in 0..c {
            let plane = &x[((blk.b0 + bi) * c + ci) * g.h * g.w..][..g.h * g.w];
            for tr in 0..trows {
                let iy0 = (blk.oy0 + 2 * tr) as isize - pad;
                for (r, row) in d.chunks_exact_mut(2 * half).enumerate() {
                    let iy = iy0 + r as isize;
                    if iy < 0 || iy as usize >= g.h {
                        row.fill(T::zero());
                        continue;
                    }
                    // Padded column q is input column q − pad.
                    let (lo, hi) = (g.padding.min(2 * half), (g.w + g.padding).min(2 * half));
                    if lo < hi {
                        padded[..lo].fill(T::zero());
                        padded[lo..hi].copy_from_slice(&plane[iy as usize * g.w..][..hi - lo]);
                        padded[hi..].fill(T::zero());
                    } else {
                        padded.fill(T::zero());
                    }
                    let (even, odd) = row.split_at_mut(half);
                    for (k, (e, od)) in even.iter_mut().zip(odd.iter_mut()).enumerate() {
                        *e = padded[2 * k];
                        *od = padded[2 * k + 1];
                    }
                }
                let (r0, rest) = d.split_at(2 * half);
                let (r1, rest) = rest.split_at(2 * half);
                let (r2, r3) = rest.split_at(2 * half);
                let (b0, rest) = bd.split_at_mut(2 * half);
                let (b1, rest) = rest.split_at_mut(2 * half);
                let (b2, b3) = rest.split_at_mut(2 * half);
                for ((d, &a), &b) in b0.iter_mut().zip(r0).zip(r2) {
                    *d = a - b;
                }
                for ((d, &a), &b) in b1.iter_mut().zip(r1).zip(r2) {
                    *d = a + b;
                }
                for ((d, &a), &b) in b2.iter_mut().zip(r2).zip(r1) {
                    *d = a - b;
                }
                for ((d, &a), &b) in b3.iter_mut().zip(r1).zip(r3) {
                    *d = a - b;
                }
                let t0 = (bi * trows + tr) * tw;
                for (i, r) in bd.chunks_exact(2 * half).enumerate() {
                    let (even, odd) = r.split_at(half);
                    let run = ((i * 4) * c + ci) * tiles + t0;
                    let (v0, rest) = v[run..].split_at_mut(tiles * c);
                    let (v1, rest) = rest.split_at_mut(tiles * c);
                    let (v2, v3) = rest.split_at_mut(tiles * c);
                    let (e0, e1, o0, o1) = (&even[..tw], &even[1..], &odd[..tw], &odd[1..]);
                    for ((d, &a), &b) in v0[..tw].iter_mut().zip(e0).zip(e1) {
                        *d = a - b;
                    }
                    for ((d, &a), &b) in v1[..tw].iter_mut().zip(o0).zip(e1) {
                        *d = a + b;
                    }
                    for ((d, &a), &b) in v2[..tw].iter_mut().zip(e1).zip(o0) {
                        *d = a - b;
                    }
                    for ((d, &a), &b) in v3[..tw].iter_mut().zip(o0).zip(o1) {
                        *d = a - b;
                    }
                }
            }
        }
    }
    tiles
}

/// One block's product (o × `blk.cols(g)`, image-major, rows `blk.oy0..blk.oy1` of each
/// image) by F(2×2, 3×3), with `v` and `m` as scratch.
#[allow(clippy::too_many_arguments)]
fn block_rows<T: Float>(
    x: &[T],
    u: &[T],
    g: &Geometry,
    o: usize,
    blk: &Block,
    v: &mut Vec<T>,
    m: &mut Vec<T>,
    prod: &mut [T],
    threads: usize,
) {
    let (c, rows, span, nc) = (g.c, blk.oy1 - blk.oy0, blk.span(g), blk.cols(g));
    let (trows, tw) = tile_grid(g, blk);
    let tiles = input_tiles_rows(x, g, blk, v);
    m.resize(16 * o * tiles, T::zero());
    // The 16 products M[ξ] (o × tiles) = U[ξ] (o × c) · V[ξ] (c × tiles).
    for xi in 0..16 {
        matmul(
            MatMut::rows(&mut m[xi * o * tiles..][..o * tiles], o, tiles, tiles),
            false,
            u_mat(u, xi, o, c),
            Mat::rows(&v[xi * c * tiles..][..c * tiles], c, tiles, tiles),
            threads,
        );
    }
    // Output transform: the 2×2 tile Aᵀ·M·A, one row of tiles at a time (16 contiguous runs
    // of M in, two output rows out), clipped at the block's last row and column.
    let mut a = vec![T::zero(); 8 * tw];
    for oc in 0..o {
        for bi in 0..blk.nb {
            let dst = &mut prod[oc * nc + bi * span..][..span];
            for tr in 0..trows {
                let t0 = (bi * trows + tr) * tw;
                let run = |xi: usize| &m[(xi * o + oc) * tiles + t0..][..tw];
                // Aᵀ·M: rows dy = 0, 1 of a, each four runs (j = 0..4) of tw tiles.
                let (top, bottom) = a.split_at_mut(4 * tw);
                for (j, (t, b)) in top
                    .chunks_exact_mut(tw)
                    .zip(bottom.chunks_exact_mut(tw))
                    .enumerate()
                {
                    through_at([run(j), run(4 + j), run(8 + j), run(12 + j)], t, b);
                }
                for dy in 0..2 {
                    let y = 2 * tr + dy;
                    if y >= rows {
                        break;
                    }
                    let part = &a[dy * 4 * tw..][..4 * tw];
                    let (r0, r1, r2, r3) = (
                        &part[..tw],
                        &part[tw..2 * tw],
                        &part[2 * tw..3 * tw],
                        &part[3 * tw..],
                    );
                    let out = &mut dst[y * g.wo..][..g.wo];
                    for ((((pair, &a0), &a1), &a2), &a3) in
                        out.chunks_exact_mut(2).zip(r0).zip(r1).zip(r2).zip(r3)
                    {
                        pair[0] = a0 + a1 + a2;
                        pair[1] = a1 - a2 - a3;
                    }
                    if g.wo % 2 == 1 {
                        let tx = tw - 1;
                        out[2 * tx] = r0[tx] + r1[tx] + r2[tx];
                    }
                }
            }
        }
    }
}

/// Aᵀ (2 × 4) of the output transform over runs: `first = r0 + r1 + r2`,
/// `second = r1 − r2 − r3`.
fn through_at<T: Float>(r: [&[T]; 4], first: &mut [T], second: &mut [T]) {
    let [r0, r1, r2, r3] = r;
    for ((((f, s), &a0), &a1), (&a2, &a3)) in first
        .iter_mut()
        .zip(second.iter_mut())
        .zip(r0)
        .zip(r1)
        .zip(r2.iter().zip(r3))
    {
        *f = a0 + a1 + a2;
        *s = a1 - a2 - a3;
    }
}

/// A (4 × 2), the output transform's transpose, over runs of n: the pair (y0, y1) becomes
/// (y0, y0 + y1, y0 − y1, −y1), the four runs of `out` (4·n).
fn through_a<T: Float>(y0: &[T], y1: &[T], out: &mut [T]) {
    let n = y0.len();
    let (c0, rest) = out.split_at_mut(n);
    let (c1, rest) = rest.split_at_mut(n);
    let (c2, c3) = rest.split_at_mut(n);
    c0.copy_from_slice(y0);
    for ((((d1, d2), d3), &e), &od) in c1
        .iter_mut()
        .zip(c2.iter_mut())
        .zip(c3.iter_mut())
        .zip(y0)
        .zip(y1)
    {
        *d1 = e + od;
        *d2 = e - od;
        *d3 = T::zero() - od;
    }
}

/// One output row's even and odd columns, one pair per 2×2 tile (the odd one 0 past an odd
/// width); all zero for a row past the block (`None`).
fn deinterleave<T: Float>(row: Option<&[T]>, even: &mut [T], odd: &mut [T]) {
    let Some(row) = row else {
        even.fill(T::zero());
        odd.fill(T::zero());
        return;
    };
    for ((e, od), p) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks(2)) {
        *e = p[0];
        *od = if p.len() == 2 { p[1] } else { T::zero() };
    }
}

/// A (4 × 2) down the columns of a tile's gradient: from the rows' runs `r0` and `r1` (one
/// column j of `through_a`'s output), ∂M[j], ∂M[4 + j], ∂M[8 + j] and ∂M[12 + j] = r0,
/// r0 + r1, r0 − r1 and −r1, written at `at`, `at + step`, `at + 2·step` and `at + 3·step`
/// of `dm`.
fn down_a<T: Float>(r0: &[T], r1: &[T], dm: &mut [T], at: usize, step: usize) {
    let n = r0.len();
    dm[at..][..n].copy_from_slice(r0);
    comb2(&mut dm[at + step..][..n], r0, r1, |a, b| a + b);
    comb2(&mut dm[at + 2 * step..][..n], r0, r1, |a, b| a - b);
    comb2(&mut dm[at + 3 * step..][..n], r0, r1, |_, b| T::zero() - b);
}

/// `out[i] = f(a[i], b[i])`.
#[inline(always)]
fn comb2<T: Float>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = f(a, b);
    }
}

/// Scratch of [`block`] and [`kernel_grad_block`].
pub(crate) struct Scratch<T> {
    /// The block's zero-padded input, channel-last: (image, row, column, channel).
    xt: Vec<T>,
    /// `V[ξ]`, 16 row-major (tiles × c) matrices.
    v: Vec<T>,
    /// `M[ξ]`, 16 row-major (tiles × o) matrices.
    m: Vec<T>,
    /// One tile's intermediate rows (16 of c or 8 of o) and its 4 outputs (4 of o).
    tile: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Self {
            xt: Vec::new(),
            v: Vec::new(),
            m: Vec::new(),
            tile: Vec::new(),
        }
    }
}

/// The block's transformed input tiles into `s.v`: 16 row-major (tiles × c) matrices
/// `V[ξ] = (Bᵀ·d·B)[ξ]`, one row per 2×2 output tile (image-major, then tile row, then tile
/// column), and the number of tiles. The block's input is first laid out channel-last and
/// zero-padded (`s.xt`), so each of a tile's 16 values is one sweep over the c channels: on
/// small maps a tile row is a few tiles long, and sweeps along it were mostly loop overhead
/// (on an 8×8 map with 256 channels the transforms took longer than the products).
fn input_tiles_channels_last<T: Float>(
    x: &[T],
    g: &Geometry,
    blk: &Block,
    s: &mut Scratch<T>,
) -> usize {
    let c = g.c;
    let (trows, tw) = tile_grid(g, blk);
    let tiles = blk.nb * trows * tw;
    // The padded patch under the block's tiles: input rows oy0 − p .. oy0 − p + 2·trows + 2,
    // columns −p .. 2·tw + 2 − p.
    let (ph, pw) = (2 * trows + 2, 2 * tw + 2);
    let pad = g.padding as isize;
    s.xt.clear();
    s.xt.resize(blk.nb * ph * pw * c, T::zero());
    let (qlo, qhi) = (g.padding.min(pw), (g.w + g.padding).min(pw));
    for bi in 0..blk.nb {
        let image = &x[(blk.b0 + bi) * c * g.h * g.w..][..c * g.h * g.w];
        for r in 0..ph {
            let iy = (blk.oy0 + r) as isize - pad;
            if iy < 0 || iy as usize >= g.h || qlo >= qhi {
                continue;
            }
            let dst = &mut s.xt[((bi * ph + r) * pw + qlo) * c..][..(qhi - qlo) * c];
            for (ci, plane) in image.chunks_exact(g.h * g.w).enumerate() {
                let src = &plane[iy as usize * g.w..][..qhi - qlo];
                for (q, &val) in src.iter().enumerate() {
                    dst[q * c + ci] = val;
                }
            }
        }
    }
    // Tile by tile: Bᵀ·d down the 4 columns into `s.tile` (row i, column q at (4i + q)·c),
    // then ·B along its rows into V.
    s.v.resize(16 * tiles * c, T::zero());
    s.tile.resize(16 * c, T::zero());
    for bi in 0..blk.nb {
        for tr in 0..trows {
            for tx in 0..tw {
                let t = (bi * trows + tr) * tw + tx;
                let at = |r: usize, q: usize| ((bi * ph + 2 * tr + r) * pw + 2 * tx + q) * c;
                for q in 0..4 {
                    let d = |r: usize| &s.xt[at(r, q)..][..c];
                    let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
                    let col = |i: usize| (4 * i + q) * c;
                    comb2(&mut s.tile[col(0)..][..c], d0, d2, |a, b| a - b);
                    comb2(&mut s.tile[col(1)..][..c], d1, d2, |a, b| a + b);
                    comb2(&mut s.tile[col(2)..][..c], d2, d1, |a, b| a - b);
                    comb2(&mut s.tile[col(3)..][..c], d1, d3, |a, b| a - b);
                }
                for i in 0..4 {
                    let e = |q: usize| &s.tile[(4 * i + q) * c..][..c];
                    let (e0, e1, e2, e3) = (e(0), e(1), e(2), e(3));
                    let out = |j: usize| ((4 * i + j) * tiles + t) * c;
                    comb2(&mut s.v[out(0)..][..c], e0, e2, |a, b| a - b);
                    comb2(&mut s.v[out(1)..][..c], e1, e2, |a, b| a + b);
                    comb2(&mut s.v[out(2)..][..c], e2, e1, |a, b| a - b);
                    comb2(&mut s.v[out(3)..][..c], e1, e3, |a, b| a - b);
                }
            }
        }
    }
    tiles
}

/// One block's product (o × `blk.cols(g)`, image-major, rows `blk.oy0..blk.oy1` of each
/// image) by F(2×2, 3×3), with `s` as scratch: the input tiles
/// ([`input_tiles_channels_last`]), the 16 products, and the output transform `Aᵀ·M·A` swept
/// over all the block's tiles at once, one output channel at a time.
#[allow(clippy::too_many_arguments)]
fn block_channels_last<T: Float>(
    x: &[T],
    u: &[T],
    g: &Geometry,
    o: usize,
    blk: &Block,
    s: &mut Scratch<T>,
    prod: &mut [T],
    threads: usize,
) {
    let (c, rows, span, nc) = (g.c, blk.oy1 - blk.oy0, blk.span(g), blk.cols(g));
    let (trows, tw) = tile_grid(g, blk);
    let tiles = input_tiles_channels_last(x, g, blk, s);
    // The 16 products M[ξ] (o × tiles) = U[ξ] (o × c) · V[ξ]ᵀ (c × tiles): `gemm` wants the
    // destination's rows contiguous (with M as tiles × o it ran 2–5× slower).
    s.m.resize(16 * o * tiles, T::zero());
    for xi in 0..16 {
        matmul(
            MatMut::rows(&mut s.m[xi * o * tiles..][..o * tiles], o, tiles, tiles),
            false,
            u_mat(u, xi, o, c),
            Mat::rows(&s.v[xi * tiles * c..][..tiles * c], tiles, c, c).t(),
            threads,
        );
    }
    // Output transform, one output channel at a time over all the block's tiles: Aᵀ·M (rows
    // dy = 0, 1, column j at (4·dy + j)·tiles of `tile`), then ·A into the 2×2 outputs (at
    // (8 + 2·dy + dx)·tiles), interleaved into the channel's rows of `prod`.
    s.tile.resize(12 * tiles, T::zero());
    for oc in 0..o {
        let (sums, outs) = s.tile.split_at_mut(8 * tiles);
        let run = |xi: usize| &s.m[(xi * o + oc) * tiles..][..tiles];
        let (top, bottom) = sums.split_at_mut(4 * tiles);
        for j in 0..4 {
            through_at(
                [run(j), run(4 + j), run(8 + j), run(12 + j)],
                &mut top[j * tiles..][..tiles],
                &mut bottom[j * tiles..][..tiles],
            );
        }
        for (dy, part) in [&*top, &*bottom].into_iter().enumerate() {
            let r = |j: usize| &part[j * tiles..][..tiles];
            let (left, right) = outs[2 * dy * tiles..][..2 * tiles].split_at_mut(tiles);
            through_at([r(0), r(1), r(2), r(3)], left, right);
        }
        let dst = &mut prod[oc * nc..][..nc];
        for bi in 0..blk.nb {
            for tr in 0..trows {
                let t0 = (bi * trows + tr) * tw;
                for dy in 0..2 {
                    let y = 2 * tr + dy;
                    if y >= rows {
                        break;
                    }
                    let (e, od) = (
                        &outs[2 * dy * tiles + t0..][..tw],
                        &outs[(2 * dy + 1) * tiles + t0..][..tw],
                    );
                    let row = &mut dst[bi * span + y * g.wo..][..g.wo];
                    for ((pair, &a), &b) in row.chunks_mut(2).zip(e).zip(od) {
                        pair[0] = a;
                        if let Some(p1) = pair.get_mut(1) {
                            *p1 = b;
                        }
                    }
                }
            }
        }
    }
}

/// Adds one block's share of the transformed kernel gradient to `du` (16 row-major (o × c)
/// matrices, one per ξ): `∂U[ξ] += ∂M[ξ]·V[ξ]`, where `∂M = A·∂Y·Aᵀ` is the output gradient
/// `gy` (o × `blk.cols(g)`, as [`block`]'s product) carried back through the output
/// transform, swept over all the block's tiles one output channel at a time, and `V` the
/// block's input tiles ([`input_tiles_channels_last`]). The products run over the block's
/// tiles, 16·o·c multiply-adds per tile instead of the direct gradient's 36. With [`kernel_grad`]
/// after the last block this is the exact gradient of the Winograd forward, which equals the
/// direct convolution's: outputs a block does not compute (past an odd last row or column)
/// take no gradient.
#[allow(clippy::too_many_arguments)]
fn kernel_grad_block_channels_last<T: Float>(
    x: &[T],
    gy: &[T],
    g: &Geometry,
    o: usize,
    blk: &Block,
    s: &mut Scratch<T>,
    du: &mut [T],
    threads: usize,
) {
    let (c, rows, span, nc) = (g.c, blk.oy1 - blk.oy0, blk.span(g), blk.cols(g));
    let (trows, tw) = tile_grid(g, blk);
    let tiles = input_tiles_channels_last(x, g, blk, s);
    s.m.resize(16 * o * tiles, T::zero());
    s.tile.resize(12 * tiles, T::zero());
    for oc in 0..o {
        // The tiles' 2×2 gradients as four runs over the tiles, (dy, dx) at (2·dy + dx)·tiles
        // (zero past the block's last row or the map's last column).
        let (ys, cols) = s.tile.split_at_mut(4 * tiles);
        let src = &gy[oc * nc..][..nc];
        for bi in 0..blk.nb {
            for tr in 0..trows {
                let t0 = (bi * trows + tr) * tw;
                for dy in 0..2 {
                    let (even, odd) = ys[2 * dy * tiles..][..2 * tiles].split_at_mut(tiles);
                    let y = 2 * tr + dy;
                    let row = (y < rows).then(|| &src[bi * span + y * g.wo..][..g.wo]);
                    deinterleave(row, &mut even[t0..][..tw], &mut odd[t0..][..tw]);
                }
            }
        }
        // Along the rows, A maps a pair (y0, y1) to (y0, y0 + y1, y0 − y1, −y1): cols[dy][j]
        // at (4·dy + j)·tiles for j = 0..4.
        for dy in 0..2 {
            let (even, odd) = ys[2 * dy * tiles..][..2 * tiles].split_at(tiles);
            through_a(even, odd, &mut cols[4 * dy * tiles..][..4 * tiles]);
        }
        // Down the columns: ∂M[4i + j] from cols[0][j] and cols[1][j].
        for j in 0..4 {
            let (r0, r1) = (
                &cols[j * tiles..][..tiles],
                &cols[(4 + j) * tiles..][..tiles],
            );
            down_a(r0, r1, &mut s.m, (j * o + oc) * tiles, 4 * o * tiles);
        }
    }
    // The 16 products ∂U[ξ] (o × c) += ∂M[ξ] (o × tiles) · V[ξ] (tiles × c).
    for xi in 0..16 {
        matmul(
            MatMut::rows(&mut du[xi * o * c..][..o * c], o, c, c),
            true,
            Mat::rows(&s.m[xi * o * tiles..][..o * tiles], o, tiles, tiles),
            Mat::rows(&s.v[xi * tiles * c..][..tiles * c], tiles, c, c),
            threads,
        );
    }
}

/// Adds one block's share of the transformed kernel gradient to `du` (16 row-major (o × c)
/// matrices, one per ξ): `∂U[ξ] += ∂M[ξ]·V[ξ]ᵀ`, where `∂M = A·∂Y·Aᵀ` is the
/// output gradient `gy` (o × `blk.cols(g)`, as [`block`]'s product) carried back through the
/// output transform, tile by tile, and `V` the block's input tiles. The products run over the
/// block's tiles, 16·o·c multiply-adds per tile instead of the direct gradient's 36. With
/// [`kernel_grad`] after the last block this is the exact gradient of the Winograd forward,
/// which equals the direct convolution's: outputs a block does not compute (past an odd last
/// row or column) take no gradient.
#[allow(clippy::too_many_arguments)]
fn kernel_grad_block_rows<T: Float>(
    x: &[T],
    gy: &[T],
    g: &Geometry,
    o: usize,
    blk: &Block,
    v: &mut Vec<T>,
    dm: &mut Vec<T>,
    du: &mut [T],
    threads: usize,
) {
    let (c, rows, span, nc) = (g.c, blk.oy1 - blk.oy0, blk.span(g), blk.cols(g));
    let (trows, tw) = tile_grid(g, blk);
    let tiles = input_tiles_rows(x, g, blk, v);
    dm.resize(16 * o * tiles, T::zero());
    // ∂M[ξ = 4i + j] of each tile from its 2×2 gradient, one row of tiles at a time: A (4 × 2)
    // maps a pair (y0, y1) to (y0, y0 + y1, y0 − y1, −y1), first along each of the two rows
    // (even and odd columns as runs), then down the columns.
    let mut pair = vec![T::zero(); 4 * tw];
    let mut cols = vec![T::zero(); 8 * tw];
    for oc in 0..o {
        for bi in 0..blk.nb {
            let src = &gy[oc * nc + bi * span..][..span];
            for tr in 0..trows {
                // Even and odd columns of the tile row's two output rows (zero past the block).
                for dy in 0..2 {
                    let (even, odd) = pair[2 * dy * tw..][..2 * tw].split_at_mut(tw);
                    let y = 2 * tr + dy;
                    deinterleave((y < rows).then(|| &src[y * g.wo..][..g.wo]), even, odd);
                }
                // Along the rows: cols[dy][j] for j = 0..4.
                for dy in 0..2 {
                    let (even, odd) = pair[2 * dy * tw..][..2 * tw].split_at(tw);
                    through_a(even, odd, &mut cols[4 * dy * tw..][..4 * tw]);
                }
                // Down the columns: ∂M[4i + j] from cols[0][j] and cols[1][j].
                let t0 = (bi * trows + tr) * tw;
                for j in 0..4 {
                    let (r0, r1) = (&cols[j * tw..][..tw], &cols[(4 + j) * tw..][..tw]);
                    down_a(r0, r1, dm, (j * o + oc) * tiles + t0, 4 * o * tiles);
                }
            }
        }
    }
    // The 16 products ∂U[ξ] (o × c) += ∂M[ξ] (o × tiles) · V[ξ]ᵀ (tiles × c).
    for xi in 0..16 {
        matmul(
            MatMut::rows(&mut du[xi * o * c..][..o * c], o, c, c),
            true,
            Mat::rows(&dm[xi * o * tiles..][..o * tiles], o, tiles, tiles),
            Mat::rows(&v[xi * c * tiles..][..c * tiles], c, tiles, tiles).t(),
            threads,
        );
    }
}

/// The kernel gradient (o, c, 3, 3) from the summed transformed one `du` ([`weights`]'
/// layout): `∂g = Gᵀ·∂U·G`, the transpose of the weight transform.
pub(crate) fn kernel_grad<T: Float>(du: &[T], o: usize, c: usize) -> Vec<T> {
    let half = T::from_f64(0.5);
    // Gᵀ (3 × 4) applied to (u0, u1, u2, u3).
    let gt = |u0: T, u1: T, u2: T, u3: T| {
        [
            u0 + (u1 + u2) * half,
            (u1 - u2) * half,
            (u1 + u2) * half + u3,
        ]
    };
    let mut dw = vec![T::zero(); o * c * 9];
    for oc in 0..o {
        for ci in 0..c {
            let at = |xi: usize| du[(xi * o + oc) * c + ci];
            // Gᵀ down each of the 4 columns (3 values each), then along each of the 3 rows.
            let cols: [[T; 3]; 4] =
                std::array::from_fn(|j| gt(at(j), at(4 + j), at(8 + j), at(12 + j)));
            let dst = &mut dw[(oc * c + ci) * 9..][..9];
            for p in 0..3 {
                let row = gt(cols[0][p], cols[1][p], cols[2][p], cols[3][p]);
                dst[3 * p..][..3].copy_from_slice(&row);
            }
        }
    }
    dw
}
