//! Checkpoint files and how they are written.
//!
//! Every file goes to a temporary name in the same folder, is flushed to disk, and is then
//! renamed over the old one ([`fkd_core::io`]), so a crash or Ctrl-C leaves either the old file
//! or the new one, never half of one. Weights are saved and loaded by fkd-models
//! ([`fkd_models::checkpoint`]); this module re-exposes them with [`TrainError`]. A run folder
//! holds:
//!
//! - `last.json` ([`CheckpointMeta`]): the description of the last finished epoch, naming its
//!   weights and optimiser state, `epoch-NNNN.safetensors` and `epoch-NNNN.optim.safetensors`.
//!   An epoch is saved as: its two state files, then `last.json` (the commit point: one atomic
//!   rename), then the previous epoch's state files are deleted. A run killed at any moment
//!   therefore leaves a `last.json` that names two complete files of one epoch, and `--resume`
//!   continues from there (an epoch's files written before the kill are simply overwritten);
//! - `last.safetensors`: the last finished epoch's weights under a fixed name for users
//!   (a link to, or copy of, the epoch's weights, made after the commit);
//! - `best.safetensors`: the weights of the epoch with the lowest validation loss;
//! - with a weight average ([`TrainConfig::ema`]), also `epoch-NNNN.ema.safetensors`, saved
//!   and named in `last.json` with the epoch's other files: the averages are what was
//!   validated, so `last` and `best` hold them, and `epoch-NNNN.safetensors` keeps the trained
//!   weights that a resume continues from;
//! - `history.json`, `history.csv`: the per-epoch record (see [`crate::History`]).

use crate::{History, Result, TrainConfig, TrainError};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

/// Weights of the last finished epoch, under a fixed name for users (resume reads the file
/// `last.json` names).
pub const LAST_WEIGHTS: &str = "last.safetensors";
/// Optimiser state of the last finished epoch in runs saved before per-epoch state files (read
/// on resume when `last.json` names none).
pub const LAST_OPTIM: &str = "last.optim.safetensors";

/// The weights file of `epoch`'s checkpoint.
pub fn epoch_weights(epoch: usize) -> String {
    format!("epoch-{epoch:04}.safetensors")
}

/// The weight-average file of `epoch`'s checkpoint (runs with [`TrainConfig::ema`]).
pub fn epoch_ema(epoch: usize) -> String {
    format!("epoch-{epoch:04}.ema.safetensors")
}

/// The optimiser-state file of `epoch`'s checkpoint.
pub fn epoch_optim(epoch: usize) -> String {
    format!("epoch-{epoch:04}.optim.safetensors")
}
/// Description of the last finished epoch ([`CheckpointMeta`] as JSON).
pub const LAST_META: &str = "last.json";
/// Weights of the epoch with the lowest validation loss.
pub const BEST_WEIGHTS: &str = "best.safetensors";
/// The history as JSON.
pub const HISTORY_JSON: &str = "history.json";
/// The history as CSV.
pub const HISTORY_CSV: &str = "history.csv";

/// Format version of [`CheckpointMeta`]; bumped when a field changes meaning.
pub const META_VERSION: u32 = 1;

/// What `last.json` records: enough to continue the run exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// [`META_VERSION`] when written.
    pub version: u32,
    /// The last finished epoch (0-based).
    pub epoch: usize,
    /// Optimiser steps taken by then; must match `last.optim.safetensors`.
    pub step: u64,
    /// The loss of the run's first batch, the reference for divergence checks.
    pub reference_loss: f64,
    /// The lowest validation loss so far.
    pub best_valid: Option<f64>,
    /// Training samples, to refuse a resume on another data set.
    pub train_samples: usize,
    /// Training batches per epoch, to refuse a resume with another batching.
    pub train_batches: usize,
    /// The run's configuration.
    pub config: TrainConfig,
    /// The history up to and including `epoch`.
    pub history: History,
    /// The epoch's weights, in the run folder (`None` in runs saved before per-epoch files:
    /// [`LAST_WEIGHTS`]).
    #[serde(default)]
    pub weights_file: Option<String>,
    /// The epoch's optimiser state (`None`: [`LAST_OPTIM`]).
    #[serde(default)]
    pub optim_file: Option<String>,
    /// The epoch's weight averages, in a run with [`TrainConfig::ema`]: what `last` and `best`
    /// hold there, while `weights_file` holds the trained weights a resume continues from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_file: Option<String>,
}

