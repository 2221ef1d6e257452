//! The face crop of Part 3: a square window around the face box, enlarged so the whole face
//! fits, padded where it leaves the image and resized to the network's input size; with the
//! landmark mapping between source pixels and crop pixels in both directions.
//!
//! The window is aligned to whole source pixels, so the crop resamples the source on its own
//! pixel grid and `x_crop = (x − left) · out / side` holds exactly for the image produced.

use crate::img::GrayImage;
use fkd_core::{Affine, FaceBox, ImageSize, PixelPoint};

/// A square, pixel-aligned window of a source image and the size it is resized to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crop {
    /// The window in the source image's pixels: square, with whole-number left, top and side.
    region: FaceBox,
    /// Size of the cropped image.
    out: ImageSize,
}

impl Crop {
    /// The square window of side `enlarge × max(width, height)` centred on `bbox`, with left,
    /// top and side rounded to whole pixels (side at least 1), resized to `out_side × out_side`.
    ///
    /// The window may extend past the image; [`Crop::apply`] pads there. Rejecting boxes that
    /// miss the image or are not finite is the data set's job.
    pub fn around(bbox: FaceBox, enlarge: f32, out_side: u32) -> Crop {
        let want = bbox.width.max(bbox.height) * enlarge;
        let centre = bbox.center();
        let side = want.round().max(1.0);
        // Centre the rounded side, then snap the corner: the window moves by at most half a
        // pixel, far below annotation noise.
        let left = (centre.x - side / 2.0).round();
        let top = (centre.y - side / 2.0).round();
        Crop {
            region: FaceBox::new(left, top, side, side),
            out: ImageSize::new(out_side, out_side),
        }
    }

    /// The window in source pixels (square, integer-aligned).
    pub fn region(&self) -> FaceBox {
        self.region
    }

    /// Size of the cropped image.
    pub fn out_size(&self) -> ImageSize {
        self.out
    }

    /// Crop pixels per source pixel (`out / side`).
    pub fn scale(&self) -> f32 {
        self.scale_f64() as f32
    }

    fn scale_f64(&self) -> f64 {
        f64::from(self.out.width) / f64::from(self.region.width)
    }

    /// [`Crop::to_source`] as a matrix: `x = left + x' · side / out`.
    pub fn to_source_map(&self) -> Affine {
        let inv = 1.0 / self.scale_f64();
        Affine::new([
            [inv, 0.0, f64::from(self.region.left)],
            [0.0, inv, f64::from(self.region.top)],
        ])
    }

    /// A source-image point in crop pixels: `x' = (x − left) · out / side`, likewise for y.
    pub fn to_crop(&self, p: PixelPoint) -> PixelPoint {
        // f64 inside keeps a source → crop → source round trip exact to well under 1e-4 px
        // even for coordinates in the thousands.
        let s = self.scale_f64();
        PixelPoint::new(
            ((f64::from(p.x) - f64::from(self.region.left)) * s) as f32,
            ((f64::from(p.y) - f64::from(self.region.top)) * s) as f32,
        )
    }

    /// A crop point in source-image pixels: the inverse of [`Crop::to_crop`].
    pub fn to_source(&self, p: PixelPoint) -> PixelPoint {
        let s = self.scale_f64();
        PixelPoint::new(
            (f64::from(p.x) / s + f64::from(self.region.left)) as f32,
            (f64::from(p.y) / s + f64::from(self.region.top)) as f32,
        )
    }

    /// [`Crop::to_crop`] of every point.
    pub fn points_to_crop(&self, points: &[PixelPoint]) -> Vec<PixelPoint> {
        points.iter().map(|&p| self.to_crop(p)).collect()
    }

    /// [`Crop::to_source`] of every point.
    pub fn points_to_source(&self, points: &[PixelPoint]) -> Vec<PixelPoint> {
        points.iter().map(|&p| self.to_source(p)).collect()
    }

