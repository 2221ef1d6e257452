//! Points, image sizes and face boxes, with the named conversions between pixel and
//! normalised coordinates (see the crate docs for the coordinate convention).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Width and height of an image in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageSize {
    /// Number of columns.
    pub width: u32,
    /// Number of rows.
    pub height: u32,
}

impl ImageSize {
    /// An image size of `width × height` pixels.
    pub const fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    /// Whether a pixel-space point lies inside the image (`0 ≤ x ≤ W`, `0 ≤ y ≤ H`).
    pub fn contains(&self, p: PixelPoint) -> bool {
        p.x >= 0.0 && p.y >= 0.0 && p.x <= self.width as f32 && p.y <= self.height as f32
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// A point in the pixel coordinates of some image (continuous convention, see crate docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PixelPoint {
    /// Horizontal position, in pixels from the left edge.
    pub x: f32,
    /// Vertical position, in pixels from the top edge.
    pub y: f32,
}

/// A point as fractions of an image's width and height: `(0, 0)` is the top-left corner and
/// `(1, 1)` the bottom-right one. This is what the networks regress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NormPoint {
    /// `x / width`.
    pub x: f32,
    /// `y / height`.
    pub y: f32,
}

impl PixelPoint {
    /// A pixel-space point.
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }

    /// This point as fractions of `size`.
    pub fn to_norm(self, size: ImageSize) -> NormPoint {
        NormPoint {
            x: self.x / size.width as f32,
            y: self.y / size.height as f32,
        }
    }

    /// Euclidean distance to another point of the same image.
    pub fn distance(self, other: PixelPoint) -> f32 {
        (self.x - other.x).hypot(self.y - other.y)
    }

    /// Whether both coordinates are finite.
    pub fn is_finite(self) -> bool {
        self.x.is_finite() && self.y.is_finite()
    }
}

impl NormPoint {
    /// A normalised point.
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }

    /// This point in the pixels of an image of `size`.
    pub fn to_pixel(self, size: ImageSize) -> PixelPoint {
        PixelPoint {
            x: self.x * size.width as f32,
            y: self.y * size.height as f32,
        }
    }
}

/// The mean of a non-empty set of points, or `None` for an empty one.
pub fn centroid(points: &[PixelPoint]) -> Option<PixelPoint> {
    if points.is_empty() {
        return None;
    }
    let n = points.len() as f32;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), p| (sx + p.x, sy + p.y));
    Some(PixelPoint::new(sx / n, sy / n))
}

/// An axis-aligned face rectangle in pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaceBox {
    /// Left edge.
    pub left: f32,
    /// Top edge.
    pub top: f32,
    /// Width (> 0 for a usable box).
    pub width: f32,
    /// Height (> 0 for a usable box).
    pub height: f32,
}

impl FaceBox {
    /// A box from its top-left corner and size.
    pub const fn new(left: f32, top: f32, width: f32, height: f32) -> Self {
        Self {
            left,
            top,
            width,
            height,
        }
    }

    /// A box from its two corners (`xmin ymin xmax ymax`, as 300-W box lists give them).
    pub fn from_corners(xmin: f32, ymin: f32, xmax: f32, ymax: f32) -> Self {
        Self::new(xmin, ymin, xmax - xmin, ymax - ymin)
    }

    /// The tight box around a set of points, or `None` for an empty set.
    pub fn around(points: &[PixelPoint]) -> Option<Self> {
        let first = points.first()?;
        let (mut x0, mut y0, mut x1, mut y1) = (first.x, first.y, first.x, first.y);
        for p in points {
            x0 = x0.min(p.x);
            y0 = y0.min(p.y);
            x1 = x1.max(p.x);
            y1 = y1.max(p.y);
        }
        Some(Self::from_corners(x0, y0, x1, y1))
    }

    /// Right edge (`left + width`).
    pub fn right(&self) -> f32 {
        self.left + self.width
    }

    /// Bottom edge (`top + height`).
    pub fn bottom(&self) -> f32 {
        self.top + self.height
    }

    /// Centre of the box.
    pub fn center(&self) -> PixelPoint {
        PixelPoint::new(self.left + self.width / 2.0, self.top + self.height / 2.0)
    }

    /// The square box with the same centre whose side is `factor × max(width, height)`.
    /// Enlarging by a factor > 1 keeps the whole face (chin, brows) inside the crop.
    pub fn square_enlarged(&self, factor: f32) -> Self {
        let side = self.width.max(self.height) * factor;
        let c = self.center();
        Self::new(c.x - side / 2.0, c.y - side / 2.0, side, side)
    }

    /// Whether all four numbers are finite and the box has a positive area.
    pub fn is_valid(&self) -> bool {
        [self.left, self.top, self.width, self.height]
            .iter()
            .all(|v| v.is_finite())
            && self.width > 0.0
            && self.height > 0.0
    }

    /// Whether the box overlaps an image of `size` at all.
    pub fn overlaps(&self, size: ImageSize) -> bool {
        self.right() > 0.0
            && self.bottom() > 0.0
            && self.left < size.width as f32
            && self.top < size.height as f32
    }
}

impl fmt::Display for FaceBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[left {} top {} width {} height {}]",
            self.left, self.top, self.width, self.height
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_and_norm_round_trip() {
        let size = ImageSize::new(640, 480);
        let p = PixelPoint::new(320.0, 120.0);
        let n = p.to_norm(size);
        assert_eq!(n, NormPoint::new(0.5, 0.25));
        assert_eq!(n.to_pixel(size), p);
    }

    #[test]
    fn box_around_points_and_square_enlarge() {
        let pts = [PixelPoint::new(10.0, 20.0), PixelPoint::new(30.0, 60.0)];
        let b = FaceBox::around(&pts).expect("two points");
        assert_eq!(b, FaceBox::new(10.0, 20.0, 20.0, 40.0));
        assert_eq!(b.center(), PixelPoint::new(20.0, 40.0));
        let s = b.square_enlarged(1.5);
        assert_eq!(s, FaceBox::new(-10.0, 10.0, 60.0, 60.0));
        assert!(FaceBox::around(&[]).is_none());
    }

    #[test]
    fn box_validity_and_overlap() {
        let size = ImageSize::new(100, 50);
        assert!(FaceBox::new(90.0, 40.0, 20.0, 20.0).overlaps(size));
        assert!(!FaceBox::new(100.0, 0.0, 5.0, 5.0).overlaps(size));
        assert!(!FaceBox::new(0.0, 0.0, 0.0, 5.0).is_valid());
        assert!(!FaceBox::new(f32::NAN, 0.0, 1.0, 5.0).is_valid());
        assert_eq!(FaceBox::from_corners(1.0, 2.0, 4.0, 8.0).width, 3.0);
    }

    #[test]
    fn centroid_of_points() {
        let c = centroid(&[PixelPoint::new(0.0, 0.0), PixelPoint::new(2.0, 4.0)]);
        assert_eq!(c, Some(PixelPoint::new(1.0, 2.0)));
        assert_eq!(centroid(&[]), None);
    }
}
