//! The learned filters of a convolution (conv1 in the write-up) as a grid of grey tiles, each
//! stretched to its own range so its pattern is visible whatever its magnitude.

use crate::{Result, VizError};
use image::{Rgb, RgbImage};

/// Colour of the 1-pixel lines between tiles: neither black nor white nor grey, so it cannot be
/// mistaken for a weight.
pub const SEPARATOR: Rgb<u8> = Rgb([70, 110, 160]);

/// The filters of a convolution with weights of `shape = [out, in, kh, kw]` (row-major, as
/// Candle stores them) as tiles of `kw·scale × kh·scale` pixels (0 counts as 1) separated and
/// framed by 1-pixel [`SEPARATOR`] lines.
///
/// Each `(out, in)` kernel is one tile, mapped linearly from its own minimum (black) to its
/// maximum (white); a constant kernel is mid grey and non-finite weights are black. The tiles of
/// one output filter stay on one row: a grid has about √(out·in) columns, rounded up to a multiple
/// of `in`. Fails when `weights` does not hold `out·in·kh·kw` values.
pub fn filter_grid(weights: &[f32], shape: [usize; 4], scale: u32) -> Result<RgbImage> {
    let [n_out, n_in, kh, kw] = shape;
    let expected = n_out
        .checked_mul(n_in)
        .and_then(|v| v.checked_mul(kh))
        .and_then(|v| v.checked_mul(kw));
    if expected != Some(weights.len()) {
        return Err(VizError::Shape {
            shape,
            expected: expected.unwrap_or(usize::MAX),
            actual: weights.len(),
        });
    }
    let scale = scale.max(1) as usize;
    let tiles = n_out * n_in;
    let cols = if tiles == 0 {
        0
    } else {
        ((tiles as f64).sqrt().ceil() as usize).div_ceil(n_in) * n_in
    };
    let rows = if cols == 0 { 0 } else { tiles.div_ceil(cols) };
    let (tile_w, tile_h) = (kw * scale, kh * scale);
    let width = cols * (tile_w + 1) + 1;
    let height = rows * (tile_h + 1) + 1;
    let mut out = RgbImage::from_pixel(width as u32, height as u32, SEPARATOR);
    let kernel_len = kh * kw;
    for (t, kernel) in weights.chunks(kernel_len.max(1)).take(tiles).enumerate() {
        let (lo, hi) = kernel
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let x0 = 1 + (t % cols) * (tile_w + 1);
        let y0 = 1 + (t / cols) * (tile_h + 1);
        for (i, &v) in kernel.iter().enumerate() {
            let g = grey(v, lo, hi);
            let (kx, ky) = (i % kw, i / kw);
            for dy in 0..scale {
                for dx in 0..scale {
                    let x = x0 + kx * scale + dx;
                    let y = y0 + ky * scale + dy;
                    out.put_pixel(x as u32, y as u32, Rgb([g, g, g]));
                }
            }
        }
    }
    Ok(out)
}

/// `v` mapped from `[lo, hi]` to `[0, 255]`.
fn grey(v: f32, lo: f32, hi: f32) -> u8 {
    if !v.is_finite() {
        0
    } else if hi > lo {
        ((v - lo) / (hi - lo) * 255.0).round().clamp(0.0, 255.0) as u8
    } else {
        128
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tiles_have_the_right_size_and_separators() {
        // 4 filters of 1 channel, 3×2 kernels, scale 2: a 2×2 grid of 6×4 tiles.
        let w: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let img = filter_grid(&w, [4, 1, 2, 3], 2).unwrap();
        assert_eq!(img.dimensions(), (2 * 7 + 1, 2 * 5 + 1));
        for x in 0..img.width() {
            assert_eq!(*img.get_pixel(x, 0), SEPARATOR);
            assert_eq!(*img.get_pixel(x, 5), SEPARATOR);
        }
        for y in 0..img.height() {
            assert_eq!(*img.get_pixel(7, y), SEPARATOR);
        }
    }

    #[test]
    fn each_tile_is_normalised_to_its_own_range() {
        // Two 2×2 kernels with very different magnitudes.
        let w = [-1.0, 0.0, 0.5, 1.0, 100.0, 300.0, 200.0, 100.0];
        let img = filter_grid(&w, [2, 1, 2, 2], 1).unwrap();
        assert_eq!(img.dimensions(), (7, 4));
        let g = |x, y| img.get_pixel(x, y).0[0];
        // First tile at (1, 1): min -1 black, max 1 white, 0 in the middle.
        assert_eq!((g(1, 1), g(2, 1), g(1, 2), g(2, 2)), (0, 128, 191, 255));
        // Second tile at (4, 1): 100 black, 300 white, 200 mid.
        assert_eq!((g(4, 1), g(5, 1), g(4, 2), g(5, 2)), (0, 255, 128, 0));
        assert_eq!(img.get_pixel(2, 1).0, [128, 128, 128]);
    }

    #[test]
    fn filters_of_one_output_stay_on_one_row() {
        // 3 outputs × 2 inputs of 1×1 kernels: ceil(sqrt(6)) = 3 rounded up to 4 columns.
        let w = [0.0; 6];
        let img = filter_grid(&w, [3, 2, 1, 1], 1).unwrap();
        assert_eq!(img.dimensions(), (4 * 2 + 1, 2 * 2 + 1));
        // Constant kernels are mid grey; the unused last two cells keep the separator colour.
        assert_eq!(img.get_pixel(1, 1).0, [128, 128, 128]);
        assert_eq!(img.get_pixel(3, 3).0, [128, 128, 128]);
        assert_eq!(*img.get_pixel(5, 3), SEPARATOR);
    }

    #[test]
    fn wrong_sizes_are_errors_not_panics() {
        assert!(matches!(
            filter_grid(&[0.0; 5], [1, 1, 2, 3], 1),
            Err(VizError::Shape {
                expected: 6,
                actual: 5,
                ..
            })
        ));
        assert!(filter_grid(&[], [usize::MAX, 2, 2, 2], 1).is_err());
        assert_eq!(
            filter_grid(&[], [0, 1, 3, 3], 4).unwrap().dimensions(),
            (1, 1)
        );
        let nan = filter_grid(&[f32::NAN, 1.0], [1, 1, 1, 2], 1).unwrap();
        assert_eq!(nan.get_pixel(1, 1).0, [0, 0, 0]);
    }
}