    /// The window cut from `img`, with `pad` wherever it lies outside the image, resized to
    /// [`Crop::out_size`] with [`GrayImage::resize`].
    pub fn apply(&self, img: &GrayImage, pad: f32) -> GrayImage {
        // Float → integer casts saturate (NaN → 0), so even an unchecked box cannot panic here.
        let side = self.region.width as u32;
        let left = self.region.left as i64;
        let top = self.region.top as i64;
        let (w, h) = (i64::from(img.width()), i64::from(img.height()));
        let mut window = GrayImage::filled(side, side, pad);
        // Columns of the window that fall inside the image, as window and image indices.
        let x0 = left.clamp(0, w);
        let x1 = (left + i64::from(side)).clamp(0, w);
        if x1 > x0 {
            let n = (x1 - x0) as usize;
            let wx = (x0 - left) as usize;
            let side = side as usize;
            let src_w = img.width() as usize;
            for (wy, row) in window.data_mut().chunks_exact_mut(side).enumerate() {
                let y = top + wy as i64;
                if (0..h).contains(&y) {
                    let src = y as usize * src_w + x0 as usize;
                    row[wx..wx + n].copy_from_slice(&img.data()[src..src + n]);
                }
            }
        }
        window.resize(self.out.width, self.out.height)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Deterministic uniform numbers in `[lo, hi)` (no test-only dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
        }
    }

    #[test]
    fn around_is_square_rounded_and_centred() {
        let c = Crop::around(FaceBox::new(10.3, 20.6, 40.0, 60.2), 1.5, 224);
        // side 90.3 → 90; centre (30.3, 50.7) → left 30.3 − 45 = −14.7 → −15, top 5.7 → 6.
        assert_eq!(c.region(), FaceBox::new(-15.0, 6.0, 90.0, 90.0));
        assert_eq!(c.out_size(), ImageSize::new(224, 224));
        assert!((c.scale() - 224.0 / 90.0).abs() < 1e-6);
        // Degenerate boxes still give a usable 1-pixel window.
        assert_eq!(
            Crop::around(FaceBox::new(5.0, 5.0, 0.0, 0.0), 1.2, 8)
                .region()
                .width,
            1.0
        );
    }

    #[test]
    fn to_crop_formula_and_round_trip() {
        let c = Crop::around(FaceBox::new(100.0, 50.0, 200.0, 100.0), 1.12, 224);
        assert_eq!(c.region(), FaceBox::new(88.0, -12.0, 224.0, 224.0));
        assert_eq!(
            c.to_crop(PixelPoint::new(100.0, 50.0)),
            PixelPoint::new(12.0, 62.0)
        );
        let mut rng = Lcg(7);
        for _ in 0..2000 {
            // Boxes anywhere in and around a ~1000 px image, many partly or wholly outside it.
            let b = FaceBox::new(
                rng.uniform(-300.0, 1000.0),
                rng.uniform(-300.0, 1000.0),
                rng.uniform(5.0, 400.0),
                rng.uniform(5.0, 400.0),
            );
            let c = Crop::around(b, rng.uniform(1.0, 2.0), 224);
            let r = c.region();
            // Points in and around the window, where a face's landmarks are. (Far outside,
            // f32 crop coordinates in the thousands cannot hold 1e-4 px of source precision.)
            let pts: Vec<_> = (0..5)
                .map(|_| {
                    PixelPoint::new(
                        rng.uniform(r.left - r.width / 2.0, r.right() + r.width / 2.0),
                        rng.uniform(r.top - r.height / 2.0, r.bottom() + r.height / 2.0),
                    )
                })
                .collect();
            let back = c.points_to_source(&c.points_to_crop(&pts));
            let map = c.to_source_map();
            for (p, q) in pts.iter().zip(&back) {
                assert!(
                    (p.x - q.x).abs() <= 1e-4 && (p.y - q.y).abs() <= 1e-4,
                    "{p:?} → {q:?} via {c:?}"
                );
                // The matrix form is the same map.
                let m = map.apply(c.to_crop(*p));
                assert!((m.x - q.x).abs() <= 1e-4 && (m.y - q.y).abs() <= 1e-4);
            }
            let corner = c.to_crop(PixelPoint::new(r.right(), r.bottom()));
            assert!((corner.x - 224.0).abs() < 1e-3 && (corner.y - 224.0).abs() < 1e-3);
        }
    }

