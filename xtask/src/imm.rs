//! Parts 1 and 2 share one recipe: regress IMM landmarks from a downscaled grayscale photo with
//! a small CNN. This module runs that recipe for a [`Recipe`] (load the person split, show
//! samples from the loader, train one model per learning rate, evaluate in 640×480 pixels, draw
//! the figures) and writes `report.html` and `metrics.json`; `part1.rs` and `part2.rs` only
//! choose the recipe and the words of the report.

use crate::DataRoot;
use crate::progress::Bar;
use anyhow::{Context, bail};
use candle_core::{DType, Device};
use candle_nn::VarMap;
use fkd_augment::{AugmentConfig, AugmentedResize, Augmenter};
use fkd_core::{ImageSize, Layout, NormPoint, PixelPoint};
use fkd_data::batch::Loader;
use fkd_data::dataset::{DataSet, LoadPolicy, Sample};
use fkd_data::img::{GrayImage, load_gray};
use fkd_metrics::{Evaluator, Normaliser, Summary};
use fkd_models::{
    ConvRegressor, ConvRegressorConfig, Summarize, format_summary, seeded_var_builder,
};
use fkd_train::{History, Loss, Schedule, TrainConfig, fit, predict};
use fkd_viz::{Curve, PREDICTION, Report, TRUTH};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Command-line options shared by `part1` and `part2`; every default comes from the [`Recipe`].
#[derive(clap::Args, Clone, Debug)]
pub struct ImmArgs {
    #[command(flatten)]
    pub root: DataRoot,
    /// Never download: fail with instructions when the data is missing.
    #[arg(long)]
    pub offline: bool,
    /// Training epochs [default: the write-up's].
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
    /// Learning-rate schedule [default: the part's: constant for Part 1, cosine for Part 2].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Training loss [default: the part's: MSE for Part 1, Wing for Part 2]; the validation
    /// MSE and pixel errors are reported whatever the loss.
    #[arg(long, value_enum)]
    pub loss: Option<LossArg>,
    /// Score each validation face by its prediction alone, without averaging in the prediction
    /// for its mirror image (the flip test, on by default when training flips faces).
    #[arg(long)]
    pub no_flip_test: bool,
    /// Use only the first N training and N validation faces (smoke tests).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Learning-rate schedules offered on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ScheduleArg {
    /// The same lr every epoch (the write-up's).
    Constant,
    /// Cosine decay from lr to 0 over the run.
    Cosine,
}

/// `--loss`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LossArg {
    /// Mean squared error (the write-up's).
    Mse,
    /// Mean absolute error.
    L1,
    /// Wing loss (Feng et al. 2018) with fkd-train's default w and ε (0.05 and 0.01 of the
    /// image side: 32 px and 6.4 px at 640 px).
    Wing,
}

/// What distinguishes Part 1 from Part 2.
pub struct Recipe {
    /// `part1` or `part2`.
    pub name: &'static str,
    /// Report title.
    pub title: &'static str,
    /// The write-up's framing of the task, for the report's first paragraph.
    pub intro: &'static str,
    /// The network.
    pub net: ConvRegressorConfig,
    /// Which points the net regresses (`None`: all 58).
    pub select: Option<Vec<usize>>,
    /// Epochs, batch size and learning rate when the user gives none.
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Training-time augmentation (`None` to train on the plain images).
    pub augment: Option<AugmentConfig>,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Training loss.
    pub loss: Loss,
}

impl Recipe {
    pub fn input(&self) -> ImageSize {
        ImageSize::new(self.net.input.1 as u32, self.net.input.0 as u32)
    }

    /// Figures draw the contours only when the net predicts the whole face.
    fn layout(&self) -> Option<&'static Layout> {
        self.select.is_none().then_some(&Layout::IMM58)
    }

    fn truth(&self, s: &Sample) -> Vec<PixelPoint> {
        match &self.select {
            Some(idx) => idx
                .iter()
                .filter_map(|&i| s.points.get(i).copied())
                .collect(),
            None => s.points.clone(),
        }
    }
}

/// One trained model: its history and its validation predictions.
struct Run {
    lr: f64,
    dir: PathBuf,
    history: History,
    summary: Summary,
    /// Per validation face: predicted points in source pixels and mean error.
    preds: Vec<(Vec<PixelPoint>, f32)>,
    /// Per validation face NME, when the recipe predicts whole faces.
    nmes: Option<Vec<f32>>,
    seconds: f64,
    model: ConvRegressor,
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
    summary: &'a Summary,
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
    params: usize,
    main_lr: f64,
    schedule: String,
    loss: String,
    runs: Vec<RunMetrics<'a>>,
}

