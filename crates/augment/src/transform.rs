//! The individual geometric transforms of augmentation, each an [`Affine`] about the image
//! centre, so that the face (roughly centred) stays in frame and a flip is `x' = W − x`.

use fkd_core::Affine;
use fkd_core::{ImageSize, PixelPoint};

/// One geometric transform of an image of a given size.
///
/// A [`Transform::FlipHorizontal`] matrix moves points but does not renumber them; the
/// [`Augmenter`](crate::Augmenter) adds the layout's left/right permutation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transform {
    /// Mirror left–right about the vertical centre line: `x' = W − x`.
    FlipHorizontal,
    /// Scale about the centre by `x` horizontally and `y` vertically (equal for an isotropic
    /// scale, different for a stretch).
    Scale {
        /// Horizontal factor.
        x: f32,
        /// Vertical factor.
        y: f32,
    },
    /// Rotate about the centre by `degrees`; positive turns clockwise on screen, because the
    /// y axis points down.
    Rotate {
        /// Angle in degrees.
        degrees: f32,
    },
    /// Move by `(dx, dy)` pixels.
    Shift {
        /// Horizontal offset in pixels (positive: right).
        dx: f32,
        /// Vertical offset in pixels (positive: down).
        dy: f32,
    },
}

impl Transform {
    /// An isotropic scale by `s`.
    pub const fn scale(s: f32) -> Transform {
        Transform::Scale { x: s, y: s }
    }

    /// This transform's matrix for an image of `size`.
    pub fn matrix(&self, size: ImageSize) -> Affine {
        let centre = PixelPoint::new(size.width as f32 / 2.0, size.height as f32 / 2.0);
        match *self {
            Transform::FlipHorizontal => Affine::linear_about(centre, [[-1.0, 0.0], [0.0, 1.0]]),
            Transform::Scale { x, y } => {
                Affine::linear_about(centre, [[f64::from(x), 0.0], [0.0, f64::from(y)]])
            }
            Transform::Rotate { degrees } => {
                if degrees == 0.0 {
                    // sin/cos of 0 are exact, but say so: no rotation must be exactly no matrix.
                    return Affine::IDENTITY;
                }
                let (s, c) = f64::from(degrees).to_radians().sin_cos();
                Affine::linear_about(centre, [[c, -s], [s, c]])
            }
            Transform::Shift { dx, dy } => Affine::translation(f64::from(dx), f64::from(dy)),
        }
    }
}

/// The matrix of `transforms` applied in slice order (the first one acts first).
pub fn compose(transforms: &[Transform], size: ImageSize) -> Affine {
    transforms
        .iter()
        .fold(Affine::IDENTITY, |acc, t| acc.then(&t.matrix(size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: ImageSize = ImageSize::new(160, 120);

    fn close(a: PixelPoint, b: PixelPoint) -> bool {
        a.distance(b) < 1e-4
    }

    #[test]
    fn flip_follows_the_pixel_convention() {
        let m = Transform::FlipHorizontal.matrix(SIZE);
        assert_eq!(
            m.apply(PixelPoint::new(10.0, 7.0)),
            PixelPoint::new(150.0, 7.0)
        );
        // The centre of pixel 0 goes to the centre of pixel W − 1.
        assert_eq!(
            m.apply(PixelPoint::new(0.5, 3.5)),
            PixelPoint::new(159.5, 3.5)
        );
    }

    #[test]
    fn scale_and_rotation_keep_the_centre() {
        let c = PixelPoint::new(80.0, 60.0);
        let s = Transform::Scale { x: 2.0, y: 0.5 }.matrix(SIZE);
        assert_eq!(s.apply(c), c);
        assert_eq!(
            s.apply(PixelPoint::new(90.0, 70.0)),
            PixelPoint::new(100.0, 65.0)
        );
        let r = Transform::Rotate { degrees: 90.0 }.matrix(SIZE);
        assert!(close(r.apply(c), c));
        // Clockwise on screen: a point to the right of the centre moves below it.
        assert!(close(
            r.apply(PixelPoint::new(90.0, 60.0)),
            PixelPoint::new(80.0, 70.0)
        ));
        assert!(
            Transform::Rotate { degrees: 0.0 }
                .matrix(SIZE)
                .is_identity()
        );
        assert!(Transform::scale(1.0).matrix(SIZE).is_identity());
    }

    #[test]
    fn compose_applies_in_slice_order() {
        let shift = Transform::Shift { dx: 10.0, dy: 0.0 };
        let double = Transform::scale(2.0);
        let p = PixelPoint::new(80.0, 60.0);
        // Shift then scale about the centre: the offset doubles. Scale then shift: it does not.
        assert_eq!(
            compose(&[shift, double], SIZE).apply(p),
            PixelPoint::new(100.0, 60.0)
        );
        assert_eq!(
            compose(&[double, shift], SIZE).apply(p),
            PixelPoint::new(90.0, 60.0)
        );
        assert!(compose(&[], SIZE).is_identity());
    }
}
