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

mod args;
mod figures;
mod part;
mod report;
mod train;

pub use args::{Defaults, RunArgs, SelectBy, loss_name};
pub use part::{ExtraFigures, Part, Split};
#[cfg(test)]
pub use {args::BadFace, train::evaluate};

use anyhow::{Context, bail};
use args::Settings;
use candle_core::Device;
use figures::{Figures, samples_figure};
use fkd_landmarker::{MODEL_CARD, ModelCard};
use fkd_metrics::Summary;
use fkd_train::Batches;
use report::{Metrics, report};
use std::path::{Path, PathBuf};
use std::time::Instant;
use train::{Loaders, Run, train_one};

/// Runs `part` end to end and returns the report's path: load the faces, build the loaders,
/// write the model card, train one model per learning rate, draw, report, print the scores.
pub fn run<P: Part>(part: &P, args: &RunArgs) -> anyhow::Result<PathBuf> {
    let start = Instant::now();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(part.name()));
    prepare_out(&out, args)?;
    let device = crate::device_arg(args.device.as_deref())?;
    let split = load_split(part, args, &device)?;
    let set = Settings::new(part.defaults(), args, part.whole_face());
    let loaders = Loaders::new(part, &split, &set, args, &device)?;
    let card = ModelCard {
        flip_test: set.flip_test,
        ..part.card()
    };
    card.write(&out.join(MODEL_CARD))?;
    samples_figure(part, &loaders.train, &out.join("samples.png"))?;

    let mut runs = Vec::new();
    for &lr in &set.lrs {
        let dir = if set.lrs.len() == 1 {
            out.clone()
        } else {
            out.join(format!("lr_{lr:e}"))
        };
        if dir != out {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            card.write(&dir.join(MODEL_CARD))?;
        }
        runs.push(train_one(
            part,
            &loaders.train,
            &loaders.valid,
            loaders.stats.as_ref().map(|l| l as &dyn Batches),
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

    let figures = Figures::draw(part, &runs, main, &split.valid, &out, &loss_name(&set.loss))?;
    let mut metrics = Metrics::of(part, args, &set, &split, &loaders, &runs, main);
    metrics.wall_seconds = start.elapsed().as_secs_f64();
    let json = serde_json::to_string_pretty(&metrics)?;
    fkd_core::io::write_bytes_atomic(&out.join("metrics.json"), json.as_bytes())?;
    let report = report(
        part,
        &set,
        &metrics,
        &main.net,
        &figures,
        &split.description,
    )?;
    let path = out.join("report.html");
    report.write(&path)?;
    let missing = report.missing_images(&out);
    if !missing.is_empty() {
        bail!("the report refers to images that were not written: {missing:?}");
    }
    print_scores(part, &runs);
    println!(
        "report: {} ({:.0} s)",
        path.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(path)
}

/// The part's training and validation faces (the first `--limit` of each), logged.
fn load_split<P: Part>(part: &P, args: &RunArgs, device: &Device) -> anyhow::Result<Split> {
    let mut split = part.load(args)?;
    if let Some(n) = args.limit {
        split.train.samples.truncate(n);
        split.valid.samples.truncate(n);
    }
    tracing::info!(
        "{}: {} training and {} validation faces, on {}",
        part.name(),
        split.train.len(),
        split.valid.len(),
        crate::device_label(device),
    );
    let skipped = split.train.skipped.len() + split.valid.skipped.len();
    if skipped > 0 {
        tracing::warn!(
            "{skipped} faces left out (--on-bad-face skip); the warnings above name them"
        );
    }
    Ok(split)
}

/// Prints each run's last and best scores.
fn print_scores<P: Part>(part: &P, runs: &[Run]) {
    let by = part.select_by();
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
    for r in runs {
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
}

/// Makes the output folder; refuses to mix a new run with an old one unless told.
fn prepare_out(out: &Path, args: &RunArgs) -> anyhow::Result<()> {
    if args.force && out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    Ok(())
}
