//! Normalised mean error per face and the statistics of a set of such errors: failure rate,
//! cumulative error distribution (CED) and the area under it.
//!
//! Definitions, for per-face errors `e_1 … e_n` (each finite and ≥ 0):
//! - NME of a face: its mean Euclidean point error divided by the ground truth's inter-ocular
//!   distance, [`Layout::interocular`] (IMM 58: distance of the two eye-contour centroids;
//!   iBUG 68: outer eye corners 36 and 45).
//! - Failure rate at `t`: `|{i : e_i > t}| / n`.
//! - CED at `x`: `|{i : e_i ≤ x}| / n`, a right-continuous step function of `x`.
//! - AUC at `t`: `(1/t) ∫₀ᵗ CED(x) dx`, in `[0, 1]`. Integrated exactly: face `i` contributes
//!   `1/n` to the CED on `[e_i, ∞)`, hence `(t − e_i)/n` to the integral when `e_i < t`, so
//!   `AUC_t = Σ_i max(0, t − e_i) / (n·t)`: no grid, no discretisation error.

use crate::error::{MetricsError, Result};
use crate::points::point_errors;
use fkd_core::{Layout, PixelPoint};

/// The NME threshold at which failure rate and AUC are usually reported (300-W convention).
pub const THRESHOLD_008: f32 = 0.08;
/// The looser NME threshold at which failure rate is also reported.
pub const THRESHOLD_010: f32 = 0.10;

/// The NME normaliser of a ground-truth face: its inter-ocular distance under `layout`.
pub fn interocular_normaliser(truth: &[PixelPoint], layout: &Layout) -> Result<f32> {
    if truth.len() != layout.n_points {
        return Err(MetricsError::PointCount {
            expected: layout.n_points,
            got: truth.len(),
        });
    }
    match layout.interocular(truth) {
        Some(d) if d.is_finite() && d > 0.0 => Ok(d),
        Some(d) => Err(MetricsError::DegenerateNormaliser(d)),
        // Unreachable after the count check, but a layout whose paths do not cover its points
        // must not panic either.
        None => Err(MetricsError::DegenerateNormaliser(f32::NAN)),
    }
}

/// Normalised mean error of one face: mean point error in pixels divided by the inter-ocular
/// distance of the *ground truth* (never the prediction's, which the model could shrink).
pub fn nme(pred: &[PixelPoint], truth: &[PixelPoint], layout: &Layout) -> Result<f32> {
    let errors = point_errors(pred, truth)?;
    let d = interocular_normaliser(truth, layout)?;
    Ok(crate::points::mean(&errors) / d)
}

/// The NME of each face of a set of `(prediction, truth)` faces; an error names its face.
pub fn nme_per_face<F: AsRef<[PixelPoint]>>(faces: &[(F, F)], layout: &Layout) -> Result<Vec<f32>> {
    faces
        .iter()
        .enumerate()
        .map(|(face, (p, t))| nme(p.as_ref(), t.as_ref(), layout).map_err(|e| e.in_face(face)))
        .collect()
}

/// Checks a set of per-face errors: non-empty, every value finite and ≥ 0.
fn check_errors(errors: &[f32]) -> Result<()> {
    if errors.is_empty() {
        return Err(MetricsError::Empty("no per-face errors"));
    }
    match errors
        .iter()
        .enumerate()
        .find(|(_, e)| !(e.is_finite() && **e >= 0.0))
    {
        Some((index, &value)) => Err(MetricsError::InvalidErrorValue { index, value }),
        None => Ok(()),
    }
}

/// Fraction of faces whose error is strictly above `threshold` (see the module docs).
pub fn failure_rate(errors: &[f32], threshold: f32) -> Result<f32> {
    check_errors(errors)?;
    if !threshold.is_finite() {
        return Err(MetricsError::InvalidThreshold {
            value: threshold,
            reason: "must be finite",
        });
    }
    let failed = errors.iter().filter(|&&e| e > threshold).count();
    Ok((failed as f64 / errors.len() as f64) as f32)
}

/// The cumulative error distribution at each `x` of `grid`: the fraction of faces with error
/// `≤ x`. The result is aligned with `grid`, which need not be sorted.
pub fn ced(errors: &[f32], grid: &[f32]) -> Result<Vec<f32>> {
    check_errors(errors)?;
    if let Some(&value) = grid.iter().find(|x| !x.is_finite()) {
        return Err(MetricsError::InvalidThreshold {
            value,
            reason: "CED grid values must be finite",
        });
    }
    let mut sorted = errors.to_vec();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len() as f64;
    Ok(grid
        .iter()
        .map(|&x| (sorted.partition_point(|&e| e <= x) as f64 / n) as f32)
        .collect())
}