    /// A black image with one white pixel at each given column and row: a single-pixel dot
    /// stays a strict peak under both bilinear enlarging and antialiased shrinking.
    fn dots(width: u32, height: u32, centres: &[(u32, u32)]) -> GrayImage {
        let mut img = GrayImage::filled(width, height, -0.5);
        for &(x, y) in centres {
            img.data_mut()[(y * width + x) as usize] = 0.5;
        }
        img
    }

    /// The pixel centre of the brightest crop pixel within 4 px of `p`.
    fn brightest_near(img: &GrayImage, p: PixelPoint) -> PixelPoint {
        let mut best = (f32::NEG_INFINITY, PixelPoint::default());
        let (cx, cy) = (p.x.floor() as i64, p.y.floor() as i64);
        for y in cy - 4..=cy + 4 {
            for x in cx - 4..=cx + 4 {
                if x < 0 || y < 0 {
                    continue;
                }
                if let Some(v) = img.get(x as u32, y as u32)
                    && v > best.0
                {
                    best = (v, PixelPoint::new(x as f32 + 0.5, y as f32 + 0.5));
                }
            }
        }
        best.1
    }

    #[test]
    fn apply_puts_landmarks_where_to_crop_says() {
        let centres = [(60, 70), (140, 72), (100, 110), (75, 150), (128, 148)];
        let img = dots(300, 240, &centres);
        let pts: Vec<_> = centres
            .iter()
            .map(|&(x, y)| PixelPoint::new(x as f32 + 0.5, y as f32 + 0.5))
            .collect();
        let bbox = FaceBox::around(&pts).unwrap();
        // Enlarge (224 px out of ~130 px), shrink (out 48) and a non-integer factor (out 97).
        for (enlarge, out) in [(1.4, 224), (1.6, 48), (1.3, 97)] {
            let c = Crop::around(bbox, enlarge, out);
            let crop = c.apply(&img, -0.5);
            assert_eq!(crop.size(), ImageSize::new(out, out));
            for (p, q) in pts.iter().zip(c.points_to_crop(&pts)) {
                let found = brightest_near(&crop, q);
                assert!(
                    found.distance(q) <= 1.0,
                    "out {out}: {p:?} maps to {q:?}, brightest at {found:?}"
                );
            }
        }
    }

    #[test]
    fn box_entirely_outside_gives_all_pad() {
        let img = GrayImage::filled(50, 40, 0.3);
        let c = Crop::around(FaceBox::new(500.0, -300.0, 30.0, 30.0), 1.5, 64);
        let crop = c.apply(&img, -0.25);
        assert_eq!(crop.size(), ImageSize::new(64, 64));
        assert!(crop.data().iter().all(|v| (v + 0.25).abs() < 1e-6));
    }

    #[test]
    fn corner_crop_pads_outside_and_copies_inside() {
        let img = GrayImage::filled(100, 100, 0.25);
        // Window [−50, 50)²: its top-left three quarters lie outside the image.
        let c = Crop::around(FaceBox::new(-50.0, -50.0, 100.0, 100.0), 1.0, 100);
        assert_eq!(c.region(), FaceBox::new(-50.0, -50.0, 100.0, 100.0));
        let crop = c.apply(&img, -0.5);
        for y in 0..100 {
            for x in 0..100 {
                let want = if x >= 50 && y >= 50 { 0.25 } else { -0.5 };
                assert_eq!(crop.get(x, y), Some(want), "({x}, {y})");
            }
        }
        // Halved: pixels two or more away from the seam at 25 are still exact.
        let half =
            Crop::around(FaceBox::new(-50.0, -50.0, 100.0, 100.0), 1.0, 50).apply(&img, -0.5);
        assert!((half.get(40, 40).unwrap() - 0.25).abs() < 1e-6);
        assert!((half.get(10, 40).unwrap() + 0.5).abs() < 1e-6);
        assert!((half.get(40, 10).unwrap() + 0.5).abs() < 1e-6);
        assert!(half.get(24, 40).unwrap() < half.get(25, 40).unwrap());
    }
}