/// Runs the recipe end to end and returns the report's path.
pub fn run(recipe: Recipe, args: &ImmArgs) -> anyhow::Result<PathBuf> {
    let start = Instant::now();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(recipe.name));
    prepare_out(&out, args)?;
    let device = crate::device()?;

    // Load: persons 1–32 train, 33–40 validate.
    let dir = crate::data::ensure(&fkd_data::fetch::IMM, &args.root.path(), args.offline)?;
    let imm = DataSet::imm(&dir, LoadPolicy::Strict)?;
    let (mut train, mut valid) = imm.split_imm_persons();
    if let Some(n) = args.limit {
        train.samples.truncate(n);
        valid.samples.truncate(n);
    }
    tracing::info!(
        "{}: {} training and {} validation faces from {}",
        recipe.name,
        train.len(),
        valid.len(),
        dir.display()
    );

    let epochs = args.epochs.unwrap_or(recipe.epochs);
    let batch = args.batch.unwrap_or(recipe.batch);
    let lrs = if args.lr.is_empty() {
        vec![recipe.lr]
    } else {
        args.lr.clone()
    };
    let augment = if args.no_augment {
        None
    } else {
        recipe.augment
    };
    let augmenter = augment
        .map(|cfg| Augmenter::new(cfg, Layout::IMM58))
        .transpose()?;
    let train_step = AugmentedResize::new(recipe.input(), recipe.select.clone(), augmenter);
    let valid_step = AugmentedResize::new(recipe.input(), recipe.select.clone(), None);
    let train_loader = Loader::new(train.samples.clone(), train_step, batch)
        .shuffled(args.seed)
        .on(device.clone());
    let valid_loader =
        Loader::new(valid.samples.clone(), valid_step, batch.max(16)).on(device.clone());

    // Show: what the network sees, straight from the training loader.
    samples_figure(&recipe, &train_loader, &out.join("samples.png"))?;

    // Train one model per learning rate.
    let mut runs = Vec::new();
    for &lr in &lrs {
        let dir = if lrs.len() == 1 {
            out.clone()
        } else {
            out.join(format!("lr_{lr:e}"))
        };
        runs.push(train_one(
            &recipe,
            &train_loader,
            &valid_loader,
            &valid,
            lr,
            epochs,
            batch,
            args,
            &dir,
            &device,
        )?);
    }
    // The model the figures show: the lowest final validation loss.
    let main = runs
        .iter()
        .min_by(|a, b| final_valid(a).total_cmp(&final_valid(b)))
        .context("no run finished")?;

    // Draw and report.
    let model = &main.model;
    let loss_label = loss_name(&loss(&recipe, args));
    let figures = Figures::draw(&recipe, &runs, main, &valid, model, &out, &loss_label)?;
    let metrics = Metrics {
        part: recipe.name,
        seed: args.seed,
        batch,
        augment: augment.is_some(),
        flip_test: flip_test(&recipe, args),
        train_faces: train.len(),
        valid_faces: valid.len(),
        params: model.num_params(),
        main_lr: main.lr,
        schedule: format!("{:?}", schedule(&recipe, args)),
        loss: loss_name(&loss(&recipe, args)),
        runs: runs
            .iter()
            .map(|r| RunMetrics {
                lr: r.lr,
                dir: r.dir.display().to_string(),
                epochs: r.history.epochs.len(),
                best_epoch: r.history.best_epoch,
                final_train_loss: r.history.epochs.last().map(|e| e.train_loss),
                final_valid_loss: r.history.epochs.last().map(|e| e.valid_loss),
                train_seconds: r.seconds,
                summary: &r.summary,
            })
            .collect(),
    };
    let json = serde_json::to_string_pretty(&metrics)?;
    fkd_train::checkpoint::write_bytes_atomic(&out.join("metrics.json"), json.as_bytes())?;
    let report = report(
        &recipe,
        &metrics,
        model,
        &figures,
        epochs,
        start.elapsed().as_secs_f64(),
    )?;
    let path = out.join("report.html");
    report.write(&path)?;
    let missing = report.missing_images(&out);
    if !missing.is_empty() {
        bail!("the report refers to images that were not written: {missing:?}");
    }
    for r in &runs {
        println!(
            "{} lr {:e}: validation MSE {:.5}, mean error {:.2} px (640×480){}",
            recipe.name,
            r.lr,
            r.summary.mse_norm.unwrap_or(f32::NAN),
            r.summary.mean_px,
            r.summary
                .nme_mean
                .map(|n| format!(", NME {n:.4}"))
                .unwrap_or_default()
        );
    }
    println!(
        "report: {} ({:.0} s)",
        path.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// The schedule a run uses: the user's choice, else the recipe's.
fn schedule(recipe: &Recipe, args: &ImmArgs) -> Schedule {
    match args.schedule {
        Some(ScheduleArg::Constant) => Schedule::Constant,
        Some(ScheduleArg::Cosine) => Schedule::Cosine { min_lr: 0.0 },
        None => recipe.schedule,
    }
}

fn loss(recipe: &Recipe, args: &ImmArgs) -> Loss {
    match args.loss {
        Some(LossArg::Mse) => Loss::Mse,
        Some(LossArg::L1) => Loss::L1,
        Some(LossArg::Wing) => Loss::Wing {
            w: fkd_train::config::WING_W,
            eps: fkd_train::config::WING_EPS,
        },
        None => recipe.loss,
    }
}

/// Whether validation uses the flip test: the net saw mirrored faces in training (augmentation
/// with flips) and predicts whole faces (so the mirror permutation applies).
fn flip_test(recipe: &Recipe, args: &ImmArgs) -> bool {
    !args.no_flip_test
        && !args.no_augment
        && recipe.select.is_none()
        && recipe.augment.is_some_and(|a| a.flip_prob > 0.0)
}

/// A loss as the report names it.
fn loss_name(loss: &Loss) -> String {
    match loss {
        Loss::Mse => "MSE".into(),
        Loss::L1 => "L1".into(),
        Loss::Wing { w, eps } => format!("Wing (w {w}, ε {eps})"),
    }
}

fn final_valid(r: &Run) -> f64 {
    r.history
        .epochs
        .last()
        .map_or(f64::INFINITY, |e| e.valid_loss)
}

/// Makes the output folder; refuses to mix a new run with an old one unless told.
fn prepare_out(out: &Path, args: &ImmArgs) -> anyhow::Result<()> {
    if args.force && out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn train_one(
    recipe: &Recipe,
    train: &Loader<AugmentedResize>,
    valid_loader: &Loader<AugmentedResize>,
    valid: &DataSet,
    lr: f64,
    epochs: usize,
    batch: usize,
    args: &ImmArgs,
    dir: &Path,
    device: &Device,
) -> anyhow::Result<Run> {
    let vm = VarMap::new();
    let model = ConvRegressor::new(
        &recipe.net,
        seeded_var_builder(&vm, args.seed, DType::F32, device),
    )?;
    let resume = args.resume && dir.join(fkd_train::checkpoint::LAST_META).exists();
    if !resume && dir.join(fkd_train::checkpoint::LAST_META).exists() {
        bail!(
            "{} already holds a run; pass --resume to continue it or --force to start over",
            dir.display()
        );
    }
    let cfg = TrainConfig {
        epochs,
        batch_size: batch,
        lr,
        loss: loss(recipe, args),
        schedule: schedule(recipe, args),
        seed: args.seed,
        out_dir: dir.to_path_buf(),
        resume,
        ..TrainConfig::default()
    };
    let t = Instant::now();
    let mut bar = Bar::new(format!("{} lr {lr:e}", recipe.name), epochs);
    let history = match fit(&model, &vm, train, valid_loader, &cfg, &mut bar) {
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
    let Evaluation {
        summary,
        preds,
        nmes,
    } = evaluate(recipe, &model, valid_loader, valid, flip_test(recipe, args))?;
    Ok(Run {
        lr,
        dir: dir.to_path_buf(),
        history,
        summary,
        preds,
        nmes,
        seconds,
        model,
    })
}

/// A model's scores on the validation faces.
struct Evaluation {
    summary: Summary,
    /// Per face: predicted points in source pixels and their mean error.
    preds: Vec<(Vec<PixelPoint>, f32)>,
    /// Per face NME, when the recipe predicts whole faces.
    nmes: Option<Vec<f32>>,
}

/// Predicts every validation face and scores it in the pixels of its 640×480 photo.
fn evaluate(
    recipe: &Recipe,
    model: &ConvRegressor,
    loader: &Loader<AugmentedResize>,
    valid: &DataSet,
    flip: bool,
) -> anyhow::Result<Evaluation> {
    let normaliser = match recipe.layout() {
        Some(layout) => Normaliser::Interocular(*layout),
        None => Normaliser::None,
    };
    let mut eval = Evaluator::new(normaliser);
    let mut preds = Vec::new();
    let outputs = if flip {
        fkd_train::predict_flip(model, loader, Layout::IMM58.mirror)?
    } else {
        predict(model, loader)?
    };
    for (i, out) in outputs {
        let s = &valid.samples[i];
        let pred_norm: Vec<NormPoint> = out
            .chunks_exact(2)
            .map(|c| NormPoint::new(c[0], c[1]))
            .collect();
        let truth = recipe.truth(s);
        let truth_norm: Vec<NormPoint> = truth.iter().map(|p| p.to_norm(s.size)).collect();
        let pred: Vec<PixelPoint> = pred_norm.iter().map(|p| p.to_pixel(s.size)).collect();
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

/// A grid of training samples exactly as the loader gives them (augmented), truth in blue.
fn samples_figure(
    recipe: &Recipe,
    loader: &Loader<AugmentedResize>,
    path: &Path,
) -> anyhow::Result<()> {
    let n = loader.samples().len().min(8);
    let idx: Vec<usize> = loader.order(0).into_iter().take(n).collect();
    let batch = loader.batch(&idx, 0)?;
    let images = batch
        .images
        .to_device(&Device::Cpu)?
        .flatten_from(1)?
        .to_vec2::<f32>()?;
    let targets = batch.targets.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
    let size = recipe.input();
    let scale = if size.width <= 80 { 3 } else { 2 };
    let mut tiles = Vec::new();
    for (img, t) in images.into_iter().zip(targets) {
        let g = GrayImage::new(size.width, size.height, img)
            .context("a batch image of the wrong size")?;
        let pts: Vec<PixelPoint> = t
            .chunks_exact(2)
            .map(|c| NormPoint::new(c[0], c[1]).to_pixel(size))
            .collect();
        tiles.push(fkd_viz::draw_landmarks(
            &g,
            &[(&pts, TRUTH)],
            recipe.layout(),
            scale,
        ));
    }
    fkd_viz::save_png(&fkd_viz::grid(&tiles, 4, 4), path)?;
    Ok(())
}

/// The report's figures, as paths relative to the output folder.
struct Figures {
    loss: String,
    lr_study: Option<String>,
    good: String,
    bad: String,
    filters: String,
    ced: Option<String>,
    good_ids: Vec<String>,
    bad_ids: Vec<String>,
}

impl Figures {
    fn draw(
        recipe: &Recipe,
        runs: &[Run],
        main: &Run,
        valid: &DataSet,
        model: &ConvRegressor,
        out: &Path,
        loss_label: &str,
    ) -> anyhow::Result<Figures> {
        let curves = |r: &Run, suffix: &str| {
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
                        .map(|x| (x.epoch as f32 + 1.0, x.valid_loss as f32))
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

        // The two best and two worst validation faces of the main run.
        let mut order: Vec<usize> = (0..main.preds.len()).collect();
        order.sort_by(|&a, &b| main.preds[a].1.total_cmp(&main.preds[b].1));
        let pick = |ids: &[usize]| -> anyhow::Result<(image::RgbImage, Vec<String>)> {
            let mut tiles = Vec::new();
            let mut captions = Vec::new();
            for &i in ids {
                let s = &valid.samples[i];
                let img = load_gray(&s.image)?.resize(s.size.width / 2, s.size.height / 2);
                let half = |p: &[PixelPoint]| -> Vec<PixelPoint> {
                    p.iter()
                        .map(|q| PixelPoint::new(q.x / 2.0, q.y / 2.0))
                        .collect()
                };
                let truth = half(&recipe.truth(s));
                let pred = half(&main.preds[i].0);
                tiles.push(fkd_viz::draw_landmarks(
                    &img,
                    &[(&truth, TRUTH), (&pred, PREDICTION)],
                    recipe.layout(),
                    1,
                ));
                captions.push(format!("{}: {:.1} px", s.id, main.preds[i].1));
            }
            let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
            Ok((fkd_viz::captioned_grid(&tiles, &refs, 2, 6)?, captions))
        };
        let k = order.len().min(2);
        let (good_img, good_ids) = pick(&order[..k])?;
        let (bad_img, bad_ids) = pick(
            &order[order.len() - k..]
                .iter()
                .rev()
                .copied()
                .collect::<Vec<_>>(),
        )?;
        fkd_viz::save_png(&good_img, out.join("good.png"))?;
        fkd_viz::save_png(&bad_img, out.join("bad.png"))?;

        let w = model.conv1_weights().to_device(&Device::Cpu)?;
        let dims = w.dims4()?;
        let weights = w.flatten_all()?.to_vec1::<f32>()?;
        let filters = fkd_viz::filter_grid(&weights, [dims.0, dims.1, dims.2, dims.3], 8)?;
        fkd_viz::save_png(&filters, out.join("filters.png"))?;

        let ced = match recipe.layout() {
            Some(_) => {
                let series: Vec<Curve> = runs
                    .iter()
                    .filter_map(|r| {
                        let errs = r.nmes.as_ref()?;
                        Some(Curve::cumulative(format!("lr {:e}", r.lr), errs))
                    })
                    .collect();
                fkd_viz::ced_curve(out.join("ced.png"), &series, "NME (inter-ocular)", 0.2)?;
                Some("ced.png".to_string())
            }
            None => None,
        };
        Ok(Figures {
            loss,
            lr_study,
            good: "good.png".into(),
            bad: "bad.png".into(),
            filters: "filters.png".into(),
            ced,
            good_ids,
            bad_ids,
        })
    }
}

fn report(
    recipe: &Recipe,
    m: &Metrics<'_>,
    model: &ConvRegressor,
    f: &Figures,
    epochs: usize,
    seconds: f64,
) -> anyhow::Result<Report> {
    let mut r = Report::new(recipe.title);
    r.paragraph(recipe.intro);
    r.heading("Data");
    r.paragraph(format!(
        "IMM face database: persons 1–32 train ({} faces), persons 33–40 validate ({} faces). \
         Images are converted to grayscale in [-0.5, 0.5] and resized to {}×{}; targets are the \
         points in normalised coordinates (x/W, y/H).",
        m.train_faces, m.valid_faces, recipe.net.input.1, recipe.net.input.0
    ));
    r.image(
        "samples.png",
        if m.augment {
            "Training samples as the loader gives them, with augmentation; ground truth in blue."
        } else {
            "Training samples as the loader gives them; ground truth in blue."
        },
    );
    r.heading("Network");
    r.preformatted(format_summary(&model.summary()?));
    let fmt =
        |v: Option<f32>, digits: usize| v.map_or("–".to_string(), |x| format!("{x:.digits$}"));
    r.table(
        &["setting", "value"],
        &[
            vec!["epochs".to_string(), epochs.to_string()],
            vec!["batch size".to_string(), m.batch.to_string()],
            vec!["optimiser".to_string(), "Adam".to_string()],
            vec!["schedule".to_string(), m.schedule.clone()],
            vec![
                "loss".to_string(),
                format!("{} on normalised coordinates", m.loss),
            ],
            vec![
                "augmentation".to_string(),
                if m.augment { "on".into() } else { "off".into() },
            ],
            vec![
                "flip test (validation)".to_string(),
                if m.flip_test {
                    "on".into()
                } else {
                    "off".into()
                },
            ],
            vec!["seed".to_string(), m.seed.to_string()],
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
    if let Some(lr) = &f.lr_study {
        r.image(
            lr,
            "Learning-rate study: every run's training and validation loss.",
        );
    }
    r.heading("Results");
    let rows: Vec<Vec<String>> = m
        .runs
        .iter()
        .map(|x| {
            vec![
                format!("{:e}", x.lr),
                fmt(x.summary.mse_norm, 5),
                format!("{:.2}", x.summary.mean_px),
                format!("{:.2}", x.summary.median_px),
                fmt(x.summary.nme_mean, 4),
                fmt(x.summary.fr_010, 3),
                format!("{:.0}", x.train_seconds),
            ]
        })
        .collect();
    r.table(
        &[
            "lr",
            "val MSE (norm.)",
            "mean error (px)",
            "median error (px)",
            "NME",
            "FR@0.10",
            "train s",
        ],
        &rows,
    );
    r.paragraph(format!(
        "Errors are Euclidean distances in the pixels of the original 640×480 photos, averaged over \
         the {} validation faces. Figures below use the run with lr {:e}.",
        m.valid_faces, m.main_lr
    ));
    r.image(
        &f.good,
        format!(
            "Two best validation faces ({}): truth blue, prediction red.",
            f.good_ids.join(", ")
        ),
    );
    r.image(
        &f.bad,
        format!(
            "Two worst validation faces ({}): truth blue, prediction red.",
            f.bad_ids.join(", ")
        ),
    );
    if let Some(ced) = &f.ced {
        r.image(ced, "Cumulative error distribution of the NME.");
    }
    r.heading("Learned filters");
    r.image(
        &f.filters,
        "The first convolution's filters, each scaled to its own range.",
    );
    r.paragraph(format!("Total wall time {seconds:.0} s."));
    Ok(r)
}
