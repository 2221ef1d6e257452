//! A 2-D max-pool with padding whose backward pass is correct, built from differentiable Candle
//! ops, because Candle 0.11's own `max_pool2d` cannot be used for training here:
//!
//! - it has no padding argument (ResNet's stem pool is 3×3, stride 2, padding 1);
//! - its backward refuses `kernel != stride` ("backward not supported for maxpool2d if ksize
//!   != stride"), so ResNet's 3×3/2 pool cannot be trained through it;
//! - its backward is *wrong* even where it runs: a unique maximum receives `grad / k²` instead
//!   of `grad` (0.25 for a 2×2 pool; it multiplies by the window's *mean* of the argmax mask),
//!   while each of several tied maxima receives `grad · ties / k²`;
//! - and for inputs whose size is not a multiple of the stride it maps the gradient back with
//!   `upsample_nearest2d(h, w)`, which for h = 15 → 7 sends rows 2, 4, 6, … to the wrong
//!   window. NoseNet pools a 15×20 map and FaceNet 15×20 and 7×10 maps.
//!
//! The tests below pin both defects, so a Candle upgrade that fixes them shows up.
//! Cost: this composition is about 3× slower than Candle's (wrong) pool on the CPU, forward and
//! backward together (8×12×60×80, 2×2: 40 ms against 13 ms; 8×64×112×112, 3×3/2 pad 1: 1.2 s).
//!
//! [`max_pool2d_composed`] splits the padded input into its `stride × stride` phases (a reshape) and
//! takes the elementwise `maximum` of the `kernel × kernel` shifted views of those phases. Every
//! op involved (cat, narrow, reshape, maximum) has an exact backward in Candle. The gradient
//! goes to the window's maximum; where several elements tie for the maximum, Candle's `maximum`
//! backward shares it between them (PyTorch gives it all to the first), which is an equally
//! valid subgradient and only matters on exact ties.
//!
//! The fused kernel [`crate::max_pool2d`] (what the nets use on the CPU and CUDA) replaces
//! it where it applies; this composition is its reference in the tests and the path on other
//! devices, and the two forwards are equal.

use candle_core::{D, Result, Tensor};

use crate::window::window_out_len;

/// Pads `x` along `dim` with `before` and `after` copies of `value`.
fn pad_const(x: &Tensor, dim: usize, before: usize, after: usize, value: f32) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    let edge = |n: usize| -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[dim] = n;
        Tensor::full(value, dims, x.device())?.to_dtype(x.dtype())
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(edge(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(edge(after)?);
    }
    Tensor::cat(&parts, dim)
}

/// Crops or pads (with `value`) dimension `dim` of `x` so that it has exactly `len` elements
/// after `before` elements of padding were prepended.
fn fit_len(x: &Tensor, dim: usize, before: usize, len: usize, value: f32) -> Result<Tensor> {
    let have = x.dim(dim)? + before;
    if have >= len {
        // Rows past `len` are never inside a window: crop them instead of padding the far side.
        pad_const(&x.narrow(dim, 0, len - before)?, dim, before, 0, value)
    } else {
        pad_const(x, dim, before, len - have, value)
    }
}

