//! An accumulator that collects predictions face by face and reduces them to a serialisable
//! [`Summary`], so every part of the write-up (one nose-tip point in Part 1, full faces in
//! Parts 2–4) reports the same numbers computed the same way.

use crate::error::{MetricsError, Result};
use crate::nme::{THRESHOLD_008, THRESHOLD_010, auc, failure_rate, interocular_normaliser};
use crate::points::{mae_px, mean, median, mse_normalised, point_errors};
use fkd_core::{Layout, NormPoint, PixelPoint};
use serde::{Deserialize, Serialize};

/// How per-face errors are normalised into NME.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normaliser {
    /// By the ground truth's inter-ocular distance under this layout; faces must have the
    /// layout's point count.
    Interocular(Layout),
    /// No normalisation (e.g. Part 1's single nose-tip point, which has no eyes): the NME fields
    /// of the summary stay `None`, and the first face fixes the point count.
    None,
}

/// The metrics of one evaluation run. Pixel errors are Euclidean distances in the pixels of the
/// image the points are given in (normally the original photo).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of faces evaluated.
    pub n_faces: usize,
    /// Mean squared error over all normalised coordinates ([`mse_normalised`] pooled over every
    /// face); `None` unless every face was added with normalised points.
    pub mse_norm: Option<f32>,
    /// Mean Euclidean point error in pixels, over all points of all faces.
    pub mean_px: f32,
    /// Median over faces of the per-face mean Euclidean point error in pixels.
    pub median_px: f32,
    /// Mean absolute error in pixels over every x and y coordinate (Part 3's Kaggle metric).
    pub mae_px: f32,
    /// Mean over faces of the NME; `None` without a normaliser.
    pub nme_mean: Option<f32>,
    /// Fraction of faces with NME > 0.08; `None` without a normaliser.
    pub fr_008: Option<f32>,
    /// Fraction of faces with NME > 0.10; `None` without a normaliser.
    pub fr_010: Option<f32>,
    /// Area under the NME CED from 0 to 0.08, divided by 0.08 (see [`crate::nme`](mod@crate::nme));
    /// `None` without a normaliser.
    pub auc_008: Option<f32>,
    /// Mean Euclidean pixel error of each point index over all faces.
    pub per_point_px: Vec<f32>,
}

/// One validated face, ready to be accumulated.
struct Scored {
    /// Euclidean pixel error of each point.
    errors: Vec<f32>,
    /// Mean absolute pixel error per coordinate.
    mae: f32,
    /// NME, when there is a normaliser.
    nme: Option<f32>,
    /// Sum of squared normalised coordinate errors, when normalised points were given.
    sq_norm: Option<f64>,
}

/// Collects faces one at a time; [`Evaluator::finish`] turns them into a [`Summary`].
///
/// A face that fails validation is rejected whole and leaves the evaluator unchanged, so the
/// caller may log it and carry on. Errors name the face by its index among accepted faces.
#[derive(Clone, Debug)]
pub struct Evaluator {
    normaliser: Normaliser,
    /// Points per face, once known (from the layout, or else from the first face).
    n_points: Option<usize>,
    /// Per-face mean Euclidean pixel error.
    face_px: Vec<f32>,
    /// Per-face NME (empty without a normaliser).
    nmes: Vec<f32>,
    /// Sum over faces of each point's pixel error.
    point_sums: Vec<f64>,
    /// Sum over faces of `|dx| + |dy|` in pixels.
    abs_sum: f64,
    /// Sum over faces of the squared normalised coordinate errors.
    sq_norm_sum: f64,
    /// How many faces came with normalised points.
    n_norm_faces: usize,
}

impl Evaluator {
    /// An empty evaluator that normalises NME with `normaliser`.
    pub fn new(normaliser: Normaliser) -> Self {
        let n_points = match normaliser {
            Normaliser::Interocular(layout) => Some(layout.n_points),
            Normaliser::None => None,
        };
        Self {
            normaliser,
            n_points,
            face_px: Vec::new(),
            nmes: Vec::new(),
            point_sums: Vec::new(),
            abs_sum: 0.0,
            sq_norm_sum: 0.0,
            n_norm_faces: 0,
        }
    }

