//! The crate's one error type: every failure names the file (checkpoint, card, image) it is
//! about.

use std::path::PathBuf;

/// What went wrong while loading a model or predicting with it.
#[derive(Debug, thiserror::Error)]
pub enum LandmarkerError {
    /// A model card that cannot be read or does not describe a net fkd can build.
    #[error("{}: {reason}", path.display())]
    Card {
        /// The card (`model.json`), or the checkpoint it belongs to.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A face to predict that the model cannot take (a crop model given no box, a bad box).
    #[error("{what}: {reason}")]
    Input {
        /// The image or face.
        what: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Reading or cropping an image, or a data set.
    #[error(transparent)]
    Data(#[from] fkd_data::DataError),
    /// Loading or running the face detector.
    #[error(transparent)]
    Detect(#[from] fkd_detect::DetectError),
    /// Building the net or loading its weights.
    #[error(transparent)]
    Model(#[from] fkd_models::ModelError),
    /// Inference helpers of fkd-train (the flip test's merge).
    #[error(transparent)]
    Train(#[from] fkd_train::TrainError),
    /// Scoring predictions.
    #[error("scoring {face}: {source}")]
    Metrics {
        /// The face (its id) being scored.
        face: String,
        /// The metric's error.
        #[source]
        source: fkd_metrics::MetricsError,
    },
    /// Writing an output file (a CSV, a card).
    #[error(transparent)]
    Write(#[from] fkd_core::io::WriteError),
    /// A tensor operation of the forward pass.
    #[error("running the net: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Result with a [`LandmarkerError`].
pub type Result<T> = std::result::Result<T, LandmarkerError>;