/// Max-pool of an (N, C, H, W) float tensor with a square `kernel`, `stride` and
/// `padding` (padded with −∞, as PyTorch does), output size by floor mode. Equals
/// `torch.nn.MaxPool2d(kernel, stride, padding)` in the forward pass; differentiable (see the
/// module docs for the backward).
///
/// Errors when `kernel` or `stride` is 0, `padding > kernel / 2` (PyTorch's rule), or the
/// padded input is smaller than the kernel.
pub fn max_pool2d_composed(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if kernel == 0 || stride == 0 || 2 * padding > kernel {
        candle_core::bail!(
            "max_pool2d: need kernel ≥ 1, stride ≥ 1 and padding ≤ kernel/2, got kernel {kernel}, stride {stride}, padding {padding}"
        );
    }
    let (Some(ho), Some(wo)) = (
        window_out_len(h, kernel, stride, padding),
        window_out_len(w, kernel, stride, padding),
    ) else {
        candle_core::bail!(
            "max_pool2d: a {kernel}×{kernel} window (padding {padding}) does not fit a {h}×{w} input"
        );
    };
    // Kernel offset d = stride·q + a reads phase a at phase-row i + q for output row i, so each
    // phase needs (kernel − 1)/stride + out rows: the padded length is stride times that.
    let span = (kernel - 1) / stride;
    let (hp, wp) = (stride * (span + ho), stride * (span + wo));
    let x = fit_len(x, 2, padding, hp, f32::NEG_INFINITY)?;
    let x = fit_len(&x, 3, padding, wp, f32::NEG_INFINITY)?;
    let x = x
        .contiguous()?
        .reshape((n, c, hp / stride, stride, wp / stride, stride))?;
    let mut out: Option<Tensor> = None;
    for dy in 0..kernel {
        for dx in 0..kernel {
            let (q, a) = (dy / stride, dy % stride);
            let (r, b) = (dx / stride, dx % stride);
            let view = x
                .narrow(5, b, 1)?
                .squeeze(5)?
                .narrow(3, a, 1)?
                .squeeze(3)?
                .narrow(2, q, ho)?
                .narrow(3, r, wo)?;
            out = Some(match out {
                None => view,
                Some(acc) => acc.maximum(&view)?,
            });
        }
    }
    match out {
        // kernel ≥ 1 was checked, so the loop ran at least once; contiguous() for a kernel of 1.
        Some(t) => t.contiguous(),
        None => candle_core::bail!("max_pool2d: empty kernel"),
    }
}

