//! The record of a run, epoch by epoch: what the write-up plots (train and validation loss
//! curves) and what a resumed run continues.

use crate::checkpoint::{HISTORY_CSV, HISTORY_JSON, write_bytes_atomic, write_json_atomic};
use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// One finished epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch, counted from 0 (the index the training loader shuffled with).
    pub epoch: usize,
    /// Its learning rate.
    pub lr: f64,
    /// Mean training loss over the epoch's samples (taken during the epoch, in training mode).
    pub train_loss: f64,
    /// Mean validation loss over the validation samples after the epoch (inference mode);
    /// `None` for an epoch that did not validate ([`crate::TrainConfig::valid_every`]).
    pub valid_loss: Option<f64>,
    /// The score that selects the best epoch ([`History::metric`]), when the run was trained
    /// with a selector; `None` when the validation loss selects.
    #[serde(default)]
    pub valid_metric: Option<f64>,
    /// Wall-clock seconds for the epoch, validation included.
    pub seconds: f64,
}

/// Every finished epoch of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The finished epochs, in order.
    pub epochs: Vec<EpochRecord>,
    /// The epoch with the lowest selection score (the weights in `best.safetensors`): the
    /// validation loss, or [`History::metric`] when there is one.
    pub best_epoch: Option<usize>,
    /// The name of the validation metric that selects the best epoch (`None`: the loss).
    #[serde(default)]
    pub metric: Option<String>,
    /// Why the run stopped early, if it did (a divergence); `None` for a run that finished or
    /// is still going.
    pub stopped: Option<String>,
}

/// Header of `history.csv`.
const CSV_HEADER: &str = "epoch,lr,train_loss,valid_loss,seconds,valid_metric";

impl History {
    /// The record of the best epoch.
    pub fn best(&self) -> Option<&EpochRecord> {
        let best = self.best_epoch?;
        self.epochs.iter().find(|r| r.epoch == best)
    }

    /// The history as CSV: a header line, then one line per epoch (numbers in Rust's shortest
    /// round-trip form).
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(64 * (self.epochs.len() + 1));
        out.push_str(CSV_HEADER);
        out.push('\n');
        for r in &self.epochs {
            // Writing to a String cannot fail.
            let metric = r.valid_metric.map(|m| m.to_string()).unwrap_or_default();
            let valid = r.valid_loss.map(|m| m.to_string()).unwrap_or_default();
            let _ = writeln!(
                out,
                "{},{},{},{valid},{},{metric}",
                r.epoch, r.lr, r.train_loss, r.seconds
            );
        }
        out
    }

    /// Writes `history.json` and `history.csv` into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json_atomic(&dir.join(HISTORY_JSON), self)?;
        write_bytes_atomic(&dir.join(HISTORY_CSV), self.to_csv().as_bytes())
    }

    /// Reads a `history.json`.
    pub fn read_json(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| TrainError::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn history() -> History {
        let rec = |epoch, valid_loss, valid_metric| EpochRecord {
            epoch,
            lr: 0.001,
            train_loss: 0.25,
            valid_loss,
            valid_metric,
            seconds: 1.5,
        };
        History {
            epochs: vec![
                rec(0, Some(0.5), None),
                rec(1, None, None),
                rec(2, Some(0.125), Some(0.0625)),
            ],
            best_epoch: Some(2),
            metric: Some("NME".into()),
            stopped: None,
        }
    }

    #[test]
    fn csv_lines() {
        assert_eq!(
            history().to_csv(),
            "epoch,lr,train_loss,valid_loss,seconds,valid_metric\n0,0.001,0.25,0.5,1.5,\n1,0.001,0.25,,1.5,\n2,0.001,0.25,0.125,1.5,0.0625\n"
        );
        assert_eq!(history().best().unwrap().valid_loss, Some(0.125));
        assert!(History::default().best().is_none());
    }

    #[test]
    fn records_written_before_valid_every_read_as_validated() {
        let old = r#"{"epoch":0,"lr":0.001,"train_loss":0.25,"valid_loss":0.5,"seconds":1.5}"#;
        let r: EpochRecord = serde_json::from_str(old).unwrap();
        assert_eq!((r.valid_loss, r.valid_metric), (Some(0.5), None));
    }

    #[test]
    fn files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        history().write(dir.path()).unwrap();
        assert_eq!(
            History::read_json(&dir.path().join(HISTORY_JSON)).unwrap(),
            history()
        );
        let csv = std::fs::read_to_string(dir.path().join(HISTORY_CSV)).unwrap();
        assert_eq!(csv, history().to_csv());
    }
}
