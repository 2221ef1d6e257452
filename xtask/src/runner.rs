//! The one runner every part of the write-up uses: load a split, show what the loader gives,
//! train one model per learning rate (keeping the best epoch by the part's own validation
//! metric), evaluate the best and the last weights in the pixels of the source photos, draw,
//! and write `report.html`, `metrics.json` and `model.json`.
//!
//! What differs between parts is the [`Part`] trait: the data and its split, the input step,
//! the network, how an output becomes points, and the words of the report. `part1.rs` …
//! `part4.rs` are recipes over it. It lives in xtask, not in a library crate, because it is
//! orchestration over every crate with anyhow errors and report wording; a project that
//! imports fkd composes the crates itself (see docs/architecture.md).

use crate::DataRoot;
use crate::progress::Bar;
use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fkd_augment::{AugmentConfig, Augmenter};
use fkd_core::{ImageSize, Layout, PixelPoint};
use fkd_data::batch::{Loader, Prepare};
use fkd_data::dataset::{DataSet, Sample};
use fkd_data::img::GrayImage;
use fkd_metrics::{Evaluator, Normaliser, Summary};
use fkd_models::{Summarize, format_summary, seeded_var_builder};
use fkd_train::{Batches, FitOptions, History, Loss, Prediction, Schedule, Selector, TrainConfig};
use fkd_viz::{Curve, PREDICTION, Report, TRUTH};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    fn name(self) -> &'static str {
        match self {
            SelectBy::MeanPx => "mean error (px)",
            SelectBy::Nme => "NME",
        }
    }

    fn of(self, s: &Summary) -> f64 {
        match self {
            SelectBy::MeanPx => f64::from(s.mean_px),
            SelectBy::Nme => s.nme_mean.map_or(f64::INFINITY, f64::from),
        }
    }
}

/// Training and validation faces, and how the report describes the split.
pub struct Split {
    pub train: DataSet,
    pub valid: DataSet,
    /// The report's "Data" paragraph.
    pub description: String,
}

/// What identifies a trained model: written as `model.json` beside its checkpoints, read back
/// by `predict` and `eval` to rebuild the net and refuse a checkpoint of another part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// `part1` … `part4`.
    pub part: String,
    /// The network, as the part names it (`nose`, `face`, `resnet18`, ...).
    pub arch: String,
    /// Network input, width × height.
    pub input: [u32; 2],
    /// Points predicted.
    pub points: usize,
    /// Crop factor around the face box (parts that crop), else `None`.
    pub enlarge: Option<f32>,
    /// Whether the model was trained with flips and is scored with the flip test.
    #[serde(default)]
    pub flip_test: bool,
    /// For heatmap nets: the maps' size and how they are decoded.
    #[serde(default)]
    pub heatmap: Option<HeatmapCard>,
}

/// How a heatmap net's outputs are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeatmapCard {
    /// Map width × height.
    pub map: [u32; 2],
    /// The training maps' Gaussian σ, in map pixels.
    pub sigma: f32,
    /// The decoder.
    pub decoder: fkd_heatmap::Decoder,
    /// `imm` or `300w`.
    pub dataset: String,
    /// Channels of resnet-deconv's transposed convs (cards written before the option: 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deconv_channels: Option<usize>,
    /// `integral` when the net outputs soft-argmax points instead of maps (absent: maps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

/// File name of the [`ModelCard`].
pub const MODEL_CARD: &str = "model.json";

impl ModelCard {
    /// Reads the card beside `checkpoint` (same folder), naming what is missing.
    pub fn beside(checkpoint: &Path) -> anyhow::Result<ModelCard> {
        let dir = checkpoint.parent().unwrap_or(Path::new("."));
        let path = dir.join(MODEL_CARD);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: no {MODEL_CARD} beside the checkpoint {} (is it a checkpoint of an fkd run?)",
                path.display(),
                checkpoint.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a model card", path.display()))
    }

    /// Refuses a card of another part.
    pub fn expect_part(&self, part: &str, checkpoint: &Path) -> anyhow::Result<()> {
        if self.part != part {
            bail!(
                "{} is a {} checkpoint ({}, {} points); this command needs a {part} checkpoint",
                checkpoint.display(),
                self.part,
                self.arch,
                self.points
            );
        }
        Ok(())
    }
}

/// A report section of a part's own figures.
pub struct ExtraFigures {
    /// The section's heading.
    pub heading: String,
    /// `(file in the run folder, caption)`, in order.
    pub figures: Vec<(String, String)>,
}

