//! Test helpers: synthetic "dot" images whose bright dots mark landmarks, and a detector that
//! finds each dot again after augmentation.

#![allow(clippy::unwrap_used)]

use fkd_core::{ImageSize, PixelPoint};
use fkd_data::img::GrayImage;
use rand::RngExt;

/// Smallest distance between two generated points: far enough apart that the blurred dots
/// never merge, even shrunk by the smallest scale × stretch.
const MIN_SEPARATION: f32 = 8.0;

/// `n` points at pixel centres inside the central ellipse of `size` (semi-axes 5/16 of the
/// width and 1/3 of the height, 50 × 40 px at 160×120), each at least `MIN_SEPARATION` from the
/// others. The ellipse keeps every point well inside the image under the strongest augmentation
/// the tests draw (rotation 15°, scale × stretch 1.155, shifts).
pub fn random_points(rng: &mut impl RngExt, size: ImageSize, n: usize) -> Vec<PixelPoint> {
    let (w, h) = (size.width as f32, size.height as f32);
    let (cx, cy, ax, ay) = (w / 2.0, h / 2.0, w * 5.0 / 16.0, h / 3.0);
    let mut points: Vec<PixelPoint> = Vec::with_capacity(n);
    for _ in 0..200_000 {
        if points.len() == n {
            break;
        }
        let x = rng.random_range(0..size.width) as f32 + 0.5;
        let y = rng.random_range(0..size.height) as f32 + 0.5;
        let inside = ((x - cx) / ax).powi(2) + ((y - cy) / ay).powi(2) <= 1.0;
        let p = PixelPoint::new(x, y);
        if inside && points.iter().all(|q| q.distance(p) >= MIN_SEPARATION) {
            points.push(p);
        }
    }
    assert_eq!(points.len(), n, "could not place {n} separated points");
    points
}

/// A black image of `size` with a 3×3 white dot centred on each point's pixel.
pub fn dots_image(size: ImageSize, points: &[PixelPoint]) -> GrayImage {
    let mut img = GrayImage::filled(size.width, size.height, -0.5);
    let w = size.width as usize;
    for p in points {
        let (cx, cy) = (p.x.floor() as usize, p.y.floor() as usize);
        for y in cy - 1..=cy + 1 {
            for x in cx - 1..=cx + 1 {
                img.data_mut()[y * w + x] = 0.5;
            }
        }
    }
    img
}

/// Radius of the window a dot's centroid is taken over: a little less than half the smallest
/// distance between two dots after augmentation, so a neighbour never leaks in.
const WINDOW_RADIUS: f32 = 2.5;

/// The dot nearest `p`: the brightness-weighted centroid of the pixels within
/// `WINDOW_RADIUS` of the estimate, starting at `p` and re-centred until it settles. Weights
/// are taken above the darkest pixel near `p`, so a brightness offset does not pull the
/// centroid towards the window's centre. A window centred on a dot covers it symmetrically, so
/// the centroid is unbiased; an estimate off by a pixel moves most of the way each step.
pub fn find_dot(img: &GrayImage, p: PixelPoint) -> PixelPoint {
    let at = |x: i64, y: i64| img.get(x as u32, y as u32).unwrap();
    let (px, py) = (p.x.floor() as i64, p.y.floor() as i64);
    let floor = (py - 4..=py + 4)
        .flat_map(|y| (px - 4..=px + 4).map(move |x| (x, y)))
        .map(|(x, y)| at(x, y))
        .fold(f32::INFINITY, f32::min);
    let mut c = p;
    for _ in 0..10 {
        let (cx, cy) = (c.x.floor() as i64, c.y.floor() as i64);
        let (mut sw, mut sx, mut sy) = (0.0f32, 0.0f32, 0.0f32);
        for y in cy - 3..=cy + 3 {
            for x in cx - 3..=cx + 3 {
                let centre = PixelPoint::new(x as f32 + 0.5, y as f32 + 0.5);
                if centre.distance(c) <= WINDOW_RADIUS {
                    let v = at(x, y) - floor;
                    sw += v;
                    sx += v * centre.x;
                    sy += v * centre.y;
                }
            }
        }
        assert!(sw > 0.0, "no dot near {p:?}");
        let next = PixelPoint::new(sx / sw, sy / sw);
        let moved = next.distance(c);
        c = next;
        if moved < 1e-3 {
            break;
        }
    }
    c
}

/// Asserts that every point lies at least 4 px inside `img` and within 1 px of the dot found
/// near it; returns the largest distance.
pub fn assert_dots_at(img: &GrayImage, points: &[PixelPoint], context: &str) -> f32 {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let mut worst = 0.0f32;
    for (i, &p) in points.iter().enumerate() {
        assert!(
            p.x >= 4.0 && p.y >= 4.0 && p.x <= w - 4.0 && p.y <= h - 4.0,
            "{context}: point {i} at {p:?} left the image"
        );
        let found = find_dot(img, p);
        let d = found.distance(p);
        assert!(
            d <= 1.0,
            "{context}: point {i} at {p:?}, its dot at {found:?}"
        );
        worst = worst.max(d);
    }
    worst
}
