//! The error type of fkd-models: invalid configurations, Candle failures and checkpoint files
//! that cannot be used, each naming what the user has to fix.

use std::path::PathBuf;

/// Everything that can go wrong when building, running or (de)serialising a network.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A network configuration that cannot be built (no layers, mismatched list lengths, a
    /// feature map that shrinks to nothing, ...).
    #[error("invalid network configuration: {0}")]
    Config(String),

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A file-system operation on a checkpoint failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A checkpoint could not be read or parsed as safetensors.
    #[error("cannot read checkpoint {path}: {source}")]
    ReadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Candle's error.
        source: candle_core::Error,
    },

    /// A checkpoint could not be written.
    #[error("cannot write checkpoint {path}: {source}")]
    WriteCheckpoint {
        /// The file being written (the temporary file next to the target).
        path: PathBuf,
        /// Candle's error.
        source: candle_core::Error,
    },

    /// The network has a tensor that the checkpoint lacks.
    #[error("checkpoint {path} has no tensor `{name}`")]
    MissingTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The network's name for the tensor (e.g. `fc1.weight`).
        name: String,
    },

    /// The checkpoint's tensor has a different shape from the network's.
    #[error(
        "checkpoint {path}: tensor `{name}` has shape {found:?}, the network expects {expected:?}"
    )]
    ShapeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The network's shape.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
}

/// Result alias of fkd-models.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