/// What distinguishes one part of the write-up from another.
pub trait Part {
    /// The network.
    type Net: fkd_train::Model + Summarize;
    /// The loader step that turns a sample into (input, target).
    type Step: Prepare;

    /// `part1` … `part4`.
    fn name(&self) -> &'static str;
    /// Report title.
    fn title(&self) -> &'static str;
    /// The write-up's framing of the task, for the report's first paragraph.
    fn intro(&self) -> String;
    /// The layout of the data set's annotations.
    fn layout(&self) -> Layout;
    /// Whether the net predicts every point of the layout (then figures draw contours, NME is
    /// reported and the flip test applies).
    fn whole_face(&self) -> bool;
    /// The recipe when the command line says nothing.
    fn defaults(&self) -> Defaults;
    /// What picks the best epoch.
    fn select_by(&self) -> SelectBy;
    /// The network input size.
    fn input(&self) -> ImageSize;
    /// Loads the training and validation faces.
    fn load(&self, args: &RunArgs) -> anyhow::Result<Split>;
    /// The loader step, augmenting with `augmenter` (training) or not (validation).
    fn step(&self, augmenter: Option<Augmenter>) -> Self::Step;
    /// Builds the network on `vb`.
    fn build(&self, vb: VarBuilder<'_>) -> anyhow::Result<Self::Net>;
    /// Sets initial weights other than the seeded ones (e.g. `--init FILE`), before training
    /// starts (not when resuming).
    fn init(&self, _varmap: &VarMap) -> anyhow::Result<()> {
        Ok(())
    }
    /// The card that identifies this part's trained models.
    fn card(&self) -> ModelCard;
    /// The ground truth the net is scored against, in source pixels (the selected points).
    fn truth(&self, s: &Sample) -> Vec<PixelPoint> {
        s.points.clone()
    }
    /// The points of one output, in the pixels of the `input`-sized network input.
    fn decode(&self, output: &[f32], input: ImageSize) -> Vec<PixelPoint> {
        output
            .chunks_exact(2)
            .map(|c| PixelPoint::new(c[0] * input.width as f32, c[1] * input.height as f32))
            .collect()
    }
    /// The first conv's weights `(out, in, kh, kw)`, shown as the learned filters.
    fn filters(&self, net: &Self::Net) -> Option<Tensor>;
    /// Extra report text under the network summary (the write-up's architecture notes).
    fn network_notes(&self) -> Option<String> {
        None
    }
    /// Figures of the part's own (e.g. Part 4's heatmaps), written into `out` for the trained
    /// `net` and the validation faces.
    fn extra_figures(
        &self,
        _net: &Self::Net,
        _valid: &[Sample],
        _out: &Path,
    ) -> anyhow::Result<Option<ExtraFigures>> {
        Ok(None)
    }
    /// How many training faces the batch-norm statistics are recomputed from before each
    /// validation ("precise BN", `--bn-stats`); 0 for a net without batch norm.
    fn bn_stats_faces(&self) -> usize {
        0
    }
    /// How many best and worst validation faces the report shows.
    fn shown_faces(&self) -> usize {
        2
    }
    /// How the report names the unit of the pixel errors.
    fn error_units(&self) -> &'static str;
}

/// The settings a run trains with: the part's defaults overridden by the command line.
struct Settings {
    epochs: usize,
    batch: usize,
    lrs: Vec<f64>,
    weight_decay: f64,
    augment: Option<AugmentConfig>,
    schedule: Schedule,
    loss: Loss,
    flip_test: bool,
}

impl Settings {
    fn new(d: Defaults, args: &RunArgs, whole_face: bool) -> Self {
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
    }
}

/// A schedule as the report names it.
fn schedule_name(s: &Schedule) -> String {
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

/// A model's scores on the validation faces.
pub struct Evaluation {
    pub summary: Summary,
    /// Per face: predicted points in source pixels and their mean error.
    pub preds: Vec<(Vec<PixelPoint>, f32)>,
    /// Per face NME, when the part predicts whole faces.
    pub nmes: Option<Vec<f32>>,
}

/// The points of `p` in source pixels: decoded, merged with the mirror image's when the flip
/// test ran, mapped through the sample's `to_source`.
pub fn source_points<P: Part + ?Sized>(
    part: &P,
    p: &Prediction,
) -> anyhow::Result<Vec<PixelPoint>> {
    let mut pts = part.decode(&p.output, p.input);
    if let Some(flipped) = &p.flipped {
        let f = part.decode(flipped, p.input);
        pts = fkd_train::merge_flipped(&pts, &f, p.input.width as f32, part.layout().mirror)?;
    }
    Ok(pts.into_iter().map(|q| p.to_source.apply(q)).collect())
}

/// A trained net of `part` with the weights of `checkpoint` (strictly: every var, nothing
/// else), on `device`.
pub fn load_net<P: Part + ?Sized>(
    part: &P,
    checkpoint: &Path,
    device: &Device,
) -> anyhow::Result<P::Net> {
    let vm = VarMap::new();
    let net = part.build(VarBuilder::from_varmap(&vm, DType::F32, device))?;
    fkd_train::load_weights(&vm, checkpoint)?;
    Ok(net)
}

/// Scores predictions against the samples they were made for.
pub fn score<P: Part + ?Sized>(
    part: &P,
    samples: &[Sample],
    predictions: &[Prediction],
) -> anyhow::Result<Evaluation> {
    let normaliser = if part.whole_face() {
        Normaliser::Interocular(part.layout())
    } else {
        Normaliser::None
    };
    let mut eval = Evaluator::new(normaliser);
    let mut preds = Vec::with_capacity(predictions.len());
    for p in predictions {
        let s = samples
            .get(p.index)
            .with_context(|| format!("prediction for sample {} of {}", p.index, samples.len()))?;
        let pred = source_points(part, p)?;
        let truth = part.truth(s);
        let pred_norm: Vec<_> = pred.iter().map(|q| q.to_norm(s.size)).collect();
        let truth_norm: Vec<_> = truth.iter().map(|q| q.to_norm(s.size)).collect();
        eval.add_with_norm(&pred, &truth, &pred_norm, &truth_norm)
            .with_context(|| format!("scoring {}", s.id))?;
        let err = fkd_metrics::mean_point_error(&pred, &truth)?;
        preds.push((pred, err));
    }
    Ok(Evaluation {
        summary: eval.finish()?,
        preds,
        nmes: eval.nmes().map(<[f32]>::to_vec),
    })
}

/// Predicts (with the flip test when asked) and scores every sample of `loader`.
pub fn evaluate<P: Part + ?Sized, S: Prepare>(
    part: &P,
    net: &P::Net,
    loader: &Loader<S>,
    flip: bool,
) -> anyhow::Result<Evaluation> {
    let predictions = if flip {
        fkd_train::predict_flip(net, loader)?
    } else {
        fkd_train::predict(net, loader)?
    };
    score(part, loader.samples(), &predictions)
}

/// The part's metric over each epoch's validation predictions (without the flip test, which
/// would double the cost of every epoch).
struct PartSelector<'a, P: Part + ?Sized> {
    part: &'a P,
    samples: &'a [Sample],
}

impl<P: Part + ?Sized> Selector for PartSelector<'_, P> {
    fn name(&self) -> String {
        self.part.select_by().name().into()
    }

