//! The single error type of fkd-metrics: every way a metric can refuse its input.

use thiserror::Error;

/// Result of a metric computation.
pub type Result<T> = std::result::Result<T, MetricsError>;

/// Why a metric could not be computed. Metrics refuse bad input rather than return NaN, so a
/// broken evaluation cannot end up as a plausible-looking number in a report.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum MetricsError {
    /// Prediction and ground truth hold different numbers of points.
    #[error("prediction has {pred} points but ground truth has {truth}")]
    LengthMismatch {
        /// Points in the prediction.
        pred: usize,
        /// Points in the ground truth.
        truth: usize,
    },
    /// A face does not have the number of points fixed by the layout (or, without a layout, by
    /// the first face of the set).
    #[error("expected {expected} points per face, got {got}")]
    PointCount {
        /// Points per face the layout or the first face fixed.
        expected: usize,
        /// Points this face has.
        got: usize,
    },
    /// Nothing to average over.
    #[error("empty input: {0}")]
    Empty(&'static str),
    /// The NME normaliser (inter-ocular distance of the ground truth) is zero or not finite.
    #[error("inter-ocular distance is {0}, which cannot normalise an error (zero or not finite)")]
    DegenerateNormaliser(f32),
    /// A coordinate of a prediction or ground-truth point is NaN or infinite.
    #[error("a coordinate of point {index} is not finite")]
    NonFinitePoint {
        /// Index of the offending point within its face.
        index: usize,
    },
    /// A per-face error handed to a distribution metric is negative or not finite.
    #[error("error value {index} is {value}; errors must be finite and non-negative")]
    InvalidErrorValue {
        /// Index of the offending error.
        index: usize,
        /// The offending error.
        value: f32,
    },
    /// A threshold or grid value is unusable.
    #[error("threshold {value} is invalid: {reason}")]
    InvalidThreshold {
        /// The offending threshold.
        value: f32,
        /// What a valid one must be.
        reason: &'static str,
    },
    /// An error in one face of a set; says which face.
    #[error("face {face}: {error}")]
    InFace {
        /// Index of the face in the set (order of `add` calls for an evaluator).
        face: usize,
        /// What went wrong with it.
        error: Box<MetricsError>,
    },
}

impl MetricsError {
    /// This error, attributed to face `face` of a set.
    pub fn in_face(self, face: usize) -> Self {
        Self::InFace {
            face,
            error: Box::new(self),
        }
    }
}
