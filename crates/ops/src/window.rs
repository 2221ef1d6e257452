//! Sliding windows over (n, c, h, w) maps: the output length of a window sweep (PyTorch's
//! floor mode, [`window_out_len`]) and a max-pool's [`Window`], with the argmax scan its
//! backward and the CUDA reference share.

use candle_core::{Result, WithDType, bail};

/// Output length of a convolution or pooling window sweep over `len` elements (PyTorch's
/// floor mode): `(len + 2·padding − kernel) / stride + 1`, or `None` when the window does not
/// fit or `stride` is 0.
pub fn window_out_len(len: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = len + 2 * padding;
    if stride == 0 || kernel == 0 || padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

/// A pooling window over an (n, c, h, w) input: a k×k kernel, stride, −∞ padding, and the
/// (ho, wo) output it gives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
}

impl Window {
    /// The window of a `kernel`×`kernel` pool with `stride` and `padding` over an input of
    /// `dims` (n, c, h, w), or an error when the sizes break PyTorch's rules (kernel or stride
    /// 0, padding over kernel/2) or the padded input is smaller than the kernel.
    pub(crate) fn new(
        (n, c, h, w): (usize, usize, usize, usize),
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        if kernel == 0 || stride == 0 || 2 * padding > kernel {
            bail!(
                "max_pool2d: need kernel ≥ 1, stride ≥ 1 and padding ≤ kernel/2, got kernel {kernel}, stride {stride}, padding {padding}"
            );
        }
        let (Some(ho), Some(wo)) = (
            window_out_len(h, kernel, stride, padding),
            window_out_len(w, kernel, stride, padding),
        ) else {
            bail!(
                "max_pool2d: a {kernel}×{kernel} window (padding {padding}) does not fit a {h}×{w} input"
            );
        };
        Ok(Self {
            n,
            c,
            h,
            w,
            k: kernel,
            stride,
            padding,
            ho,
            wo,
        })
    }

    /// Elements of the pooled output: n·c·ho·wo.
    pub(crate) fn out_len(&self) -> usize {
        self.n * self.c * self.ho * self.wo
    }

    /// The input rows (or columns) under output row `o`: `lo..hi`, never empty because
    /// padding ≤ kernel/2.
    pub(crate) fn span(&self, o: usize, len: usize) -> (usize, usize) {
        let start = (o * self.stride) as isize - self.padding as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + self.k as isize).max(0) as usize).min(len);
        (lo, hi)
    }

    /// `c×h×w, k×k/stride pad padding`, for the op profile.
    pub(crate) fn label(&self) -> String {
        format!(
            "{}×{}×{}, {}×{}/{} pad {}",
            self.c, self.h, self.w, self.k, self.k, self.stride, self.padding
        )
    }

    /// Calls `f(output index, input index of the window's maximum)` for every output of one
    /// h×w plane. The first maximum in row-major order wins; a NaN is a maximum (PyTorch's
    /// rule: `v > max || isnan(v)`).
    pub(crate) fn for_each_argmax<T: WithDType>(
        &self,
        plane: &[T],
        mut f: impl FnMut(usize, usize),
    ) {
        if (self.k, self.stride, self.padding) == (2, 2, 0) {
            // The nets' own pool, without the general path's window bookkeeping.
            for oy in 0..self.ho {
                let (r0, r1) = (2 * oy * self.w, (2 * oy + 1) * self.w);
                for ox in 0..self.wo {
                    let c = 2 * ox;
                    let (mut best, mut max) = (r0 + c, plane[r0 + c]);
                    for i in [r0 + c + 1, r1 + c, r1 + c + 1] {
                        let v = plane[i];
                        #[allow(clippy::eq_op)]
                        if v > max || v != v {
                            max = v;
                            best = i;
                        }
                    }
                    f(oy * self.wo + ox, best);
                }
            }
            return;
        }
        let xs: Vec<(usize, usize)> = (0..self.wo).map(|ox| self.span(ox, self.w)).collect();
        for oy in 0..self.ho {
            let (ylo, yhi) = self.span(oy, self.h);
            for (ox, &(xlo, xhi)) in xs.iter().enumerate() {
                let mut best = ylo * self.w + xlo;
                let mut max = plane[best];
                for iy in ylo..yhi {
                    let row = iy * self.w;
                    for (j, &v) in plane[row + xlo..row + xhi].iter().enumerate() {
                        // `v != v` is NaN.
                        #[allow(clippy::eq_op)]
                        if v > max || v != v {
                            max = v;
                            best = row + xlo + j;
                        }
                    }
                }
                f(oy * self.wo + ox, best);
            }
        }
    }
}