    fn score(&mut self, predictions: &[Prediction]) -> fkd_train::Result<f64> {
        let e = score(self.part, self.samples, predictions)
            .map_err(|e| fkd_train::TrainError::Config(format!("{e:#}")))?;
        Ok(self.part.select_by().of(&e.summary))
    }
}

/// One trained model: its history and its scores.
struct Run<N> {
    lr: f64,
    dir: PathBuf,
    history: History,
    /// The best epoch's weights (the model's, at the end).
    best: Evaluation,
    /// The last epoch's weights.
    last: Summary,
    seconds: f64,
    net: N,
}

#[derive(Serialize)]
struct RunMetrics<'a> {
    lr: f64,
    dir: String,
    epochs: usize,
    best_epoch: Option<usize>,
    /// In the units of `Metrics::loss`.
    final_train_loss: Option<f64>,
    final_valid_loss: Option<f64>,
    train_seconds: f64,
    /// The best checkpoint's scores (what the figures show).
    summary: &'a Summary,
    /// The last weights' scores.
    last: &'a Summary,
}

#[derive(Serialize)]
struct Metrics<'a> {
    part: &'static str,
    seed: u64,
    batch: usize,
    augment: bool,
    flip_test: bool,
    train_faces: usize,
    valid_faces: usize,
    /// Faces left out by `--on-bad-face skip` (training and validation files together).
    skipped_faces: usize,
    params: usize,
    main_lr: f64,
    schedule: String,
    loss: String,
    weight_decay: f64,
    selected_by: &'static str,
    /// Training faces the batch-norm statistics were recomputed from before each validation
    /// (0: training's running averages).
    bn_stats_faces: usize,
    threads: usize,
    wall_seconds: f64,
    runs: Vec<RunMetrics<'a>>,
}

