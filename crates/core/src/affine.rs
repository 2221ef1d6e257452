//! 2×3 affine matrices acting on pixel points, kept in `f64` so that composing a handful of
//! transforms and inverting the result loses nothing measurable at image scale.

use crate::geometry::PixelPoint;

/// An affine map of the plane, `x' = a·x + b·y + c`, `y' = d·x + e·y + f`, stored row-major as
/// `[[a, b, c], [d, e, f]]`. Points are in fkd's continuous pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    /// The two rows `[a, b, c]` and `[d, e, f]`.
    pub m: [[f64; 3]; 2],
}

impl Default for Affine {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl Affine {
    /// The map that leaves every point where it is.
    pub const IDENTITY: Affine = Affine {
        m: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
    };

    /// A map from its two rows.
    pub const fn new(m: [[f64; 3]; 2]) -> Self {
        Self { m }
    }

    /// Moving every point by `(dx, dy)`.
    pub const fn translation(dx: f64, dy: f64) -> Self {
        Self::new([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    }

    /// Scaling by `sx` along x and `sy` along y about the origin (a resize, in fkd's continuous
    /// convention).
    pub const fn scaling(sx: f64, sy: f64) -> Self {
        Self::new([[sx, 0.0, 0.0], [0.0, sy, 0.0]])
    }

    /// The linear map `l` (rows `[[a, b], [d, e]]`) applied about `centre` instead of the origin:
    /// `p' = centre + l·(p − centre)`, so `centre` stays put.
    pub fn linear_about(centre: PixelPoint, l: [[f64; 2]; 2]) -> Self {
        let (cx, cy) = (f64::from(centre.x), f64::from(centre.y));
        Self::new([
            [l[0][0], l[0][1], cx - l[0][0] * cx - l[0][1] * cy],
            [l[1][0], l[1][1], cy - l[1][0] * cx - l[1][1] * cy],
        ])
    }

    /// The image of `(x, y)`, in `f64`.
    pub fn apply_f64(&self, x: f64, y: f64) -> (f64, f64) {
        let [[a, b, c], [d, e, f]] = self.m;
        (a * x + b * y + c, d * x + e * y + f)
    }

    /// The image of a point.
    pub fn apply(&self, p: PixelPoint) -> PixelPoint {
        let (x, y) = self.apply_f64(f64::from(p.x), f64::from(p.y));
        PixelPoint::new(x as f32, y as f32)
    }

    /// The map "first `first`, then `self`" (`self ∘ first` in the usual notation).
    pub fn compose(&self, first: &Affine) -> Affine {
        let [[a, b, c], [d, e, f]] = self.m;
        let [[p, q, r], [s, t, u]] = first.m;
        Affine::new([
            [a * p + b * s, a * q + b * t, a * r + b * u + c],
            [d * p + e * s, d * q + e * t, d * r + e * u + f],
        ])
    }

    /// The map "first `self`, then `next`" (`next ∘ self`): reads in the order transforms happen.
    pub fn then(&self, next: &Affine) -> Affine {
        next.compose(self)
    }

    /// Determinant of the linear part (the factor by which areas change; negative for a mirror).
    pub fn determinant(&self) -> f64 {
        self.m[0][0] * self.m[1][1] - self.m[0][1] * self.m[1][0]
    }

    /// The inverse map, or `None` when the map squashes the plane onto a line or a point (or has
    /// a non-finite entry).
    pub fn inverse(&self) -> Option<Affine> {
        let det = self.determinant();
        if det == 0.0 || !det.is_finite() || self.m.iter().flatten().any(|v| !v.is_finite()) {
            return None;
        }
        let [[a, b, c], [d, e, f]] = self.m;
        let inv = 1.0 / det;
        let (ia, ib, id, ie) = (e * inv, -b * inv, -d * inv, a * inv);
        Some(Affine::new([
            [ia, ib, -(ia * c + ib * f)],
            [id, ie, -(id * c + ie * f)],
        ]))
    }

    /// Whether this is exactly the identity (then warping is a copy and points do not move).
    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn close(a: PixelPoint, b: PixelPoint) -> bool {
        a.distance(b) < 1e-4
    }

    #[test]
    fn translation_and_linear_about_centre() {
        let t = Affine::translation(3.0, -2.0);
        assert_eq!(
            t.apply(PixelPoint::new(1.0, 1.0)),
            PixelPoint::new(4.0, -1.0)
        );
        // A half turn about (10, 5) sends (12, 5) to (8, 5) and keeps the centre.
        let half = Affine::linear_about(PixelPoint::new(10.0, 5.0), [[-1.0, 0.0], [0.0, -1.0]]);
        assert_eq!(
            half.apply(PixelPoint::new(12.0, 5.0)),
            PixelPoint::new(8.0, 5.0)
        );
        assert_eq!(
            half.apply(PixelPoint::new(10.0, 5.0)),
            PixelPoint::new(10.0, 5.0)
        );
        assert!(Affine::default().is_identity());
        assert!(!t.is_identity());
    }

    #[test]
    fn compose_applies_right_operand_first() {
        let double = Affine::new([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]);
        let shift = Affine::translation(1.0, 0.0);
        let p = PixelPoint::new(1.0, 1.0);
        // Shift then double: (2, 1) → (4, 2). Double then shift: (2, 2) → (3, 2).
        assert_eq!(double.compose(&shift).apply(p), PixelPoint::new(4.0, 2.0));
        assert_eq!(shift.then(&double).apply(p), PixelPoint::new(4.0, 2.0));
        assert_eq!(shift.compose(&double).apply(p), PixelPoint::new(3.0, 2.0));
    }

    #[test]
    fn inverse_undoes_and_singular_has_none() {
        let m = Affine::new([[0.9, -0.3, 12.5], [0.25, 1.1, -7.0]]);
        let inv = m.inverse().unwrap();
        for p in [
            PixelPoint::new(0.0, 0.0),
            PixelPoint::new(160.0, 120.0),
            PixelPoint::new(-30.5, 77.25),
        ] {
            assert!(close(inv.apply(m.apply(p)), p));
            assert!(close(m.apply(inv.apply(p)), p));
        }
        let back = m.compose(&inv);
        for (row, want) in back.m.iter().zip(Affine::IDENTITY.m) {
            for (v, w) in row.iter().zip(want) {
                assert!((v - w).abs() < 1e-12);
            }
        }
        assert_eq!(
            Affine::new([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]]).inverse(),
            None
        );
        assert_eq!(
            Affine::new([[1.0, 0.0, f64::NAN], [0.0, 1.0, 0.0]]).inverse(),
            None
        );
        assert_eq!(
            Affine::new([[-1.0, 0.0, 4.0], [0.0, 1.0, 0.0]]).determinant(),
            -1.0
        );
    }
}
