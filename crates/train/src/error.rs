//! The one error type of fkd-train. File problems name the file; a divergence names the epoch
//! and learning rate, so the user knows where to restart and what to lower.

use std::path::{Path, PathBuf};

/// What can stop a training run, an evaluation or a checkpoint load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The [`TrainConfig`](crate::TrainConfig) (or the data handed to `fit`) cannot be used.
    #[error("invalid training setup: {0}")]
    Config(String),
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written atomically (created, written, flushed or renamed).
    #[error(transparent)]
    Write(#[from] fkd_core::WriteError),
    /// A weight file could not be saved or loaded, or belongs to another model.
    #[error(transparent)]
    Model(#[from] fkd_models::ModelError),
    /// A JSON file (history, checkpoint description) could not be written or parsed.
    #[error("{}: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint is unreadable, belongs to another model or run, or cannot be resumed.
    #[error("{}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint file (or the run folder).
        path: PathBuf,
        /// What is wrong, and where useful what to do about it.
        reason: String,
    },
    /// The loss became NaN or infinite, or grew past `diverge_factor` times its reference.
    #[error(
        "training diverged at epoch {epoch} with lr {lr}: loss {loss} is not finite or exceeds \
         diverge_factor times the initial loss; stopped, and the last good checkpoint was kept \
         (nothing from this epoch was saved) — lower the learning rate and start again"
    )]
    Diverged {
        /// The (0-based) epoch that diverged.
        epoch: usize,
        /// The learning rate of that epoch.
        lr: f64,
        /// The offending loss value.
        loss: f64,
    },
    /// Loading or preparing a batch failed.
    #[error(transparent)]
    Data(#[from] fkd_data::DataError),
    /// A tensor operation failed (shape mismatch between model and targets, device error, ...).
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    /// Shorthand for [`TrainError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`TrainError::Checkpoint`].
    pub fn checkpoint(path: &Path, reason: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