/// Global average pool: (N, C, H, W) → (N, C), the mean over all spatial positions
/// (`nn.AdaptiveAvgPool2d(1)` followed by a flatten).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.mean(D::Minus1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device, Var};

    fn arange(h: usize, w: usize) -> Tensor {
        Tensor::arange(0f32, (h * w) as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, h, w))
            .unwrap()
    }

    fn grid(t: &Tensor) -> Vec<Vec<f32>> {
        t.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn out_len_matches_torch_floor_mode() {
        assert_eq!(window_out_len(224, 7, 2, 3), Some(112));
        assert_eq!(window_out_len(112, 3, 2, 1), Some(56));
        assert_eq!(window_out_len(15, 2, 2, 0), Some(7));
        assert_eq!(window_out_len(1, 2, 2, 0), None);
        assert_eq!(window_out_len(4, 2, 0, 0), None);
    }

    #[test]
    fn padded_3x3_stride_2_forward_and_gradient_by_hand() {
        // 0..16 in a 4×4 grid; windows centred on (0,0), (0,2), (2,0), (2,2) with −∞ padding.
        let v = Var::from_tensor(&arange(4, 4)).unwrap();
        let y = max_pool2d_composed(v.as_tensor(), 3, 2, 1).unwrap();
        assert_eq!(grid(&y), vec![vec![5.0, 7.0], vec![13.0, 15.0]]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = grid(g.get(v.as_tensor()).unwrap());
        let mut want = vec![vec![0.0f32; 4]; 4];
        for (r, c) in [(1, 1), (1, 3), (3, 1), (3, 3)] {
            want[r][c] = 1.0;
        }
        assert_eq!(g, want);
    }

    #[test]
    fn odd_input_2x2_gradient_goes_to_the_right_window() {
        // 5×5 input, 2×2/2 pool → 2×2; the last row and column are outside every window.
        // Make each window's max its top-left element so a misplaced gradient shows.
        let x: Vec<f32> = (0..25).map(|i| 100.0 - i as f32).collect();
        let x = Tensor::from_vec(x, (1, 1, 5, 5), &Device::Cpu).unwrap();
        let v = Var::from_tensor(&x).unwrap();
        let y = max_pool2d_composed(v.as_tensor(), 2, 2, 0).unwrap();
        assert_eq!(grid(&y), vec![vec![100.0, 98.0], vec![90.0, 88.0]]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = grid(g.get(v.as_tensor()).unwrap());
        let mut want = vec![vec![0.0f32; 5]; 5];
        for (r, c) in [(0, 0), (0, 2), (2, 0), (2, 2)] {
            want[r][c] = 1.0;
        }
        assert_eq!(g, want);

        // Candle 0.11's own pool gets this case wrong (see the module docs): it misses the
        // windows starting at row/column 2. If this starts failing, Candle was fixed.
        let v2 = Var::from_tensor(&x).unwrap();
        let y2 = v2.as_tensor().max_pool2d(2).unwrap();
        let g2 = y2.sum_all().unwrap().backward().unwrap();
        assert_ne!(grid(g2.get(v2.as_tensor()).unwrap()), want);
    }

    #[test]
    fn tied_maxima_share_the_gradient() {
        // Every window is all ones: each window's gradient of 1 is split among its four ties.
        let x = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let v = Var::from_tensor(&x).unwrap();
        let y = max_pool2d_composed(v.as_tensor(), 2, 2, 0).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g.get(v.as_tensor()).unwrap();
        // Each window's gradients sum to 1 (mean 1/4), and no tie is left out.
        let windows = g.avg_pool2d(2).unwrap();
        assert_eq!(
            windows.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.25; 4]
        );
        assert!(
            g.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|&v| v > 0.0)
        );
    }

    #[test]
    fn candle_pool_backward_scales_gradients_by_one_over_k_squared() {
        // Our pool gives each window's maximum the full gradient; Candle 0.11's gives 1/4.
        let v = Var::from_tensor(&arange(4, 4)).unwrap();
        let ours = max_pool2d_composed(v.as_tensor(), 2, 2, 0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let theirs = v
            .as_tensor()
            .max_pool2d(2)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let at = |g: &candle_core::backprop::GradStore| grid(g.get(v.as_tensor()).unwrap())[1][1];
        assert_eq!(at(&ours), 1.0);
        assert_eq!(at(&theirs), 0.25);
    }

    #[test]
    fn candle_pool_backward_refuses_kernel_ne_stride() {
        let v = Var::from_tensor(&arange(5, 5)).unwrap();
        let y = v.as_tensor().max_pool2d_with_stride(3, 2).unwrap();
        assert!(y.sum_all().unwrap().backward().is_err());
    }

    #[test]
    fn forward_equals_candle_pool_on_padded_input() {
        // Random values over several odd and even sizes, with and without padding.
        for (h, w) in [(5, 7), (8, 8), (15, 20), (7, 10), (1, 1), (2, 3)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            for (k, s, p) in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (3, 3, 0), (1, 1, 0)] {
                let ours = match max_pool2d_composed(&x, k, s, p) {
                    Ok(t) => t,
                    Err(_) => {
                        assert!(
                            window_out_len(h, k, s, p).is_none()
                                || window_out_len(w, k, s, p).is_none()
                        );
                        continue;
                    }
                };
                let xp = pad_const(&x, 2, p, p, f32::NEG_INFINITY).unwrap();
                let xp = pad_const(&xp, 3, p, p, f32::NEG_INFINITY).unwrap();
                let theirs = xp.max_pool2d_with_stride(k, s).unwrap();
                assert_eq!(ours.dims(), theirs.dims(), "{h}×{w} k{k} s{s} p{p}");
                let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(
                    diff.to_scalar::<f32>().unwrap(),
                    0.0,
                    "{h}×{w} k{k} s{s} p{p}"
                );
            }
        }
    }

    #[test]
    fn rejects_bad_windows() {
        let x = arange(4, 4);
        assert!(max_pool2d_composed(&x, 0, 1, 0).is_err());
        assert!(max_pool2d_composed(&x, 2, 0, 0).is_err());
        assert!(max_pool2d_composed(&x, 3, 2, 2).is_err());
        assert!(max_pool2d_composed(&x, 5, 1, 0).is_err());
    }

    #[test]
    fn global_avg_pool_means_each_channel() {
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 2, 4))
            .unwrap();
        let y = global_avg_pool(&x).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![3.5, 11.5]]);
    }
}
