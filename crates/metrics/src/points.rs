//! Coordinate-level errors: MSE in normalised coordinates, Euclidean pixel error per point and
//! per face, per-point means over a set of faces, and the per-coordinate mean absolute error.
//!
//! Sums are accumulated in `f64` so that a few thousand faces of 68 points lose no precision
//! before the final `f32`.

use crate::error::{MetricsError, Result};
use fkd_core::{NormPoint, PixelPoint};

/// Checks that a prediction and its ground truth pair up point for point and are not empty.
fn check_pair<T>(pred: &[T], truth: &[T]) -> Result<()> {
    if pred.len() != truth.len() {
        return Err(MetricsError::LengthMismatch {
            pred: pred.len(),
            truth: truth.len(),
        });
    }
    if truth.is_empty() {
        return Err(MetricsError::Empty("a face with no points"));
    }
    Ok(())
}

/// Checks that every coordinate of both point sets is finite; `xy` reads a point's coordinates.
fn check_finite<T: Copy>(pred: &[T], truth: &[T], xy: impl Fn(T) -> (f32, f32)) -> Result<()> {
    for (index, (&p, &t)) in pred.iter().zip(truth).enumerate() {
        let ((px, py), (tx, ty)) = (xy(p), xy(t));
        if ![px, py, tx, ty].iter().all(|v| v.is_finite()) {
            return Err(MetricsError::NonFinitePoint { index });
        }
    }
    Ok(())
}

fn px_xy(p: PixelPoint) -> (f32, f32) {
    (p.x, p.y)
}

fn norm_xy(p: NormPoint) -> (f32, f32) {
    (p.x, p.y)
}

/// Mean squared error in normalised coordinates: the mean over all `2n` coordinates of
/// `(pred − truth)²`, x and y each counting as one term. This is what the write-up's MSE loss
/// reports (and what `candle_nn::loss::mse` computes on a `[n, 2]` tensor).
pub fn mse_normalised(pred: &[NormPoint], truth: &[NormPoint]) -> Result<f32> {
    check_pair(pred, truth)?;
    check_finite(pred, truth, norm_xy)?;
    let sum: f64 = pred
        .iter()
        .zip(truth)
        .map(|(p, t)| {
            let (dx, dy) = (f64::from(p.x - t.x), f64::from(p.y - t.y));
            dx * dx + dy * dy
        })
        .sum();
    Ok((sum / (2 * truth.len()) as f64) as f32)
}

/// Euclidean distance in pixels between each predicted point and its ground truth.
pub fn point_errors(pred: &[PixelPoint], truth: &[PixelPoint]) -> Result<Vec<f32>> {
    check_pair(pred, truth)?;
    check_finite(pred, truth, px_xy)?;
    Ok(pred
        .iter()
        .zip(truth)
        .map(|(p, t)| p.distance(*t))
        .collect())
}

/// Mean Euclidean pixel error over the points of one face.
pub fn mean_point_error(pred: &[PixelPoint], truth: &[PixelPoint]) -> Result<f32> {
    let errors = point_errors(pred, truth)?;
    Ok(mean(&errors))
}

/// Mean absolute error in pixels per coordinate (Part 3's Kaggle metric): the mean over all `2n`
/// x and y coordinates of `|pred − truth|`.
pub fn mae_px(pred: &[PixelPoint], truth: &[PixelPoint]) -> Result<f32> {
    check_pair(pred, truth)?;
    check_finite(pred, truth, px_xy)?;
    let sum: f64 = pred
        .iter()
        .zip(truth)
        .map(|(p, t)| f64::from((p.x - t.x).abs()) + f64::from((p.y - t.y).abs()))
        .sum();
    Ok((sum / (2 * truth.len()) as f64) as f32)
}

