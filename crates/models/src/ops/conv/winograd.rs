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

use super::{Block, Geometry};
use crate::ops::gemm::{Float, Mat, MatMut, matmul};

/// Whether a convolution runs through Winograd: 3×3, stride 1, and enough channels and output
/// pixels that the 16 products are not dominated by the transforms.
pub(super) fn applies(g: &Geometry, o: usize) -> bool {
    fits(g, o, MIN_PLANE)
}

/// 3×3, stride 1, [`MIN_CHANNELS`] each way and at least `min_plane` output pixels per image.
fn fits(g: &Geometry, o: usize, min_plane: usize) -> bool {
    (g.kh, g.kw, g.stride) == (3, 3, 1)
        && g.c >= MIN_CHANNELS
        && o >= MIN_CHANNELS
        && g.ho * g.wo >= min_plane
}

/// Whether a kernel gradient runs through Winograd ([`kernel_grad_block`]): as [`applies`],
/// but down to 8×8 maps ([`MIN_PLANE_GRAD`]).
pub(super) fn applies_kernel_grad(g: &Geometry, o: usize) -> bool {
    fits(g, o, MIN_PLANE_GRAD)
}

/// The kernel gradient has no weight transform to pay for per call (its inverse, 16·o·c
/// values, is paid once per batch), and its products run over the batch's tiles, so smaller
/// maps than the forward's [`MIN_PLANE`] gain: on Part 4's deconv net (128-pixel input, batch
/// 16, AMD EPYC, 2 threads) the 256×8×8 stage's backward ran 5–10% faster through it. At 4×4
/// a 2×2 tile grid is half padding.
const MIN_PLANE_GRAD: usize = 64;

/// Below this many output pixels per image (16×16) the im2col path is used: on small maps a
/// 2×2 tile grid is mostly edge, and the weight transform (16·o·c values per call) outweighs
/// the few tiles it serves. Measured on the AVX-512 Xeon, 2 threads: with the bound at 8×8,
/// Part 4's deconv net (128-pixel input, batch 16) trained 5% slower (ResNet-18's third stage,
/// 8×8 there, ran 4 ms slower forward and 3 ms backward); at 4×4, 5–10% slower still. ResNet-18
/// at 224 pixels (third stage 14×14) measures the same either way.
const MIN_PLANE: usize = 256;

/// Below this many input or output channels the im2col path is used.
const MIN_CHANNELS: usize = 16;

/// `U = G·g·Gᵀ` for every (output, input) channel pair of `w` (o, c, 3, 3), laid out as 16
/// row-major (o × c) matrices, one per tile position ξ.
pub(super) fn weights<T: Float>(w: &[T], o: usize, c: usize) -> Vec<T> {
    let half = T::from_f64(0.5);
    let mut u = vec![T::zero(); 16 * o * c];
    for oc in 0..o {
        for ci in 0..c {
            let g = &w[(oc * c + ci) * 9..][..9];
            // G·g: 4 × 3.
            let mut gg = [[T::zero(); 3]; 4];
            for j in 0..3 {
                let (a, b, d) = (g[j], g[3 + j], g[6 + j]);
                gg[0][j] = a;
                gg[1][j] = (a + b + d) * half;
                gg[2][j] = (a - b + d) * half;
                gg[3][j] = d;
            }
            // (G·g)·Gᵀ: 4 × 4.
            for (i, row) in gg.iter().enumerate() {
                let (a, b, d) = (row[0], row[1], row[2]);
                let out = [a, (a + b + d) * half, (a - b + d) * half, d];
                for (j, &v) in out.iter().enumerate() {
                    u[((i * 4 + j) * o + oc) * c + ci] = v;
                }
            }
        }
    }
    u
}