    /// Adds one face given in pixels. Without normalised points the summary's `mse_norm` will be
    /// `None`; use [`Evaluator::add_with_norm`] to get it.
    pub fn add(&mut self, pred: &[PixelPoint], truth: &[PixelPoint]) -> Result<()> {
        self.add_face(pred, truth, None)
    }

    /// Adds one face given both in pixels and in the normalised coordinates the network
    /// regressed (which also feed `mse_norm`). All four slices must have the same length.
    pub fn add_with_norm(
        &mut self,
        pred: &[PixelPoint],
        truth: &[PixelPoint],
        pred_norm: &[NormPoint],
        truth_norm: &[NormPoint],
    ) -> Result<()> {
        self.add_face(pred, truth, Some((pred_norm, truth_norm)))
    }

    fn add_face(
        &mut self,
        pred: &[PixelPoint],
        truth: &[PixelPoint],
        norm: Option<(&[NormPoint], &[NormPoint])>,
    ) -> Result<()> {
        let face = self.len();
        // Everything is computed before anything is stored, so a rejected face leaves no trace.
        let Scored {
            errors,
            mae,
            nme,
            sq_norm,
        } = self.score(pred, truth, norm).map_err(|e| e.in_face(face))?;
        if self.point_sums.is_empty() {
            self.point_sums = vec![0.0; errors.len()];
        }
        self.n_points = Some(errors.len());
        for (s, &e) in self.point_sums.iter_mut().zip(&errors) {
            *s += f64::from(e);
        }
        self.face_px.push(mean(&errors));
        self.abs_sum += f64::from(mae) * 2.0 * errors.len() as f64;
        if let Some(nme) = nme {
            self.nmes.push(nme);
        }
        if let Some(sq) = sq_norm {
            self.sq_norm_sum += sq;
            self.n_norm_faces += 1;
        }
        Ok(())
    }

    /// Validates one face and computes its point errors, MAE, NME and summed squared normalised
    /// error, without touching the accumulated state.
    fn score(
        &self,
        pred: &[PixelPoint],
        truth: &[PixelPoint],
        norm: Option<(&[NormPoint], &[NormPoint])>,
    ) -> Result<Scored> {
        let errors = point_errors(pred, truth)?;
        if let Some(expected) = self.n_points
            && expected != errors.len()
        {
            return Err(MetricsError::PointCount {
                expected,
                got: errors.len(),
            });
        }
        let mae = mae_px(pred, truth)?;
        let nme = match self.normaliser {
            Normaliser::Interocular(layout) => {
                Some(mean(&errors) / interocular_normaliser(truth, &layout)?)
            }
            Normaliser::None => None,
        };
        let sq_norm = match norm {
            Some((pn, tn)) => {
                if pn.len() != pred.len() {
                    return Err(MetricsError::LengthMismatch {
                        pred: pn.len(),
                        truth: truth.len(),
                    });
                }
                // mse_normalised divides by 2n; undo it to pool sums across faces.
                let mse = mse_normalised(pn, tn)?;
                Some(f64::from(mse) * 2.0 * pn.len() as f64)
            }
            None => None,
        };
        Ok(Scored {
            errors,
            mae,
            nme,
            sq_norm,
        })
    }

    /// Number of faces accepted so far.
    pub fn len(&self) -> usize {
        self.face_px.len()
    }

    /// Whether no face has been accepted yet.
    pub fn is_empty(&self) -> bool {
        self.face_px.is_empty()
    }

    /// The per-face mean pixel errors so far, in the order the faces were added.
    pub fn face_errors_px(&self) -> &[f32] {
        &self.face_px
    }

    /// The per-face NMEs so far (for a CED plot), or `None` without a normaliser.
    pub fn nmes(&self) -> Option<&[f32]> {
        match self.normaliser {
            Normaliser::Interocular(_) => Some(&self.nmes),
            Normaliser::None => None,
        }
    }

