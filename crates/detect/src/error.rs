//! The crate's error type: what failed, naming the weights file where there is one.

use std::path::PathBuf;

/// What went wrong while loading the detector or running it.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A weights file that cannot be read or does not hold the net.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An input the detector cannot take.
    #[error("{0}")]
    Input(String),
    /// A tensor operation of the forward pass.
    #[error("running the detector: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Result with a [`DetectError`].
pub type Result<T> = std::result::Result<T, DetectError>;