/// Mean Euclidean pixel error over a set of `(prediction, truth)` faces, pooling every point of
/// every face (so with equal point counts it is also the mean of the per-face means). Faces may
/// have different point counts; an error names the face it comes from.
pub fn mean_pixel_error<F: AsRef<[PixelPoint]>>(faces: &[(F, F)]) -> Result<f32> {
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for (face, (pred, truth)) in faces.iter().enumerate() {
        let errors = point_errors(pred.as_ref(), truth.as_ref()).map_err(|e| e.in_face(face))?;
        sum += errors.iter().map(|&e| f64::from(e)).sum::<f64>();
        count += errors.len();
    }
    if count == 0 {
        return Err(MetricsError::Empty("no faces"));
    }
    Ok((sum / count as f64) as f32)
}

/// Mean Euclidean pixel error of each point index across a set of `(prediction, truth)` faces:
/// element `i` is the mean over faces of point `i`'s error, which shows which landmarks are hard
/// (jaw line versus eye corners). All faces must have as many points as the first one.
pub fn per_point_mean<F: AsRef<[PixelPoint]>>(faces: &[(F, F)]) -> Result<Vec<f32>> {
    let mut sums: Vec<f64> = Vec::new();
    for (face, (pred, truth)) in faces.iter().enumerate() {
        let errors = point_errors(pred.as_ref(), truth.as_ref()).map_err(|e| e.in_face(face))?;
        if face == 0 {
            sums = vec![0.0; errors.len()];
        } else if errors.len() != sums.len() {
            return Err(MetricsError::PointCount {
                expected: sums.len(),
                got: errors.len(),
            }
            .in_face(face));
        }
        for (s, &e) in sums.iter_mut().zip(&errors) {
            *s += f64::from(e);
        }
    }
    if faces.is_empty() {
        return Err(MetricsError::Empty("no faces"));
    }
    let n = faces.len() as f64;
    Ok(sums.iter().map(|s| (s / n) as f32).collect())
}

/// Median of a set of values (the mean of the two middle ones for an even count). NaN is
/// refused because it has no place in an order.
pub fn median(values: &[f32]) -> Result<f32> {
    if values.is_empty() {
        return Err(MetricsError::Empty("no values for a median"));
    }
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| v.is_nan()) {
        return Err(MetricsError::InvalidErrorValue { index, value });
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let mid = sorted.len() / 2;
    Ok(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        ((f64::from(sorted[mid - 1]) + f64::from(sorted[mid])) / 2.0) as f32
    })
}

