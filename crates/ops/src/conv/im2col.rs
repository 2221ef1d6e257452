//! Moving a block between NCHW and column form: im2col (strided convs through the input's
//! polyphase components, so each column row is a contiguous copy), col2im, and the gather and
//! scatter of a block's output values.

use crate::conv::plan::{Block, Geometry};
use crate::gemm::Float;
use crate::storage::valid_range;

/// The block's column matrix, (c·kh·kw) × cols: row `(ci·kh + ky)·kw + kx` holds, for each
/// output position of the block, the input pixel under kernel tap (ky, kx) of channel ci (0 in
/// the padding). A strided conv first splits the input rows it reads into their s×s
/// polyphase components (`poly`, see [`Polyphase`]), so that every row of the column matrix is
/// a contiguous copy instead of an every-s-th gather: each input pixel is gathered once instead
/// of once per tap that reads it (4 times for a 4×4/2 kernel, 12 for the 7×7/2 stem).
pub(crate) fn im2col_block<T: Float>(
    x: &[T],
    g: &Geometry,
    blk: &Block,
    cols: &mut [T],
    poly: &mut Vec<T>,
) {
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
pub(crate) struct Polyphase {
    pub(crate) s: usize,
    /// First input row held (a multiple of s) and rows held per component.
    pub(crate) r0: usize,
    pub(crate) rows: usize,
    /// Entries per component row: ceil(w / s).
    pub(crate) cols: usize,
    pub(crate) c: usize,
    pub(crate) padding: usize,
}

impl Polyphase {
    /// The layout for the input rows the block's taps read (rows `r0..end`).
    pub(crate) fn layout(g: &Geometry, blk: &Block) -> (Self, usize) {
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
    pub(crate) fn len(&self, nb: usize) -> usize {
        nb * self.c * self.s * self.s * self.rows * self.cols
    }

    /// Splits the rows of the block's images that its taps read into `poly`.
    pub(crate) fn new<T: Float>(x: &[T], g: &Geometry, blk: &Block, poly: &mut Vec<T>) -> Self {
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
    pub(crate) fn add_into<T: Float>(
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
    pub(crate) fn at(&self, bi: usize, ci: usize, iy: usize, b: usize) -> usize {
        let (a, i) = (iy % self.s, iy / self.s - self.r0 / self.s);
        ((((bi * self.c + ci) * self.s + a) * self.s + b) * self.rows + i) * self.cols
    }

    /// Where in `poly` the pixels that outputs `xlo..` read from input row `iy` through tap
    /// column `kx` start (consecutive from there); `xlo` must be in the tap's valid range.
    pub(crate) fn start(&self, bi: usize, ci: usize, iy: usize, kx: usize, xlo: usize) -> usize {
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
pub(crate) fn col2im_block<T: Float>(
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

/// Copies a block's rows of the NCHW planes `src` (`o` channels of `g`'s output) into the
/// block's product layout `dst` (channel-major, `blk.cols(g)` columns per channel).
pub(crate) fn gather_block<T: Float>(
    src: &[T],
    g: &Geometry,
    blk: &Block,
    o: usize,
    dst: &mut [T],
) {
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
pub(crate) fn scatter_block<T: Float>(
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
