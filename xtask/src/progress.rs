//! A terminal progress bar for training runs: one bar per epoch, the running loss in its
//! message, and one log line per finished epoch; [`bar_style`] for every other bar.

use fkd_train::{EpochRecord, Observer};
use indicatif::{ProgressBar, ProgressStyle};

/// The bar style of every fkd progress bar.
pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {bar:25} {pos}/{len} {msg} [{elapsed}<{eta}]")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Draws training progress with indicatif (hidden when stderr is not a terminal).
pub struct Bar {
    bar: Option<ProgressBar>,
    label: String,
    epochs: usize,
    running: f64,
    seen: usize,
}

impl Bar {
    /// A bar for a run of `epochs` epochs, its lines prefixed with `label`.
    pub fn new(label: impl Into<String>, epochs: usize) -> Self {
        Self {
            bar: None,
            label: label.into(),
            epochs,
            running: 0.0,
            seen: 0,
        }
    }
}

impl Observer for Bar {
    fn epoch_started(&mut self, epoch: usize, n_batches: usize) {
        let bar = ProgressBar::new(n_batches as u64);
        bar.set_style(bar_style());
        bar.set_prefix(format!(
            "{} epoch {}/{}",
            self.label,
            epoch + 1,
            self.epochs
        ));
        self.bar = Some(bar);
        self.running = 0.0;
        self.seen = 0;
    }

    fn batch_done(&mut self, _epoch: usize, _batch: usize, loss: f64) {
        self.running += loss;
        self.seen += 1;
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {:.3e}", self.running / self.seen as f64));
            bar.inc(1);
        }
    }

    fn epoch_done(&mut self, r: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        tracing::info!(
            "{} epoch {}/{}: train {:.3e}, valid {}{}, lr {:.1e} ({:.1} s)",
            self.label,
            r.epoch + 1,
            self.epochs,
            r.train_loss,
            r.valid_loss
                .map_or_else(|| "skipped".to_string(), |v| format!("{v:.3e}")),
            r.valid_metric
                .map(|m| format!(" (metric {m:.4})"))
                .unwrap_or_default(),
            r.lr,
            r.seconds
        );
    }
}