/// Mean of a non-empty slice, accumulated in `f64`.
pub(crate) fn mean(values: &[f32]) -> f32 {
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    (sum / values.len().max(1) as f64) as f32
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn px(x: f32, y: f32) -> PixelPoint {
        PixelPoint::new(x, y)
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn mse_counts_x_and_y_as_separate_terms() {
        let pred = [NormPoint::new(0.5, 0.5), NormPoint::new(0.2, 0.4)];
        let truth = [NormPoint::new(0.4, 0.5), NormPoint::new(0.2, 0.1)];
        // Squared coordinate errors 0.01, 0, 0, 0.09: sum 0.1 over 4 terms = 0.025.
        assert!(close(mse_normalised(&pred, &truth).unwrap(), 0.025));
    }

    #[test]
    fn point_and_face_errors() {
        let pred = [px(3.0, 4.0), px(1.0, 1.0)];
        let truth = [px(0.0, 0.0), px(1.0, 2.0)];
        // 3-4-5 triangle, then 1 px straight down.
        assert_eq!(point_errors(&pred, &truth).unwrap(), vec![5.0, 1.0]);
        // (5 + 1) / 2 = 3.
        assert_eq!(mean_point_error(&pred, &truth).unwrap(), 3.0);
        // |3| + |4| + |0| + |−1| = 8 over 4 coordinates = 2.
        assert_eq!(mae_px(&pred, &truth).unwrap(), 2.0);
    }

    #[test]
    fn set_means_pool_points_and_split_by_index() {
        // Face A point errors [5, 1]; face B: (6, 8) is 10 away, (0, 3) is 3 away: [10, 3].
        let faces = vec![
            (
                vec![px(3.0, 4.0), px(1.0, 1.0)],
                vec![px(0.0, 0.0), px(1.0, 2.0)],
            ),
            (
                vec![px(0.0, 0.0), px(0.0, 0.0)],
                vec![px(6.0, 8.0), px(0.0, 3.0)],
            ),
        ];
        // (5 + 1 + 10 + 3) / 4 = 4.75.
        assert_eq!(mean_pixel_error(&faces).unwrap(), 4.75);
        // Point 0: (5 + 10) / 2 = 7.5; point 1: (1 + 3) / 2 = 2.
        assert_eq!(per_point_mean(&faces).unwrap(), vec![7.5, 2.0]);
    }

    #[test]
    fn set_means_accept_borrowed_slices() {
        let (p, t) = ([px(0.0, 0.0)], [px(0.0, 2.0)]);
        let faces: [(&[PixelPoint], &[PixelPoint]); 1] = [(&p, &t)];
        assert_eq!(per_point_mean(&faces).unwrap(), vec![2.0]);
    }

    #[test]
    fn mismatches_and_empty_input_are_errors() {
        let two = [px(0.0, 0.0), px(1.0, 1.0)];
        let one = [px(0.0, 0.0)];
        assert_eq!(
            point_errors(&two, &one),
            Err(MetricsError::LengthMismatch { pred: 2, truth: 1 })
        );
        assert!(matches!(mae_px(&[], &[]), Err(MetricsError::Empty(_))));
        assert!(matches!(
            mse_normalised(&[], &[]),
            Err(MetricsError::Empty(_))
        ));
        let none: [(Vec<PixelPoint>, Vec<PixelPoint>); 0] = [];
        assert!(matches!(per_point_mean(&none), Err(MetricsError::Empty(_))));
        assert!(matches!(
            mean_pixel_error(&none),
            Err(MetricsError::Empty(_))
        ));
        // The second face changes the point count: reported against face 1.
        let faces = vec![(two.to_vec(), two.to_vec()), (one.to_vec(), one.to_vec())];
        assert_eq!(
            per_point_mean(&faces),
            Err(MetricsError::PointCount {
                expected: 2,
                got: 1
            }
            .in_face(1))
        );
        let bad = vec![(two.to_vec(), two.to_vec()), (two.to_vec(), one.to_vec())];
        assert_eq!(
            mean_pixel_error(&bad),
            Err(MetricsError::LengthMismatch { pred: 2, truth: 1 }.in_face(1))
        );
    }

    #[test]
    fn non_finite_coordinates_are_errors() {
        let pred = [px(0.0, 0.0), px(f32::NAN, 1.0)];
        let truth = [px(0.0, 0.0), px(1.0, 1.0)];
        assert_eq!(
            point_errors(&pred, &truth),
            Err(MetricsError::NonFinitePoint { index: 1 })
        );
        let n = [NormPoint::new(f32::INFINITY, 0.0)];
        assert_eq!(
            mse_normalised(&n, &[NormPoint::new(0.0, 0.0)]),
            Err(MetricsError::NonFinitePoint { index: 0 })
        );
    }

    #[test]
    fn median_odd_even_and_nan() {
        assert_eq!(median(&[12.0, 2.0, 5.0]).unwrap(), 5.0);
        // Sorted 1, 2, 4, 9: (2 + 4) / 2 = 3.
        assert_eq!(median(&[9.0, 1.0, 4.0, 2.0]).unwrap(), 3.0);
        assert!(matches!(median(&[]), Err(MetricsError::Empty(_))));
        assert!(matches!(
            median(&[1.0, f32::NAN]),
            Err(MetricsError::InvalidErrorValue { index: 1, .. })
        ));
    }
}