/// Runs `part` end to end and returns the report's path.
pub fn run<P: Part>(part: &P, args: &RunArgs) -> anyhow::Result<PathBuf> {
    let start = Instant::now();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(part.name()));
    prepare_out(&out, args)?;
    let device = crate::device_arg(args.device.as_deref())?;

    let Split {
        mut train,
        mut valid,
        description,
    } = part.load(args)?;
    if let Some(n) = args.limit {
        train.samples.truncate(n);
        valid.samples.truncate(n);
    }
    tracing::info!(
        "{}: {} training and {} validation faces, on {}",
        part.name(),
        train.len(),
        valid.len(),
        crate::device_label(&device),
    );
    let skipped = train.skipped.len() + valid.skipped.len();
    if skipped > 0 {
        tracing::warn!(
            "{skipped} faces left out (--on-bad-face skip); the warnings above name them"
        );
    }
    let set = Settings::new(part.defaults(), args, part.whole_face());
    let augmenter = set
        .augment
        .map(|cfg| Augmenter::new(cfg, part.layout()))
        .transpose()?;
    let train_loader = Loader::new(train.samples.clone(), part.step(augmenter), set.batch)
        .shuffled(args.seed)
        .on(device.clone());
    let valid_loader =
        Loader::new(valid.samples.clone(), part.step(None), set.batch.max(16)).on(device.clone());
    let bn_faces = args.bn_stats.unwrap_or_else(|| part.bn_stats_faces());
    let stats_loader = (bn_faces > 0).then(|| {
        let faces = spread(&train.samples, bn_faces);
        let batch = faces.len().min(BN_STATS_BATCH);
        Loader::new(faces, part.step(None), batch).on(device.clone())
    });
    let card = ModelCard {
        flip_test: set.flip_test,
        ..part.card()
    };
    let card = serde_json::to_string_pretty(&card)?;
    fkd_core::io::write_bytes_atomic(&out.join(MODEL_CARD), card.as_bytes())?;

    samples_figure(part, &train_loader, &out.join("samples.png"))?;

    let mut runs = Vec::new();
    for &lr in &set.lrs {
        let dir = if set.lrs.len() == 1 {
            out.clone()
        } else {
            out.join(format!("lr_{lr:e}"))
        };
        if dir != out {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            fkd_core::io::write_bytes_atomic(&dir.join(MODEL_CARD), card.as_bytes())?;
        }
        runs.push(train_one(
            part,
            &train_loader,
            &valid_loader,
            stats_loader.as_ref().map(|l| l as &dyn Batches),
            &set,
            lr,
            args,
            &dir,
            &device,
        )?);
    }
    // The model the figures show: the best score of its best checkpoint.
    let by = part.select_by();
    let main = runs
        .iter()
        .min_by(|a, b| by.of(&a.best.summary).total_cmp(&by.of(&b.best.summary)))
        .context("no run finished")?;

    let figures = Figures::draw(part, &runs, main, &valid, &out, &loss_name(&set.loss))?;
    let metrics = Metrics {
        part: part.name(),
        seed: args.seed,
        batch: set.batch,
        augment: set.augment.is_some(),
        flip_test: set.flip_test,
        train_faces: train.len(),
        valid_faces: valid.len(),
        skipped_faces: train.skipped.len() + valid.skipped.len(),
        params: main.net.num_params(),
        main_lr: main.lr,
        schedule: schedule_name(&set.schedule),
        loss: loss_name(&set.loss),
        weight_decay: set.weight_decay,
        selected_by: by.name(),
        bn_stats_faces: stats_loader.as_ref().map_or(0, |l| l.samples().len()),
        threads: rayon::current_num_threads(),
        wall_seconds: start.elapsed().as_secs_f64(),
        runs: runs
            .iter()
            .map(|r| RunMetrics {
                lr: r.lr,
                dir: r.dir.display().to_string(),
                epochs: r.history.epochs.len(),
                best_epoch: r.history.best_epoch,
                final_train_loss: r.history.epochs.last().map(|e| e.train_loss),
                final_valid_loss: r.history.epochs.last().and_then(|e| e.valid_loss),
                train_seconds: r.seconds,
                summary: &r.best.summary,
                last: &r.last,
            })
            .collect(),
    };
    let json = serde_json::to_string_pretty(&metrics)?;
    fkd_core::io::write_bytes_atomic(&out.join("metrics.json"), json.as_bytes())?;
    let report = report(part, &set, &metrics, &main.net, &figures, &description)?;
    let path = out.join("report.html");
    report.write(&path)?;
    let missing = report.missing_images(&out);
    if !missing.is_empty() {
        bail!("the report refers to images that were not written: {missing:?}");
    }
    for r in &runs {
        let line = |s: &Summary| {
            format!(
                "validation MSE {:.5}, mean error {:.2} px{}",
                s.mse_norm.unwrap_or(f32::NAN),
                s.mean_px,
                s.nme_mean
                    .map(|n| format!(
                        ", NME {n:.4}, FR@0.08 {:.3}, AUC@0.08 {:.3}, MAE {:.2} px",
                        s.fr_008.unwrap_or(f32::NAN),
                        s.auc_008.unwrap_or(f32::NAN),
                        s.mae_px
                    ))
                    .unwrap_or_default()
            )
        };
        println!(
            "{} lr {:e}: last weights: {}",
            part.name(),
            r.lr,
            line(&r.last)
        );
        println!(
            "{} lr {:e}: best ({} at epoch {}): {}",
            part.name(),
            r.lr,
            by.name(),
            r.history
                .best_epoch
                .map_or("–".into(), |e| (e + 1).to_string()),
            line(&r.best.summary)
        );
    }
    println!(
        "report: {} ({:.0} s)",
        path.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// The batch size of the precise-BN passes: larger batches normalise each layer's input more
/// like the population statistics used at inference (measured on Part 3's 80-epoch weights,
/// 512 faces: batch 32 NME 5.1 %, 64 4.2–4.6 %, 128 4.1–4.2 %).
const BN_STATS_BATCH: usize = 128;

/// About `n` of `samples`, evenly spread over the list (data sets list their sources one after
/// another: the first `n` would all be AFW); all of them when `n` is at least their number.
fn spread(samples: &[Sample], n: usize) -> Vec<Sample> {
    let step = samples.len().div_ceil(n.max(1)).max(1);
    samples.iter().step_by(step).cloned().collect()
}

/// Makes the output folder; refuses to mix a new run with an old one unless told.
fn prepare_out(out: &Path, args: &RunArgs) -> anyhow::Result<()> {
    if args.force && out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn train_one<P: Part, S: Prepare, V: Prepare>(
    part: &P,
    train: &Loader<S>,
    valid: &Loader<V>,
    bn_stats: Option<&dyn Batches>,
    set: &Settings,
    lr: f64,
    args: &RunArgs,
    dir: &Path,
    device: &Device,
) -> anyhow::Result<Run<P::Net>> {
    let vm = VarMap::new();
    let net = part.build(seeded_var_builder(&vm, args.seed, DType::F32, device))?;
    let meta = dir.join(fkd_train::checkpoint::LAST_META);
    let resume = args.resume && meta.exists();
    if !resume && meta.exists() {
        bail!(
            "{} already holds a run; pass --resume to continue it or --force to start over",
            dir.display()
        );
    }
    if !resume {
        part.init(&vm)?;
    }
    let cfg = TrainConfig {
        epochs: set.epochs,
        batch_size: set.batch,
        lr,
        weight_decay: set.weight_decay,
        loss: set.loss,
        schedule: set.schedule,
        seed: args.seed,
        out_dir: dir.to_path_buf(),
        resume,
        valid_every: usize::try_from(args.valid_every).unwrap_or(usize::MAX),
        ..TrainConfig::default()
    };
    let t = Instant::now();
    let mut bar = Bar::new(format!("{} lr {lr:e}", part.name()), set.epochs);
    let mut selector = PartSelector {
        part,
        samples: valid.samples(),
    };
    let options = FitOptions {
        selector: Some(&mut selector),
        bn_stats,
        loss_read_interval: None,
    };
    let history = match fkd_train::fit_with(&net, &vm, train, valid, &cfg, &mut bar, options) {
        Ok(h) => h,
        // A diverged run is a result of the study (lr 1e-2 may do it), not a failure of the
        // command: keep its history, evaluate its last good weights.
        Err(fkd_train::TrainError::Diverged { epoch, lr, loss }) => {
            tracing::warn!(
                "lr {lr:e} diverged at epoch {epoch} (loss {loss:e}); keeping its last good checkpoint"
            );
            History::read_json(&dir.join(fkd_train::checkpoint::HISTORY_JSON))?
        }
        Err(e) => return Err(e.into()),
    };
    let seconds = t.elapsed().as_secs_f64();
    let last = evaluate(part, &net, valid, set.flip_test)?.summary;
    // A run that diverged in its first epoch saved no best checkpoint: its last good weights
    // are all there is.
    let best_path = dir.join(fkd_train::checkpoint::BEST_WEIGHTS);
    if best_path.exists() {
        fkd_train::load_weights(&vm, &best_path)?;
    } else {
        tracing::warn!(
            "{}: no best checkpoint; scoring the last weights",
            dir.display()
        );
    }
    let best = evaluate(part, &net, valid, set.flip_test)?;
    Ok(Run {
        lr,
        dir: dir.to_path_buf(),
        history,
        best,
        last,
        seconds,
        net,
    })
}

/// A grid of training samples exactly as the loader gives them (augmented), truth in blue.
fn samples_figure<P: Part, S: Prepare>(
    part: &P,
    loader: &Loader<S>,
    path: &Path,
) -> anyhow::Result<()> {
    let n = loader.samples().len().min(8);
    let idx: Vec<usize> = loader.order(0).into_iter().take(n).collect();
    let batch = loader.batch(&idx, 0)?;
    let (_, _, h, w) = batch.images.dims4()?;
    let size = ImageSize::new(w as u32, h as u32);
    let images = batch
        .images
        .to_device(&Device::Cpu)?
        .flatten_from(1)?
        .to_vec2::<f32>()?;
    let targets = batch.targets.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
    let scale = if size.width <= 80 {
        3
    } else if size.width <= 160 {
        2
    } else {
        1
    };
    let layout = part.whole_face().then(|| part.layout());
    let mut tiles = Vec::new();
    for (img, t) in images.into_iter().zip(targets) {
        let g = GrayImage::new(size.width, size.height, img)
            .context("a batch image of the wrong size")?;
        let pts = part.decode(&t, size);
        tiles.push(fkd_viz::draw_landmarks(
            &g,
            &[(&pts, TRUTH)],
            layout.as_ref(),
            scale,
        ));
    }
    fkd_viz::save_png(&fkd_viz::grid(&tiles, 4, 4), path)?;
    Ok(())
}

/// The report's figures, as paths relative to the output folder.
struct Figures {
    loss: String,
    metric: Option<String>,
    lr_study: Option<String>,
    good: String,
    bad: String,
    filters: Option<String>,
    ced: Option<String>,
    extra: Option<ExtraFigures>,
    good_ids: Vec<String>,
    bad_ids: Vec<String>,
}

/// Largest side of a face shown in the best/worst figures.
const SHOWN_SIDE: u32 = 320;

impl Figures {
    fn draw<P: Part>(
        part: &P,
        runs: &[Run<P::Net>],
        main: &Run<P::Net>,
        valid: &DataSet,
        out: &Path,
        loss_label: &str,
    ) -> anyhow::Result<Figures> {
        let curves = |r: &Run<P::Net>, suffix: &str| {
            let e = &r.history.epochs;
            vec![
                Curve::new(
                    format!("train{suffix}"),
                    e.iter()
                        .map(|x| (x.epoch as f32 + 1.0, x.train_loss as f32))
                        .collect(),
                ),
                Curve::new(
                    format!("validation{suffix}"),
                    e.iter()
                        .filter_map(|x| Some((x.epoch as f32 + 1.0, x.valid_loss? as f32)))
                        .collect(),
                ),
            ]
        };
        let loss = "loss.png".to_string();
        fkd_viz::loss_curves(
            out.join(&loss),
            &curves(main, ""),
            &format!("{loss_label} loss, lr {:e}", main.lr),
            true,
        )?;
        let metric_curves: Vec<Curve> = runs
            .iter()
            .map(|r| {
                Curve::new(
                    format!("lr {:e}", r.lr),
                    r.history
                        .epochs
                        .iter()
                        .filter_map(|x| Some((x.epoch as f32 + 1.0, x.valid_metric? as f32)))
                        .collect(),
                )
            })
            .filter(|c| !c.values.is_empty())
            .collect();
        let metric = if metric_curves.is_empty() {
            None
        } else {
            fkd_viz::epoch_curves(
                out.join("metric.png"),
                &metric_curves,
                &format!("validation {} per epoch", part.select_by().name()),
                part.select_by().name(),
                true,
            )?;
            Some("metric.png".to_string())
        };
        let lr_study = if runs.len() > 1 {
            let all: Vec<Curve> = runs
                .iter()
                .flat_map(|r| curves(r, &format!(" lr {:e}", r.lr)))
                .collect();
            fkd_viz::loss_curves(
                out.join("lr_study.png"),
                &all,
                &format!("learning-rate study ({loss_label})"),
                true,
            )?;
            Some("lr_study.png".to_string())
        } else {
            None
        };

        // The best and worst validation faces of the main run.
        let preds = &main.best.preds;
        let mut order: Vec<usize> = (0..preds.len()).collect();
        order.sort_by(|&a, &b| preds[a].1.total_cmp(&preds[b].1));
        let layout = part.whole_face().then(|| part.layout());
        let pick = |ids: &[usize]| -> anyhow::Result<(image::RgbImage, Vec<String>)> {
            let mut tiles = Vec::new();
            let mut captions = Vec::new();
            for &i in ids {
                let s = &valid.samples[i];
                let (img, map) = shown_face(s)?;
                let moved = |p: &[PixelPoint]| -> Vec<PixelPoint> {
                    p.iter().map(|&q| map.apply(q)).collect()
                };
                let truth = moved(&part.truth(s));
                let pred = moved(&preds[i].0);
                tiles.push(fkd_viz::draw_landmarks(
                    &img,
                    &[(&truth, TRUTH), (&pred, PREDICTION)],
                    layout.as_ref(),
                    1,
                ));
                let nme = main
                    .best
                    .nmes
                    .as_ref()
                    .and_then(|n| n.get(i))
                    .map(|n| format!(", NME {:.1}%", 100.0 * n))
                    .unwrap_or_default();
                captions.push(format!("{}: {:.1} px{nme}", s.id, preds[i].1));
            }
            let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
            Ok((
                fkd_viz::captioned_grid(&tiles, &refs, ids.len().max(1), 6)?,
                captions,
            ))
        };
        let k = order.len().min(part.shown_faces());
        let (good_img, good_ids) = pick(&order[..k])?;
        let worst: Vec<usize> = order[order.len() - k..].iter().rev().copied().collect();
        let (bad_img, bad_ids) = pick(&worst)?;
        fkd_viz::save_png(&good_img, out.join("good.png"))?;
        fkd_viz::save_png(&bad_img, out.join("bad.png"))?;

        let filters = match part.filters(&main.net) {
            Some(w) => {
                let w = w.to_device(&Device::Cpu)?;
                let dims = w.dims4()?;
                let weights = w.flatten_all()?.to_vec1::<f32>()?;
                let grid = fkd_viz::filter_grid(&weights, [dims.0, dims.1, dims.2, dims.3], 8)?;
                fkd_viz::save_png(&grid, out.join("filters.png"))?;
                Some("filters.png".to_string())
            }
            None => None,
        };

        let ced = if part.whole_face() {
            let series: Vec<Curve> = runs
                .iter()
                .filter_map(|r| {
                    let errs = r.best.nmes.as_ref()?;
                    Some(Curve::cumulative(format!("lr {:e}", r.lr), errs))
                })
                .collect();
            fkd_viz::ced_curve(out.join("ced.png"), &series, "NME (inter-ocular)", 0.2)?;
            Some("ced.png".to_string())
        } else {
            None
        };
        let extra = part.extra_figures(&main.net, &valid.samples, out)?;
        Ok(Figures {
            extra,
            loss,
            metric,
            lr_study,
            good: "good.png".into(),
            bad: "bad.png".into(),
            filters,
            ced,
            good_ids,
            bad_ids,
        })
    }
}

/// A face as the figures show it: a photo of at most twice [`SHOWN_SIDE`] whole (IMM's 640×480
/// at half size), a larger one as the square around its face with a margin; scaled to at most
/// [`SHOWN_SIDE`] pixels. With the map from source pixels to the shown image.
fn shown_face(s: &Sample) -> anyhow::Result<(GrayImage, fkd_core::Affine)> {
    let img = fkd_data::img::load_gray(&s.image)?;
    let longest = s.size.width.max(s.size.height).max(1);
    let face = s.bbox.or_else(|| fkd_core::FaceBox::around(&s.points));
    match face {
        Some(b) if longest > 2 * SHOWN_SIDE => {
            let crop = fkd_data::crop::Crop::around(b, 1.4, SHOWN_SIDE);
            let shown = crop.apply(&img, 0.0);
            let back = crop
                .to_source_map()
                .inverse()
                .context("an empty face box")?;
            Ok((shown, back))
        }
        _ => {
            let k = (SHOWN_SIDE as f32 / longest as f32).min(1.0);
            let (w, h) = (
                ((s.size.width as f32 * k).round() as u32).max(1),
                ((s.size.height as f32 * k).round() as u32).max(1),
            );
            Ok((
                img.resize(w, h),
                fkd_core::Affine::scaling(f64::from(k), f64::from(k)),
            ))
        }
    }
}

fn report<P: Part>(
    part: &P,
    set: &Settings,
    m: &Metrics<'_>,
    net: &P::Net,
    f: &Figures,
    description: &str,
) -> anyhow::Result<Report> {
    let mut r = Report::new(part.title());
    r.paragraph(part.intro());
    r.heading("Data");
    r.paragraph(description);
    r.image(
        "samples.png",
        if m.augment {
            "Training samples as the loader gives them, with augmentation; ground truth in blue."
        } else {
            "Training samples as the loader gives them; ground truth in blue."
        },
    );
    r.heading("Network");
    r.preformatted(format_summary(&net.summary()?));
    if let Some(notes) = part.network_notes() {
        r.paragraph(notes);
    }
    let on = |b: bool| if b { "on" } else { "off" }.to_string();
    r.table(
        &["setting", "value"],
        &[
            vec!["epochs".to_string(), set.epochs.to_string()],
            vec!["batch size".to_string(), m.batch.to_string()],
            vec![
                "optimiser".to_string(),
                if m.weight_decay > 0.0 {
                    format!("AdamW (weight decay {} on kernels)", m.weight_decay)
                } else {
                    "Adam".to_string()
                },
            ],
            vec!["schedule".to_string(), m.schedule.clone()],
            vec![
                "loss".to_string(),
                format!("{} on normalised coordinates", m.loss),
            ],
            vec!["augmentation".to_string(), on(m.augment)],
            vec!["flip test (validation)".to_string(), on(m.flip_test)],
            vec![
                "best epoch chosen by".to_string(),
                format!("validation {}", m.selected_by),
            ],
            vec!["seed".to_string(), m.seed.to_string()],
            vec!["threads".to_string(), m.threads.to_string()],
            vec!["parameters".to_string(), m.params.to_string()],
        ],
    );
    r.heading("Training");
    r.image(
        &f.loss,
        format!(
            "Training and validation loss ({}) per epoch (log scale).",
            m.loss
        ),
    );
    if let Some(metric) = &f.metric {
        r.image(
            metric,
            format!(
                "Validation {} after each epoch; the lowest picks the checkpoint evaluated below.",
                m.selected_by
            ),
        );
    }
    if let Some(lr) = &f.lr_study {
        r.image(
            lr,
            "Learning-rate study: every run's training and validation loss.",
        );
    }
    r.heading("Results");
    let fmt =
        |v: Option<f32>, digits: usize| v.map_or("–".to_string(), |x| format!("{x:.digits$}"));
    let pct = |v: Option<f32>| v.map_or("–".to_string(), |x| format!("{:.2}%", 100.0 * x));
    let mut rows = Vec::new();
    for x in &m.runs {
        for (which, s) in [("best", x.summary), ("last", x.last)] {
            rows.push(vec![
                format!("{:e}", x.lr),
                match (which, x.best_epoch) {
                    ("best", Some(e)) => format!("best (epoch {})", e + 1),
                    _ => format!("last (epoch {})", x.epochs),
                },
                fmt(s.mse_norm, 5),
                format!("{:.2}", s.mean_px),
                format!("{:.2}", s.median_px),
                format!("{:.2}", s.mae_px),
                pct(s.nme_mean),
                pct(s.fr_008),
                pct(s.fr_010),
                fmt(s.auc_008, 3),
                format!("{:.0}", x.train_seconds),
            ]);
        }
    }
    r.table(
        &[
            "lr",
            "weights",
            "val MSE (norm.)",
            "mean error (px)",
            "median error (px)",
            "MAE (px)",
            "NME",
            "FR@0.08",
            "FR@0.10",
            "AUC@0.08",
            "train s",
        ],
        &rows,
    );
    r.paragraph(format!(
        "Errors are in {}, over the {} validation faces: mean and median Euclidean point error, \
         mean absolute error over every coordinate (the course's Kaggle metric), and, for whole \
         faces, NME by the inter-ocular distance with its failure rates and the area under its \
         cumulative curve up to 0.08. Figures below use the best checkpoint of the run with lr {:e}.",
        part.error_units(),
        m.valid_faces,
        m.main_lr
    ));
    r.image(
        &f.good,
        format!(
            "Best validation faces ({}): truth blue, prediction red.",
            f.good_ids.join(", ")
        ),
    );
    r.image(
        &f.bad,
        format!(
            "Worst validation faces ({}): truth blue, prediction red.",
            f.bad_ids.join(", ")
        ),
    );
    if let Some(ced) = &f.ced {
        r.image(ced, "Cumulative error distribution of the NME.");
    }
    if let Some(ExtraFigures { heading, figures }) = &f.extra {
        r.heading(heading.clone());
        for (file, caption) in figures {
            r.image(file, caption.clone());
        }
    }
    if let Some(filters) = &f.filters {
        r.heading("Learned filters");
        r.image(
            filters,
            "The first convolution's filters, each scaled to its own range.",
        );
    }
    r.paragraph(format!("Total wall time {:.0} s.", m.wall_seconds));
    Ok(r)
}