/// `steps + 1` evenly spaced values from 0 to `max` inclusive, a grid for plotting [`ced`]
/// (`steps` of 0 is taken as 1).
pub fn ced_grid(max: f32, steps: usize) -> Vec<f32> {
    let steps = steps.max(1);
    (0..=steps)
        .map(|i| (f64::from(max) * i as f64 / steps as f64) as f32)
        .collect()
}

/// Area under the CED from 0 to `threshold`, divided by `threshold` so that 1 is perfect and 0
/// means every face fails; computed exactly as `Σ max(0, t − e_i) / (n·t)` (see module docs).
pub fn auc(errors: &[f32], threshold: f32) -> Result<f32> {
    check_errors(errors)?;
    if !(threshold.is_finite() && threshold > 0.0) {
        return Err(MetricsError::InvalidThreshold {
            value: threshold,
            reason: "must be finite and positive",
        });
    }
    let t = f64::from(threshold);
    let area: f64 = errors.iter().map(|&e| (t - f64::from(e)).max(0.0)).sum();
    Ok((area / (errors.len() as f64 * t)) as f32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    /// An iBUG-68 face with every point at the origin except the outer eye corners.
    fn ibug_face(right_outer: PixelPoint, left_outer: PixelPoint) -> Vec<PixelPoint> {
        let mut pts = vec![PixelPoint::default(); 68];
        pts[36] = right_outer;
        pts[45] = left_outer;
        pts
    }

    const THREE: [f32; 3] = [0.02, 0.05, 0.12];

    #[test]
    fn ibug_nme_uses_the_ground_truth_outer_corners() {
        // Truth corners (10, 10) and (40, 50): 30-40-50 triangle, d = 50.
        let truth = ibug_face(PixelPoint::new(10.0, 10.0), PixelPoint::new(40.0, 50.0));
        // The prediction moves point 45 down by 50: one point 50 px off, mean 50/68 px.
        // Its own corner distance would be sqrt(30² + 90²) ≈ 94.9, which must not be used.
        let pred = ibug_face(PixelPoint::new(10.0, 10.0), PixelPoint::new(40.0, 100.0));
        // NME = (50/68) / 50 = 1/68 ≈ 0.0147059.
        assert!(close(
            nme(&pred, &truth, &Layout::IBUG68).unwrap(),
            1.0 / 68.0
        ));
    }

    #[test]
    fn imm_nme_uses_eye_contour_centres() {
        // Left-eye contour (13..21) centred on (100, 7), right-eye contour (21..29) on (40, 7):
        // d = 60. Half of each contour sits 2 px above and half 2 px below, so the centroid is
        // the centre while no single point is on it (a point-based normaliser would differ).
        let mut truth = vec![PixelPoint::new(70.0, 30.0); 58];
        for (k, i) in (13..21).enumerate() {
            let dy = if k % 2 == 0 { 2.0 } else { -2.0 };
            truth[i] = PixelPoint::new(100.0, 7.0 + dy);
            truth[i + 8] = PixelPoint::new(40.0, 7.0 + dy);
        }
        assert_eq!(
            interocular_normaliser(&truth, &Layout::IMM58).unwrap(),
            60.0
        );
        // Every predicted point off by (3, 4): error 5 each, NME = 5/60 = 1/12.
        let pred: Vec<PixelPoint> = truth
            .iter()
            .map(|p| PixelPoint::new(p.x + 3.0, p.y + 4.0))
            .collect();
        assert!(close(
            nme(&pred, &truth, &Layout::IMM58).unwrap(),
            1.0 / 12.0
        ));
    }

    #[test]
    fn nme_refuses_bad_faces() {
        let ok = ibug_face(PixelPoint::new(0.0, 0.0), PixelPoint::new(10.0, 0.0));
        // Corners on top of each other: d = 0.
        let flat = ibug_face(PixelPoint::new(5.0, 5.0), PixelPoint::new(5.0, 5.0));
        assert_eq!(
            nme(&ok, &flat, &Layout::IBUG68),
            Err(MetricsError::DegenerateNormaliser(0.0))
        );
        // 68 points against IMM's 58.
        assert_eq!(
            nme(&ok, &ok, &Layout::IMM58),
            Err(MetricsError::PointCount {
                expected: 58,
                got: 68
            })
        );
        assert_eq!(
            nme(&ok[..67], &ok, &Layout::IBUG68),
            Err(MetricsError::LengthMismatch {
                pred: 67,
                truth: 68
            })
        );
        let faces = vec![(ok.clone(), ok.clone()), (ok.clone(), flat)];
        assert_eq!(
            nme_per_face(&faces, &Layout::IBUG68),
            Err(MetricsError::DegenerateNormaliser(0.0).in_face(1))
        );
        // Face 0 is perfect: NME 0.
        assert_eq!(
            nme_per_face(&faces[..1], &Layout::IBUG68).unwrap(),
            vec![0.0]
        );
    }

    #[test]
    fn failure_rate_is_strictly_above_threshold() {
        // Only 0.12 exceeds 0.08 and 0.10: 1/3 at both.
        assert!(close(
            failure_rate(&THREE, THRESHOLD_008).unwrap(),
            1.0 / 3.0
        ));
        assert!(close(
            failure_rate(&THREE, THRESHOLD_010).unwrap(),
            1.0 / 3.0
        ));
        // 0.05 and 0.12 exceed 0.03; nothing exceeds 0.12 itself.
        assert!(close(failure_rate(&THREE, 0.03).unwrap(), 2.0 / 3.0));
        assert_eq!(failure_rate(&THREE, 0.12).unwrap(), 0.0);
    }

    #[test]
    fn ced_counts_errors_at_or_below_each_grid_value() {
        let grid = [0.0, 0.02, 0.05, 0.08, 0.2, 0.12];
        let curve = ced(&THREE, &grid).unwrap();
        let want = [0.0, 1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 1.0, 1.0];
        for (got, want) in curve.iter().zip(want) {
            assert!(close(*got, want), "{curve:?}");
        }
        assert_eq!(ced_grid(0.1, 4), vec![0.0, 0.025, 0.05, 0.075, 0.1]);
        assert_eq!(ced_grid(1.0, 0), vec![0.0, 1.0]);
    }

    #[test]
    fn auc_is_exact() {
        // ((0.08 − 0.02) + (0.08 − 0.05) + 0) / (3 · 0.08) = 0.09 / 0.24 = 0.375.
        assert!(close(auc(&THREE, THRESHOLD_008).unwrap(), 0.375));
        // ((0.10 − 0.02) + (0.10 − 0.05)) / (3 · 0.10) = 0.13 / 0.3 ≈ 0.433333.
        assert!(close(auc(&THREE, THRESHOLD_010).unwrap(), 0.13 / 0.3));
        // All perfect: 1. All failed: 0.
        assert_eq!(auc(&[0.0, 0.0], 0.08).unwrap(), 1.0);
        assert_eq!(auc(&[0.2, 0.08], 0.08).unwrap(), 0.0);
    }

    #[test]
    fn auc_matches_a_fine_riemann_sum_of_the_ced() {
        let errors = [0.013, 0.071, 0.002, 0.5, 0.0449, 0.079];
        let steps = 80_000;
        let grid: Vec<f32> = (0..steps)
            .map(|i| (0.08 * (i as f64 + 0.5) / steps as f64) as f32)
            .collect();
        let riemann = ced(&errors, &grid)
            .unwrap()
            .iter()
            .map(|&c| f64::from(c))
            .sum::<f64>()
            / steps as f64;
        assert!((f64::from(auc(&errors, 0.08).unwrap()) - riemann).abs() < 1e-4);
    }

    #[test]
    fn distribution_metrics_refuse_bad_input() {
        assert!(matches!(auc(&[], 0.08), Err(MetricsError::Empty(_))));
        assert!(matches!(
            failure_rate(&[], 0.08),
            Err(MetricsError::Empty(_))
        ));
        assert!(matches!(ced(&[], &[0.1]), Err(MetricsError::Empty(_))));
        assert!(matches!(
            auc(&[0.1, f32::NAN], 0.08),
            Err(MetricsError::InvalidErrorValue { index: 1, .. })
        ));
        assert_eq!(
            failure_rate(&[-0.1], 0.08),
            Err(MetricsError::InvalidErrorValue {
                index: 0,
                value: -0.1
            })
        );
        assert!(matches!(
            auc(&THREE, 0.0),
            Err(MetricsError::InvalidThreshold { .. })
        ));
        assert!(matches!(
            ced(&THREE, &[f32::NAN]),
            Err(MetricsError::InvalidThreshold { .. })
        ));
    }
}