impl CheckpointMeta {
    /// Reads `last.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let meta: Self = serde_json::from_slice(&text).map_err(|source| TrainError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.version != META_VERSION {
            return Err(TrainError::checkpoint(
                path,
                format!(
                    "checkpoint format {} is not the supported {META_VERSION}",
                    meta.version
                ),
            ));
        }
        Ok(meta)
    }

    /// Writes `last.json` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_json_atomic(path, self)
    }

    /// The weights file this checkpoint names.
    pub fn weights_name(&self) -> &str {
        self.weights_file.as_deref().unwrap_or(LAST_WEIGHTS)
    }

    /// The optimiser-state file this checkpoint names.
    pub fn optim_name(&self) -> &str {
        self.optim_file.as_deref().unwrap_or(LAST_OPTIM)
    }
}

/// Makes `dir/LAST_WEIGHTS` the same content as `dir/from`, atomically: a hard link renamed
/// into place (a copy where the file system has no links).
pub(crate) fn publish_last_weights(dir: &Path, from: &str) -> Result<()> {
    let src = dir.join(from);
    let dst = dir.join(LAST_WEIGHTS);
    let tmp = dir.join(format!(".{LAST_WEIGHTS}.link"));
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(&src, &tmp).is_err() {
        fs::copy(&src, &tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    fs::rename(&tmp, &dst).map_err(|e| TrainError::io(&dst, e))
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| TrainError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_bytes_atomic(path, &bytes)
}

/// Writes `bytes` to `path`, atomically: [`fkd_core::io::write_bytes_atomic`].
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(fkd_core::io::write_bytes_atomic(path, bytes)?)
}

/// Replaces `path` atomically by what `write` puts in the temporary file it is given (in the
/// same folder, so the final rename cannot cross file systems). On failure the temporary file
/// is removed and `path` is untouched: [`fkd_core::io::write_atomic`].
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    fkd_core::io::write_atomic(path, write)
}

/// Saves every variable of `varmap` to a safetensors file, atomically:
/// [`fkd_models::save_weights`].
pub fn save_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    Ok(fkd_models::save_weights(varmap, path)?)
}

/// Loads weights saved by [`save_weights`] into `varmap`. The file must hold exactly the
/// variables of `varmap` with their shapes and dtypes; otherwise nothing is changed and the
/// error names the file and the first difference (a checkpoint of another model):
/// [`fkd_models::load_weights`].
pub fn load_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    Ok(fkd_models::load_weights(varmap, path)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::Init;

    #[test]
    fn failed_write_keeps_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_bytes_atomic(&path, b"old").unwrap();
        let err = write_atomic(&path, |tmp| {
            fs::write(tmp, b"half").unwrap();
            Err(TrainError::Config("interrupted".into()))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
        write_bytes_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn write_failures_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/history.csv");
        match write_bytes_atomic(&path, b"x").unwrap_err() {
            TrainError::Write(e) => assert_eq!(e.path, path),
            e => panic!("unexpected {e}"),
        }
        let weights = dir.path().join("missing/last.safetensors");
        let err = save_weights(&varmap(3, "fc.weight", 1.5), &weights).unwrap_err();
        assert!(matches!(err, TrainError::Model(_)), "{err}");
        assert!(err.to_string().contains("last.safetensors"), "{err}");
    }

    fn varmap(shape: usize, name: &str, value: f32) -> VarMap {
        let vm = VarMap::new();
        vm.get(
            shape,
            name,
            Init::Const(value.into()),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        vm
    }

    #[test]
    fn weights_round_trip_and_other_models_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        save_weights(&varmap(3, "fc.weight", 1.5), &path).unwrap();
        let target = varmap(3, "fc.weight", 0.0);
        load_weights(&target, &path).unwrap();
        let loaded = target.all_vars()[0].as_tensor().to_vec1::<f32>().unwrap();
        assert_eq!(loaded, [1.5, 1.5, 1.5]);

        let err = load_weights(&varmap(4, "fc.weight", 0.0), &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fc.weight is F32 [3] in the checkpoint but F32 [4] in the model"),
            "{err}"
        );
        let err = load_weights(&varmap(3, "fc.bias", 0.0), &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no tensor fc.bias"), "{err}");
        let err = load_weights(&target, &dir.path().join("missing.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.safetensors: cannot read weights"),
            "{err}"
        );
    }
}
