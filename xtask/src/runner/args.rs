//! The command line every part shares ([`RunArgs`]), the part's defaults it overrides
//! ([`Defaults`]), and the settings a run trains with ([`Settings`]): the two merged.

use crate::DataRoot;
use fkd_augment::AugmentConfig;
use fkd_metrics::Summary;
use fkd_train::{Loss, Schedule};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Command-line options every part has; every default comes from the part's [`Defaults`].
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub root: DataRoot,
    /// Never download: fail with instructions when the data is missing.
    #[arg(long)]
    pub offline: bool,
    /// Training epochs [default: the part's].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Learning rate; several, comma-separated (`1e-4,1e-3,1e-2`), train one model each and
    /// compare them (the write-up's learning-rate study).
    #[arg(long, value_delimiter = ',')]
    pub lr: Vec<f64>,
    /// Batch size.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed for initial weights, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder [default: runs/partN].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its last checkpoint.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Delete an earlier run in the output folder and start over.
    #[arg(long)]
    pub force: bool,
    /// Train without data augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// Learning-rate schedule [default: the part's].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Training loss [default: the part's]; the reported errors do not depend on it.
    #[arg(long, value_enum)]
    pub loss: Option<LossArg>,
    /// Score each validation face by its prediction alone, without averaging in the prediction
    /// for its mirror image (the flip test, on by default when training flips faces).
    #[arg(long)]
    pub no_flip_test: bool,
    /// Use only the first N training and N validation faces (smoke tests).
    #[arg(long)]
    pub limit: Option<usize>,
    /// "Precise BN": before each validation, recompute the batch-norm statistics from N
    /// training faces (spread over the set, not augmented); 0 keeps training's running
    /// averages [default: the part's; 512 for the ResNets, 0 for nets without batch norm].
    #[arg(long, value_name = "N")]
    pub bn_stats: Option<usize>,
    /// Validate (and recompute the batch-norm statistics) only after every N-th epoch and the
    /// last; the best checkpoint is chosen among the validated epochs. Saves the validation's
    /// time on long runs; the curves then have a point every N epochs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub valid_every: u64,
    /// Hold out a seeded fraction of the training photos (e.g. 0.1; every face of a photo goes
    /// the same way): train on the rest, validate each epoch and pick the best on the held-out
    /// faces, and score the last and the picked weights on the validation faces once at the
    /// end, so that nothing is chosen by the numbers reported.
    #[arg(long, value_name = "FRACTION")]
    pub holdout: Option<f64>,
    /// Validate, pick and save an exponential moving average of the weights, updated after
    /// every step with this decay (e.g. 0.999: about the last 1,000 steps), instead of the
    /// weights themselves; `last` and `best` then hold the averages [default: off].
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f64>,
    /// Device: cpu, cuda / metal in a build with that feature, or auto (the build's GPU if the
    /// machine has one, else the CPU) [default: auto].
    #[arg(long)]
    pub device: Option<String>,
    /// What to do with a face whose annotation or image is unusable (missing image, wrong point
    /// count, points far outside the photo): stop before training, naming it (`fail`), or leave
    /// it out with a warning and count it in metrics.json (`skip`).
    #[arg(long, value_enum, default_value_t = BadFace::Fail)]
    pub on_bad_face: BadFace,
}

/// `--on-bad-face`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadFace {
    /// Stop with the first bad face's error.
    Fail,
    /// Leave bad faces out, warn, and count them.
    Skip,
}

impl RunArgs {
    /// The load policy `--on-bad-face` asks for.
    pub fn policy(&self) -> fkd_data::dataset::LoadPolicy {
        match self.on_bad_face {
            BadFace::Fail => fkd_data::dataset::LoadPolicy::Strict,
            BadFace::Skip => fkd_data::dataset::LoadPolicy::Skip,
        }
    }
}

/// Learning-rate schedules offered on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ScheduleArg {
    /// The same lr every epoch (the write-up's).
    Constant,
    /// Cosine decay from lr to 0 over the run.
    Cosine,
    /// Linear warm-up over the first 5% of the run (at least one epoch), then cosine to 0.
    WarmupCosine,
    /// PyTorch's OneCycleLR as the 300-W peer uses it: 10% of the steps rising from lr/25 to
    /// lr, the rest falling to lr/25e4, both along half cosines, with Adam's β1 cycled
    /// 0.95 → 0.85 → 0.95 against the rate.
    OneCycle,
}

