//! The error type of fkd-models: invalid configurations, Candle failures and checkpoint files
//! that cannot be used, each naming what the user has to fix.

use std::path::PathBuf;

use candle_core::DType;

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

    /// A checkpoint could not be read or parsed as safetensors, or its tensors could not be
    /// moved to the network's device.
    #[error("{path}: cannot read weights: {source}")]
    ReadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Candle's error.
        source: candle_core::Error,
    },

    /// A checkpoint could not be serialised into its temporary file.
    #[error("{path}: cannot write weights: {source}")]
    WriteCheckpoint {
        /// The checkpoint file being replaced.
        path: PathBuf,
        /// Candle's error.
        source: candle_core::Error,
    },

    /// Creating, flushing or renaming a checkpoint file failed.
    #[error(transparent)]
    Write(#[from] fkd_core::WriteError),

    /// The network has a var that the checkpoint lacks.
    #[error("{path}: no tensor {name}: the checkpoint belongs to another model")]
    MissingTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The network's name for the tensor (e.g. `fc1.weight`).
        name: String,
    },

    /// A checkpoint tensor has another shape (or, for a strict load, dtype) than the var of the
    /// same name.
    #[error(
        "{path}: {name} is {found_dtype:?} {found:?} in the checkpoint but {expected_dtype:?} \
         {expected:?} in the model: the checkpoint belongs to another model"
    )]
    TensorMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The var's shape.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
        /// The var's dtype.
        expected_dtype: DType,
        /// The dtype stored in the file.
        found_dtype: DType,
    },

    /// A strict load found tensors that the network does not have.
    #[error("{path}: tensors the model lacks ({names:?}): the checkpoint belongs to another model")]
    UnexpectedTensors {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensors' names, sorted.
        names: Vec<String>,
    },

    /// A load by matching names found no tensor of the network in the file.
    #[error(
        "{path}: no tensor matches a var of the network: these are not weights of this network"
    )]
    NothingMatches {
        /// The weight file.
        path: PathBuf,
    },
}

/// Result alias of fkd-models.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
