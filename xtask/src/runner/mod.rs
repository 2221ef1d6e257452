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
use fkd_data::dataset::DataSet;
use fkd_landmarker::{MODEL_CARD, ModelCard};
use fkd_metrics::Summary;
use fkd_train::Batches;
use report::{Metrics, report};
use std::path::{Path, PathBuf};
use std::time::Instant;
use train::{Loaders, Run, train_one};

/// Refuses a `--loss` the part cannot train with, before any data is read.
pub fn check_loss<P: Part>(part: &P, args: &RunArgs) -> anyhow::Result<()> {
    if matches!(args.loss, Some(args::LossArg::Awing)) && !part.heatmap_targets() {
        bail!(
            "--loss awing fits heatmaps (Part 4's maps); {} trains on {}",
            part.name(),
            part.loss_target()
        );
    }
    Ok(())
}

/// Runs `part` end to end and returns the report's path: load the faces, build the loaders,
/// write the model card, train one model per learning rate, draw, report, print the scores.
pub fn run<P: Part>(part: &P, args: &RunArgs) -> anyhow::Result<PathBuf> {
    let start = Instant::now();
    check_loss(part, args)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(part.name()));
    prepare_out(&out, args)?;
    let device = crate::device_arg(args.device.as_deref())?;
    let (split, test) = hold_out(load_split(part, args, &device)?, args)?;
    let set = Settings::new(part.defaults(), args, part.whole_face());
    let loaders = Loaders::new(part, &split, test.as_ref(), &set, args, &device)?;
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
            loaders.test.as_ref(),
            loaders.stats.as_ref().map(|l| l as &dyn Batches),
            loaders.offset_faces(),
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

/// With `--holdout F`: the training faces split by photo (seed `--seed`) into those trained on
/// and those that validate each epoch; the part's validation faces come back as the test set,
/// scored only at the end.
fn hold_out(split: Split, args: &RunArgs) -> anyhow::Result<(Split, Option<DataSet>)> {
    let Some(fraction) = args.holdout else {
        return Ok((split, None));
    };
    if !(fraction > 0.0 && fraction < 1.0) {
        bail!("--holdout takes a fraction of the training photos between 0 and 1, not {fraction}");
    }
    let (train, held) = split.train.split_seeded(fraction, args.seed);
    if train.is_empty() || held.is_empty() {
        bail!(
            "--holdout {fraction} of {} training faces leaves {} to train on and {} to validate",
            split.train.len(),
            train.len(),
            held.len()
        );
    }
    tracing::info!(
        "held out {} of {} training faces ({:.0}% of the photos, seed {}) to pick the best \
         epoch; the {} validation faces are scored once at the end",
        held.len(),
        split.train.len(),
        100.0 * fraction,
        args.seed,
        split.valid.len()
    );
    let description = format!(
        "{} Of the training faces, {} ({:.0}% of the photos, seed {}) were held out: each epoch \
         is validated and the best picked on them, and the validation faces are scored only \
         once, at the end.",
        split.description,
        held.len(),
        100.0 * fraction,
        args.seed
    );
    Ok((
        Split {
            train,
            valid: held,
            description,
        },
        Some(split.valid),
    ))
}

/// Prints each run's last and best scores.
fn print_scores<P: Part>(part: &P, runs: &[Run]) {
    let by = part.select_by();
    let line = |set: &str, s: &Summary| {
        format!(
            "{set} MSE {:.5}, mean error {:.2} px{}",
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
        // With `--holdout` the epochs were scored on held-out training faces.
        let picked_on = if r.test.is_some() {
            "held-out"
        } else {
            "validation"
        };
        println!(
            "{} lr {:e}: last weights: {}",
            part.name(),
            r.lr,
            line(picked_on, &r.last)
        );
        println!(
            "{} lr {:e}: best ({} at epoch {}): {}",
            part.name(),
            r.lr,
            by.name(),
            r.history
                .best_epoch
                .map_or("–".into(), |e| (e + 1).to_string()),
            line(picked_on, &r.best.summary)
        );
        if let Some(t) = &r.test {
            for (which, s) in [("last weights", &t.last), ("best", &t.best)] {
                println!(
                    "{} lr {:e}: {which} on the {} validation faces (never used to pick): {}",
                    part.name(),
                    r.lr,
                    t.faces,
                    line("validation", s)
                );
            }
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fkd_core::{ImageSize, Layout};
    use fkd_data::dataset::Sample;

    fn args(extra: &[&str]) -> RunArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        <Cli as clap::Parser>::try_parse_from(std::iter::once("x").chain(extra.iter().copied()))
            .unwrap()
            .run
    }

    /// Two faces per photo, `photos` photos.
    fn faces(name: &str, photos: usize) -> DataSet {
        let samples = (0..2 * photos)
            .map(|i| Sample {
                image: PathBuf::from(format!("{name}/{}.jpg", i / 2)),
                size: ImageSize::new(10, 10),
                points: Vec::new(),
                bbox: None,
                person: None,
                id: format!("{name}/{}.jpg#{}", i / 2, i % 2),
                photo_scale: 1.0,
            })
            .collect();
        DataSet {
            name: name.into(),
            layout: Layout::IBUG68,
            samples,
            skipped: Vec::new(),
        }
    }

    fn split() -> Split {
        Split {
            train: faces("train", 50),
            valid: faces("valid", 7),
            description: "d.".into(),
        }
    }

    /// `--holdout 0.1` keeps a seeded tenth of the training photos, whole, for picking; the
    /// validation faces become the test set untouched; without it nothing moves.
    #[test]
    fn holdout_splits_the_training_photos_and_keeps_the_validation_faces_for_the_end() {
        let (same, none) = hold_out(split(), &args(&[])).unwrap();
        assert!(none.is_none());
        assert_eq!((same.train.len(), same.valid.len()), (100, 14));

        let (s, test) = hold_out(split(), &args(&["--holdout", "0.1"])).unwrap();
        let test = test.unwrap();
        assert_eq!(test.len(), 14);
        assert!(test.samples.iter().all(|f| f.image.starts_with("valid")));
        assert_eq!((s.train.len(), s.valid.len()), (90, 10));
        let held: std::collections::HashSet<_> = s.valid.samples.iter().map(|f| &f.image).collect();
        assert_eq!(held.len(), 5, "whole photos are held out");
        assert!(s.train.samples.iter().all(|f| !held.contains(&f.image)));
        assert!(s.description.contains("held out"));
        // Another seed holds out other photos.
        let (other, _) = hold_out(split(), &args(&["--holdout", "0.1", "--seed", "1"])).unwrap();
        assert_ne!(
            other
                .valid
                .samples
                .iter()
                .map(|f| &f.id)
                .collect::<Vec<_>>(),
            s.valid.samples.iter().map(|f| &f.id).collect::<Vec<_>>()
        );

        for bad in ["0", "1", "-0.5", "NaN"] {
            let e = hold_out(split(), &args(&[&format!("--holdout={bad}")]))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("--holdout"), "{bad}: {e}");
        }
        // A fraction too small to hold out any photo says so.
        let e = hold_out(split(), &args(&["--holdout", "0.001"]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("leaves"), "{e}");
    }
}