/// `--loss`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LossArg {
    /// Mean squared error (the write-up's).
    Mse,
    /// Mean absolute error.
    L1,
    /// Wing loss (Feng et al. 2018) with fkd-train's default w and ε (0.05 and 0.01 of the
    /// input side).
    Wing,
    /// Adaptive Wing loss on heatmaps (Wang et al. 2019: ω 14, θ 0.5, ε 1, α 2.1, foreground
    /// above 0.2 of the peak weighted ×11); Part 4's maps only.
    Awing,
}

/// A part's training recipe when the command line says nothing.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub augment: Option<AugmentConfig>,
    pub schedule: Schedule,
    pub loss: Loss,
}

/// The validation metric that picks a run's best epoch (lower is better).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectBy {
    /// Mean Euclidean point error in source pixels.
    MeanPx,
    /// Mean NME (inter-ocular).
    Nme,
}

impl SelectBy {
    pub(super) fn name(self) -> &'static str {
        match self {
            SelectBy::MeanPx => "mean error (px)",
            SelectBy::Nme => "NME",
        }
    }

    pub(super) fn of(self, s: &Summary) -> f64 {
        match self {
            SelectBy::MeanPx => f64::from(s.mean_px),
            SelectBy::Nme => s.nme_mean.map_or(f64::INFINITY, f64::from),
        }
    }
}

/// The settings a run trains with: the part's defaults overridden by the command line.
pub(super) struct Settings {
    pub(super) epochs: usize,
    pub(super) batch: usize,
    pub(super) lrs: Vec<f64>,
    pub(super) weight_decay: f64,
    pub(super) augment: Option<AugmentConfig>,
    pub(super) schedule: Schedule,
    pub(super) loss: Loss,
    pub(super) flip_test: bool,
}

impl Settings {
    pub(super) fn new(d: Defaults, args: &RunArgs, whole_face: bool) -> Self {
        let epochs = args.epochs.unwrap_or(d.epochs);
        let augment = if args.no_augment { None } else { d.augment };
        let schedule = match args.schedule {
            Some(ScheduleArg::Constant) => Schedule::Constant,
            Some(ScheduleArg::Cosine) => Schedule::Cosine { min_lr: 0.0 },
            Some(ScheduleArg::WarmupCosine) => Schedule::WarmupCosine {
                warmup: epochs.div_ceil(20).max(1),
                min_lr: 0.0,
            },
            Some(ScheduleArg::OneCycle) => Schedule::OneCycle {
                pct_start: 0.1,
                div: 25.0,
                final_div: 1e4,
            },
            None => d.schedule,
        };
        let loss = match args.loss {
            Some(LossArg::Mse) => Loss::Mse,
            Some(LossArg::L1) => Loss::L1,
            Some(LossArg::Wing) => Loss::wing(),
            Some(LossArg::Awing) => Loss::adaptive_wing(),
            None => d.loss,
        };
        Settings {
            epochs,
            batch: args.batch.unwrap_or(d.batch),
            lrs: if args.lr.is_empty() {
                vec![d.lr]
            } else {
                args.lr.clone()
            },
            weight_decay: d.weight_decay,
            // The flip test needs a net that saw mirrored faces and predicts whole faces (the
            // mirror permutation renumbers them).
            flip_test: !args.no_flip_test
                && whole_face
                && augment.is_some_and(|a| a.flip_prob > 0.0),
            augment,
            schedule,
            loss,
        }
    }
}

/// A loss as the report names it.
pub fn loss_name(loss: &Loss) -> String {
    match loss {
        Loss::Mse => "MSE".into(),
        Loss::L1 => "L1".into(),
        Loss::Wing { w, eps } => format!("Wing (w {w}, ε {eps})"),
        Loss::ForegroundMse { weight, threshold } => {
            format!("MSE, targets above {threshold} weighted ×{}", 1.0 + weight)
        }
        Loss::AdaptiveWing(aw) => format!(
            "Adaptive Wing (ω {}, θ {}, ε {}, α {}), targets above {} weighted ×{}",
            aw.omega,
            aw.theta,
            aw.eps,
            aw.alpha,
            aw.threshold,
            1.0 + aw.weight
        ),
    }
}

/// A schedule as the report names it.
pub(super) fn schedule_name(s: &Schedule) -> String {
    match s {
        Schedule::Constant => "constant".into(),
        Schedule::Step { every, gamma } => format!("×{gamma} every {every} epochs"),
        Schedule::Cosine { .. } => "cosine".into(),
        Schedule::WarmupCosine { warmup, .. } => {
            format!("linear warm-up ({warmup} epochs), then cosine")
        }
        Schedule::OneCycle { pct_start, .. } => format!(
            "one cycle ({:.0}% of the steps rising, β1 cycled)",
            100.0 * pct_start
        ),
    }
}
