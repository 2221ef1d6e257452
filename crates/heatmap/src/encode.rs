//! Points to maps: one unnormalised Gaussian per point, `exp(−d² / 2σ²)` with its peak of 1 at
//! the point (not at the nearest pixel centre), so the map carries the sub-pixel position and an
//! exact Gaussian decodes back to it.

use crate::{HeatmapError, Result};
use fkd_core::{ImageSize, PixelPoint};

/// Values below this fraction of the peak are written as 0 (beyond 3σ), which keeps the maps
/// sparse for a foreground-weighted loss without changing any decoder's answer.
const CUTOFF: f32 = 0.011_108_996; // exp(−4.5) = exp(−(3σ)²/2σ²)

/// The Gaussian map of one point: `size.width × size.height` values in row-major order,
/// `exp(−((x − p.x)² + (y − p.y)²) / 2σ²)` at each pixel centre `(x, y)`, 0 beyond 3σ. A point
/// outside the map (or not finite) gives an all-zero map: nothing to find.
pub fn gaussian(p: PixelPoint, size: ImageSize, sigma: f32) -> Vec<f32> {
    let (w, h) = (size.width as usize, size.height as usize);
    let mut map = vec![0.0f32; w * h];
    if !p.is_finite() || !size.contains(p) || !sigma.is_finite() || sigma <= 0.0 {
        return map;
    }
    let inv = 1.0 / (2.0 * sigma * sigma);
    let reach = 3.0 * sigma;
    let col = |v: f32, n: usize| (v.max(0.0) as usize).min(n);
    let (x0, x1) = (col(p.x - reach - 0.5, w), col(p.x + reach + 0.5, w));
    let (y0, y1) = (col(p.y - reach - 0.5, h), col(p.y + reach + 0.5, h));
    for r in y0..y1 {
        let dy = r as f32 + 0.5 - p.y;
        for c in x0..x1 {
            let dx = c as f32 + 0.5 - p.x;
            let v = (-(dx * dx + dy * dy) * inv).exp();
            if v >= CUTOFF {
                map[r * w + c] = v;
            }
        }
    }
    map
}

/// The maps of every point, concatenated (`points.len() × height × width` values).
pub fn encode(points: &[PixelPoint], size: ImageSize, sigma: f32) -> Result<Vec<f32>> {
    if size.width == 0 || size.height == 0 {
        return Err(HeatmapError::Config(format!("an empty {size} map")));
    }
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(HeatmapError::Config(format!(
            "sigma must be a positive number, not {sigma}"
        )));
    }
    let mut out = Vec::with_capacity(points.len() * (size.width * size.height) as usize);
    for &p in points {
        out.extend(gaussian(p, size, sigma));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn peak_at_the_point_and_symmetric() {
        let size = ImageSize::new(16, 12);
        let m = gaussian(PixelPoint::new(5.5, 4.5), size, 1.5);
        // The point is pixel (5, 4)'s centre: the peak is exactly 1 there.
        assert_eq!(m[4 * 16 + 5], 1.0);
        assert_eq!(m[4 * 16 + 4], m[4 * 16 + 6]);
        assert_eq!(m[3 * 16 + 5], m[5 * 16 + 5]);
        let e = (-1.0f32 / (2.0 * 1.5 * 1.5)).exp();
        assert!((m[4 * 16 + 6] - e).abs() < 1e-6);
        // Beyond 3σ (4.5 px) it is 0.
        assert_eq!(m[4 * 16 + 11], 0.0);
        assert!(m.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn outside_points_give_empty_maps_and_bad_settings_are_errors() {
        let size = ImageSize::new(8, 8);
        assert!(
            gaussian(PixelPoint::new(-1.0, 3.0), size, 1.0)
                .iter()
                .all(|&v| v == 0.0)
        );
        assert!(
            gaussian(PixelPoint::new(f32::NAN, 3.0), size, 1.0)
                .iter()
                .all(|&v| v == 0.0)
        );
        let maps = encode(
            &[PixelPoint::new(2.0, 2.0), PixelPoint::new(9.0, 2.0)],
            size,
            1.0,
        )
        .unwrap();
        assert_eq!(maps.len(), 2 * 64);
        assert!(maps[..64].iter().any(|&v| v > 0.5));
        assert!(maps[64..].iter().all(|&v| v == 0.0));
        assert!(encode(&[], ImageSize::new(0, 4), 1.0).is_err());
        assert!(encode(&[], size, 0.0).is_err());
        assert!(encode(&[], size, f32::NAN).is_err());
    }
}