/// The weights of the input-gradient convolution: `w` (o, c, 3, 3) with input and output
/// channels swapped and each kernel turned by 180°, (c, o, 3, 3). With padding `2 − p` it maps
/// an (o, ho, wo) output gradient to the (c, h, w) input gradient.
pub(super) fn flipped<T: Float>(w: &[T], o: usize, c: usize) -> Vec<T> {
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

/// The block's transformed input tiles into `v`: 16 row-major (c × tiles) matrices
/// `V[ξ] = (Bᵀ·d·B)[ξ]`, one column per 2×2 output tile (image-major, then tile row, then tile
/// column), and the number of tiles.
fn input_tiles<T: Float>(x: &[T], g: &Geometry, blk: &Block, v: &mut Vec<T>) -> usize {
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
pub(super) fn block<T: Float>(
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
    let tiles = input_tiles(x, g, blk, v);
    m.resize(16 * o * tiles, T::zero());
    // The 16 products M[ξ] (o × tiles) = U[ξ] (o × c) · V[ξ] (c × tiles).
    for xi in 0..16 {
        matmul(
            MatMut::rows(&mut m[xi * o * tiles..][..o * tiles], o, tiles, tiles),
            false,
            Mat::rows(&u[xi * o * c..][..o * c], o, c, c),
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
                    let (m0, m1, m2, m3) = (run(j), run(4 + j), run(8 + j), run(12 + j));
                    for (((((t, b), &m0), &m1), &m2), &m3) in t
                        .iter_mut()
                        .zip(b.iter_mut())
                        .zip(m0)
                        .zip(m1)
                        .zip(m2)
                        .zip(m3)
                    {
                        *t = m0 + m1 + m2;
                        *b = m1 - m2 - m3;
                    }
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

/// Adds one block's share of the transformed kernel gradient to `du` (16 row-major (o × c)
/// matrices, [`weights`]' layout): `∂U[ξ] += ∂M[ξ]·V[ξ]ᵀ`, where `∂M = A·∂Y·Aᵀ` is the
/// output gradient `gy` (o × `blk.cols(g)`, as [`block`]'s product) carried back through the
/// output transform, tile by tile, and `V` the block's input tiles. The products run over the
/// block's tiles, 16·o·c multiply-adds per tile instead of the direct gradient's 36. With
/// [`kernel_grad`] after the last block this is the exact gradient of the Winograd forward,
/// which equals the direct convolution's: outputs a block does not compute (past an odd last
/// row or column) take no gradient.
#[allow(clippy::too_many_arguments)]
pub(super) fn kernel_grad_block<T: Float>(
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
    let tiles = input_tiles(x, g, blk, v);
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
                    if y >= rows {
                        even.fill(T::zero());
                        odd.fill(T::zero());
                        continue;
                    }
                    let row = &src[y * g.wo..][..g.wo];
                    for ((e, od), p) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks(2)) {
                        *e = p[0];
                        *od = if p.len() == 2 { p[1] } else { T::zero() };
                    }
                }
                // Along the rows: cols[dy][j] for j = 0..4.
                for dy in 0..2 {
                    let (even, odd) = pair[2 * dy * tw..][..2 * tw].split_at(tw);
                    let out = &mut cols[4 * dy * tw..][..4 * tw];
                    let (c0, rest) = out.split_at_mut(tw);
                    let (c1, rest) = rest.split_at_mut(tw);
                    let (c2, c3) = rest.split_at_mut(tw);
                    c0.copy_from_slice(even);
                    for ((((d1, d2), d3), &e), &od) in c1
                        .iter_mut()
                        .zip(c2.iter_mut())
                        .zip(c3.iter_mut())
                        .zip(even)
                        .zip(odd)
                    {
                        *d1 = e + od;
                        *d2 = e - od;
                        *d3 = T::zero() - od;
                    }
                }
                // Down the columns: ∂M[4i + j] from cols[0][j] and cols[1][j].
                let t0 = (bi * trows + tr) * tw;
                for j in 0..4 {
                    let (r0, r1) = (&cols[j * tw..][..tw], &cols[(4 + j) * tw..][..tw]);
                    let at = |xi: usize| (xi * o + oc) * tiles + t0;
                    dm[at(j)..][..tw].copy_from_slice(r0);
                    for ((d, &a), &b) in dm[at(4 + j)..][..tw].iter_mut().zip(r0).zip(r1) {
                        *d = a + b;
                    }
                    for ((d, &a), &b) in dm[at(8 + j)..][..tw].iter_mut().zip(r0).zip(r1) {
                        *d = a - b;
                    }
                    for (d, &b) in dm[at(12 + j)..][..tw].iter_mut().zip(r1) {
                        *d = T::zero() - b;
                    }
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
pub(super) fn kernel_grad<T: Float>(du: &[T], o: usize, c: usize) -> Vec<T> {
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