    /// Reduces the faces added so far to a [`Summary`]. The evaluator is kept, so more faces can
    /// be added and summarised again.
    pub fn finish(&self) -> Result<Summary> {
        if self.is_empty() {
            return Err(MetricsError::Empty("no faces were added to the evaluator"));
        }
        let n_faces = self.len();
        let n_points = self.point_sums.len();
        let coords = (2 * n_faces * n_points) as f64;
        let (nme_mean, fr_008, fr_010, auc_008) = match self.nmes() {
            Some(nmes) => (
                Some(mean(nmes)),
                Some(failure_rate(nmes, THRESHOLD_008)?),
                Some(failure_rate(nmes, THRESHOLD_010)?),
                Some(auc(nmes, THRESHOLD_008)?),
            ),
            None => (None, None, None, None),
        };
        Ok(Summary {
            n_faces,
            mse_norm: (self.n_norm_faces == n_faces).then(|| (self.sq_norm_sum / coords) as f32),
            // Every face has n_points points, so the pooled mean is the mean of face means.
            mean_px: mean(&self.face_px),
            median_px: median(&self.face_px)?,
            mae_px: (self.abs_sum / coords) as f32,
            nme_mean,
            fr_008,
            fr_010,
            auc_008,
            per_point_px: self
                .point_sums
                .iter()
                .map(|s| (s / n_faces as f64) as f32)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fkd_core::ImageSize;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    fn close_opt(a: Option<f32>, b: f32) -> bool {
        a.is_some_and(|a| close(a, b))
    }

    /// iBUG-68 truth: every point at (50, 50) except the left outer corner 45 at (150, 50), so
    /// the inter-ocular distance is 100. The prediction shifts every point right by `dx`.
    fn shifted_face(dx: f32) -> (Vec<PixelPoint>, Vec<PixelPoint>) {
        let mut truth = vec![PixelPoint::new(50.0, 50.0); 68];
        truth[45] = PixelPoint::new(150.0, 50.0);
        let pred = truth
            .iter()
            .map(|p| PixelPoint::new(p.x + dx, p.y))
            .collect();
        (pred, truth)
    }

    #[test]
    fn summary_of_three_ibug_faces() {
        let size = ImageSize::new(200, 100);
        let mut ev = Evaluator::new(Normaliser::Interocular(Layout::IBUG68));
        for dx in [2.0, 5.0, 12.0] {
            let (pred, truth) = shifted_face(dx);
            let to_norm = |v: &[PixelPoint]| v.iter().map(|p| p.to_norm(size)).collect::<Vec<_>>();
            ev.add_with_norm(&pred, &truth, &to_norm(&pred), &to_norm(&truth))
                .unwrap();
        }
        let s = ev.finish().unwrap();
        assert_eq!(s.n_faces, 3);
        // Face means 2, 5, 12 px: mean 19/3, median 5.
        assert!(close(s.mean_px, 19.0 / 3.0));
        assert_eq!(s.median_px, 5.0);
        // |dx| on every x, 0 on every y: (2 + 5 + 12) / (3 · 2) = 19/6.
        assert!(close(s.mae_px, 19.0 / 6.0));
        // Normalised x errors dx/200, squared dx²/40000, on half the coordinates:
        // (4 + 25 + 144) / 40000 / 2 / 3 = 173 / 240000.
        assert!(close_opt(s.mse_norm, 173.0 / 240_000.0));
        // NMEs dx/100 = 0.02, 0.05, 0.12: mean 0.19/3, FR 1/3 at both thresholds,
        // AUC ((0.06 + 0.03) / 3) / 0.08 = 0.375.
        assert_eq!(ev.nmes().unwrap().len(), 3);
        assert!(close_opt(s.nme_mean, 0.19 / 3.0));
        assert!(close_opt(s.fr_008, 1.0 / 3.0));
        assert!(close_opt(s.fr_010, 1.0 / 3.0));
        assert!(close_opt(s.auc_008, 0.375));
        // Every point moved by the same dx in every face: each point's mean is 19/3.
        assert_eq!(s.per_point_px.len(), 68);
        assert!(s.per_point_px.iter().all(|&e| close(e, 19.0 / 3.0)));
    }

    #[test]
    fn single_point_faces_without_normaliser() {
        // Part 1: the nose tip only. Errors 5 (3-4-5), 1, and 10 (6-8-10).
        let faces = [
            ((3.0, 4.0), (0.0, 0.0)),
            ((1.0, 1.0), (1.0, 2.0)),
            ((0.0, 0.0), (6.0, 8.0)),
        ];
        let mut ev = Evaluator::new(Normaliser::None);
        for ((px, py), (tx, ty)) in faces {
            ev.add(&[PixelPoint::new(px, py)], &[PixelPoint::new(tx, ty)])
                .unwrap();
        }
        let s = ev.finish().unwrap();
        // Mean (5 + 1 + 10) / 3 = 16/3; median 5; MAE (3+4 + 0+1 + 6+8) / 6 = 22/6.
        assert!(close(s.mean_px, 16.0 / 3.0));
        assert_eq!(s.median_px, 5.0);
        assert!(close(s.mae_px, 22.0 / 6.0));
        assert_eq!(s.per_point_px.len(), 1);
        assert!(close(s.per_point_px[0], 16.0 / 3.0));
        assert_eq!(
            (s.mse_norm, s.nme_mean, s.fr_008, s.fr_010, s.auc_008),
            (None, None, None, None, None)
        );
        assert!(ev.nmes().is_none());
        assert_eq!(ev.face_errors_px(), &[5.0, 1.0, 10.0]);
    }

    #[test]
    fn mse_norm_needs_every_face_normalised() {
        let p = [PixelPoint::new(0.0, 0.0)];
        let n = [NormPoint::new(0.0, 0.0)];
        let mut ev = Evaluator::new(Normaliser::None);
        ev.add_with_norm(&p, &p, &n, &n).unwrap();
        assert_eq!(ev.finish().unwrap().mse_norm, Some(0.0));
        ev.add(&p, &p).unwrap();
        assert_eq!(ev.finish().unwrap().mse_norm, None);
    }

    #[test]
    fn rejected_faces_name_their_index_and_leave_no_trace() {
        let mut ev = Evaluator::new(Normaliser::Interocular(Layout::IBUG68));
        let (pred, truth) = shifted_face(1.0);
        ev.add(&pred, &truth).unwrap();
        // Face 1: eye corners on top of each other, inter-ocular distance 0.
        let flat = vec![PixelPoint::new(50.0, 50.0); 68];
        assert_eq!(
            ev.add(&flat, &flat),
            Err(MetricsError::DegenerateNormaliser(0.0).in_face(1))
        );
        // Face 1 again: 10 points for a 68-point layout.
        assert_eq!(
            ev.add(&pred[..10], &truth[..10]),
            Err(MetricsError::PointCount {
                expected: 68,
                got: 10
            }
            .in_face(1))
        );
        let n = vec![NormPoint::default(); 67];
        assert_eq!(
            ev.add_with_norm(&pred, &truth, &n, &n),
            Err(MetricsError::LengthMismatch {
                pred: 67,
                truth: 68
            }
            .in_face(1))
        );
        assert_eq!(ev.len(), 1);
        let s = ev.finish().unwrap();
        // Only the good face: 1 px everywhere, NME 0.01.
        assert_eq!((s.n_faces, s.mean_px), (1, 1.0));
        assert!(close_opt(s.nme_mean, 0.01));
        assert_eq!(s.mse_norm, None);
    }

    #[test]
    fn point_count_is_fixed_by_the_first_face_without_layout() {
        let mut ev = Evaluator::new(Normaliser::None);
        let one = [PixelPoint::new(0.0, 0.0)];
        let two = [PixelPoint::new(0.0, 0.0); 2];
        ev.add(&one, &one).unwrap();
        assert_eq!(
            ev.add(&two, &two),
            Err(MetricsError::PointCount {
                expected: 1,
                got: 2
            }
            .in_face(1))
        );
        let msg = ev.add(&two, &two).unwrap_err().to_string();
        assert_eq!(msg, "face 1: expected 1 points per face, got 2");
    }

    #[test]
    fn empty_evaluator_cannot_finish() {
        let ev = Evaluator::new(Normaliser::None);
        assert!(ev.is_empty());
        assert!(matches!(ev.finish(), Err(MetricsError::Empty(_))));
    }

    #[test]
    fn summary_round_trips_through_json() {
        let mut ev = Evaluator::new(Normaliser::None);
        ev.add(&[PixelPoint::new(3.0, 4.0)], &[PixelPoint::new(0.0, 0.0)])
            .unwrap();
        let s = ev.finish().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"mean_px\":5.0"), "{json}");
        assert!(json.contains("\"nme_mean\":null"), "{json}");
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
