//! Heatmaps over faces: a map (or the sum of several) resized to the image and blended over it
//! in a black-red-yellow-white ramp, as the write-up shows Part 4's predicted and true maps.

use crate::{Result, VizError};
use fkd_core::ImageSize;
use fkd_data::img::GrayImage;
use image::{Rgb, RgbImage};

/// The sum of `maps` (each `size`, row-major, concatenated), for "all points in one picture".
pub fn sum_maps(maps: &[f32], size: ImageSize) -> Result<Vec<f32>> {
    let per = (size.width as usize) * (size.height as usize);
    if per == 0 || !maps.len().is_multiple_of(per) {
        return Err(VizError::Figure(format!(
            "{} heatmap values are not whole {size} maps",
            maps.len()
        )));
    }
    let mut sum = vec![0.0f32; per];
    for map in maps.chunks_exact(per) {
        for (s, v) in sum.iter_mut().zip(map) {
            *s += v;
        }
    }
    Ok(sum)
}

/// `map` (`size`, row-major) resized to `img` (bilinear) and blended over it, `scale` times
/// larger: the map is normalised by its own maximum (a map without a positive value shows the
/// face alone), and hot pixels run from the face's grey through red and yellow to white.
pub fn heat_overlay(img: &GrayImage, map: &[f32], size: ImageSize, scale: u32) -> Result<RgbImage> {
    let heat = GrayImage::new(size.width, size.height, map.to_vec())
        .ok_or_else(|| VizError::Figure(format!("{} values for a {size} heatmap", map.len())))?;
    let scale = scale.max(1);
    let (w, h) = (img.width() * scale, img.height() * scale);
    let heat = heat.resize(w, h);
    let top = heat.data().iter().copied().fold(0.0f32, f32::max);
    let face = img.to_luma8();
    Ok(RgbImage::from_fn(w, h, |x, y| {
        let g = f32::from(face.get_pixel(x / scale, y / scale).0[0]);
        let t = if top > 0.0 {
            (heat.data()[(y * w + x) as usize] / top).clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Ramp: red rises first, then green, then blue; blended in by t.
        let ramp = [
            (3.0 * t).min(1.0),
            (3.0 * t - 1.0).clamp(0.0, 1.0),
            (3.0 * t - 2.0).clamp(0.0, 1.0),
        ];
        let mix = |c: f32| (g * (1.0 - t) + 255.0 * c * t).round().clamp(0.0, 255.0) as u8;
        Rgb([mix(ramp[0]), mix(ramp[1]), mix(ramp[2])])
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn overlay_is_hot_where_the_map_peaks_and_grey_elsewhere() {
        let img = GrayImage::filled(8, 4, 0.0);
        let mut map = vec![0.0; 4 * 2];
        map[4 + 3] = 2.0; // (3, 1) of a 4×2 map: the image's right half, bottom half.
        let out = heat_overlay(&img, &map, ImageSize::new(4, 2), 1).unwrap();
        assert_eq!(out.dimensions(), (8, 4));
        let corner = out.get_pixel(0, 0).0;
        assert_eq!(corner[0], corner[1]);
        assert_eq!(corner[1], corner[2]);
        let hot = out.get_pixel(7, 3).0;
        assert!(
            hot[0] > corner[0] && hot[0] >= hot[2],
            "{hot:?} vs {corner:?}"
        );
        // No positive value: the face alone.
        let plain = heat_overlay(&img, &[0.0; 8], ImageSize::new(4, 2), 2).unwrap();
        assert!(plain.pixels().all(|p| p.0 == corner));
        assert!(heat_overlay(&img, &[0.0; 7], ImageSize::new(4, 2), 1).is_err());
    }

    #[test]
    fn sums_add_maps_point_by_point() {
        let size = ImageSize::new(2, 1);
        assert_eq!(
            sum_maps(&[1.0, 0.0, 0.5, 2.0], size).unwrap(),
            vec![1.5, 2.0]
        );
        assert!(sum_maps(&[1.0, 0.0, 0.5], size).is_err());
    }
}
