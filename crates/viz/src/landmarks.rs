//! Landmarks drawn on a face: the grey image enlarged so the dots are visible, then for each
//! layer (ground truth, prediction, ...) the layout's contours as thin lines and every point as
//! a small filled disc.

use fkd_core::{Layout, PixelPoint};
use fkd_data::img::GrayImage;
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_circle_mut, draw_line_segment_mut};

/// Colour of ground-truth landmarks (blue, as in the write-up).
pub const TRUTH: Rgb<u8> = Rgb([0, 90, 255]);

/// Colour of predicted landmarks (red, as in the write-up).
pub const PREDICTION: Rgb<u8> = Rgb([230, 30, 30]);

/// The face `img` enlarged `scale` times (nearest neighbour; 0 counts as 1) with each layer's
/// points drawn in its colour, layers in order (later ones on top).
///
/// Points are in `img`'s pixel coordinates (continuous convention: pixel `(c, r)` covers
/// `[c, c+1) × [r, r+1)`), so a point `(x, y)` lands at `(x·scale, y·scale)`. With a `layout`,
/// the segments of [`Layout::edges`] are drawn first, between the points they join; segments
/// that name a point the layer lacks are skipped, as are non-finite points.
pub fn draw_landmarks(
    img: &GrayImage,
    layers: &[(&[PixelPoint], Rgb<u8>)],
    layout: Option<&Layout>,
    scale: u32,
) -> RgbImage {
    let scale = scale.max(1);
    let luma = img.to_luma8();
    let base = RgbImage::from_fn(img.width() * scale, img.height() * scale, |x, y| {
        let v = luma.get_pixel(x / scale, y / scale).0[0];
        Rgb([v, v, v])
    });
    draw_on(base, layers, layout, scale)
}

/// [`draw_landmarks`] on a colour photo, in its own colours.
pub fn draw_landmarks_rgb(
    img: &RgbImage,
    layers: &[(&[PixelPoint], Rgb<u8>)],
    layout: Option<&Layout>,
    scale: u32,
) -> RgbImage {
    let scale = scale.max(1);
    let base = RgbImage::from_fn(img.width() * scale, img.height() * scale, |x, y| {
        *img.get_pixel(x / scale, y / scale)
    });
    draw_on(base, layers, layout, scale)
}

/// Draws the layers on `out`, an image `scale` times the points' image.
fn draw_on(
    mut out: RgbImage,
    layers: &[(&[PixelPoint], Rgb<u8>)],
    layout: Option<&Layout>,
    scale: u32,
) -> RgbImage {
    let radius = dot_radius(out.width(), out.height());
    let s = scale as f32;
    for &(points, colour) in layers {
        let at = |i: usize| {
            points
                .get(i)
                .filter(|p| p.is_finite())
                .map(|p| (p.x * s, p.y * s))
        };
        if let Some(layout) = layout {
            for (a, b) in layout.edges() {
                if let (Some(pa), Some(pb)) = (at(a), at(b)) {
                    draw_line_segment_mut(&mut out, pa, pb, colour);
                }
            }
        }
        for (x, y) in (0..points.len()).filter_map(at) {
            // Points far outside the canvas would only cost time; imageproc clips the rest.
            if x.abs() < 1e6 && y.abs() < 1e6 {
                draw_filled_circle_mut(
                    &mut out,
                    (x.round() as i32, y.round() as i32),
                    radius,
                    colour,
                );
            }
        }
    }
    out
}

/// A disc radius that stays visible on a large figure without hiding neighbours on a small one.
fn dot_radius(width: u32, height: u32) -> i32 {
    (width.min(height) / 128).clamp(2, 6) as i32
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fkd_core::layout::Path;

    const LINE: Layout = Layout {
        name: "test3",
        n_points: 3,
        paths: &[Path {
            name: "line",
            start: 0,
            len: 3,
            closed: false,
        }],
        mirror: &[2, 1, 0],
        ocular: fkd_core::Ocular::Corners(0, 2),
    };

    fn grey() -> GrayImage {
        GrayImage::filled(20, 20, 0.0)
    }

    #[test]
    fn upscales_the_image_by_nearest_neighbour() {
        let mut img = GrayImage::filled(2, 1, -0.5);
        img.data_mut()[1] = 0.5;
        let out = draw_landmarks(&img, &[], None, 3);
        assert_eq!(out.dimensions(), (6, 3));
        assert_eq!(*out.get_pixel(2, 2), Rgb([0, 0, 0]));
        assert_eq!(*out.get_pixel(3, 0), Rgb([255, 255, 255]));
    }

    #[test]
    fn points_are_drawn_at_scaled_positions_in_their_layer_colour() {
        let truth = [PixelPoint::new(5.0, 5.0)];
        let pred = [PixelPoint::new(15.0, 10.0)];
        let out = draw_landmarks(&grey(), &[(&truth, TRUTH), (&pred, PREDICTION)], None, 4);
        assert_eq!(out.dimensions(), (80, 80));
        assert_eq!(*out.get_pixel(20, 20), TRUTH);
        assert_eq!(*out.get_pixel(60, 40), PREDICTION);
        // Away from both points the image is untouched mid grey.
        assert_eq!(*out.get_pixel(40, 70), Rgb([128, 128, 128]));
    }

    #[test]
    fn edges_join_consecutive_points_only() {
        let pts = [
            PixelPoint::new(2.0, 2.0),
            PixelPoint::new(18.0, 2.0),
            PixelPoint::new(18.0, 18.0),
        ];
        let out = draw_landmarks(&grey(), &[(&pts, TRUTH)], Some(&LINE), 4);
        // Midpoints of the two segments 0–1 and 1–2.
        assert_eq!(*out.get_pixel(40, 8), TRUTH);
        assert_eq!(*out.get_pixel(72, 40), TRUTH);
        // The open path is not closed: the midpoint of 2–0 stays grey.
        assert_eq!(*out.get_pixel(40, 40), Rgb([128, 128, 128]));
        // Without a layout, no lines at all.
        let bare = draw_landmarks(&grey(), &[(&pts, TRUTH)], None, 4);
        assert_eq!(*bare.get_pixel(40, 8), Rgb([128, 128, 128]));
    }

    #[test]
    fn missing_and_non_finite_points_are_skipped() {
        let pts = [PixelPoint::new(f32::NAN, 2.0), PixelPoint::new(18.0, 2.0)];
        let out = draw_landmarks(&grey(), &[(&pts, PREDICTION)], Some(&LINE), 2);
        assert_eq!(*out.get_pixel(36, 4), PREDICTION);
        assert_eq!(*out.get_pixel(20, 4), Rgb([128, 128, 128]));
        let far = [PixelPoint::new(1e30, -1e30)];
        let out = draw_landmarks(&grey(), &[(&far, PREDICTION)], None, 0);
        assert_eq!(out.dimensions(), (20, 20));
        assert!(out.pixels().all(|p| *p == Rgb([128, 128, 128])));
    }
}
