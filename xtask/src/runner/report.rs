//! The run's numbers (`metrics.json`) and its HTML report, in the part's words.

use super::args::{RunArgs, Settings, loss_name, schedule_name};
use super::figures::Figures;
use super::part::{ExtraFigures, Part, Split};
use super::train::{Loaders, Run, TestScores};
use fkd_landmarker::Net;
use fkd_metrics::Summary;
use fkd_models::{Summarize, format_summary};
use fkd_viz::Report;
use serde::Serialize;

#[derive(Serialize)]
pub(super) struct RunMetrics<'a> {
    pub(super) lr: f64,
    pub(super) dir: String,
    pub(super) epochs: usize,
    pub(super) best_epoch: Option<usize>,
    /// In the units of `Metrics::loss`.
    pub(super) final_train_loss: Option<f64>,
    pub(super) final_valid_loss: Option<f64>,
    pub(super) train_seconds: f64,
    /// The best checkpoint's scores (what the figures show).
    pub(super) summary: &'a Summary,
    /// The last weights' scores.
    pub(super) last: &'a Summary,
    /// `--holdout`: the best and last weights on the validation faces, which picked nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) test: Option<&'a TestScores>,
}

#[derive(Serialize)]
pub(super) struct Metrics<'a> {
    pub(super) part: &'static str,
    pub(super) seed: u64,
    pub(super) batch: usize,
    pub(super) augment: bool,
    pub(super) flip_test: bool,
    pub(super) train_faces: usize,
    pub(super) valid_faces: usize,
    /// Faces left out by `--on-bad-face skip` (training and validation files together).
    pub(super) skipped_faces: usize,
    pub(super) params: usize,
    pub(super) main_lr: f64,
    pub(super) schedule: String,
    pub(super) loss: String,
    pub(super) weight_decay: f64,
    /// The decay of the weight average validated and saved (`--ema`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ema: Option<f64>,
    pub(super) selected_by: &'static str,
    /// Where the best epoch was picked: `validation`, or `held-out training photos`
    /// (`--holdout`; `valid_faces` are then those, and each run's `test` the validation faces).
    pub(super) selected_on: &'static str,
    /// Training faces the batch-norm statistics were recomputed from before each validation
    /// (0: training's running averages).
    pub(super) bn_stats_faces: usize,
    pub(super) threads: usize,
    pub(super) wall_seconds: f64,
    pub(super) runs: Vec<RunMetrics<'a>>,
}

impl<'a> Metrics<'a> {
    /// The numbers of a finished run; `main` is the run the figures show. `wall_seconds` is
    /// left at 0 for the caller, who knows when the run started.
    pub(super) fn of<P: Part>(
        part: &P,
        args: &RunArgs,
        set: &Settings,
        split: &Split,
        loaders: &Loaders<P>,
        runs: &'a [Run],
        main: &Run,
    ) -> Self {
        Metrics {
            part: part.name(),
            seed: args.seed,
            batch: set.batch,
            augment: set.augment.is_some(),
            flip_test: set.flip_test,
            train_faces: split.train.len(),
            valid_faces: split.valid.len(),
            skipped_faces: split.train.skipped.len() + split.valid.skipped.len(),
            params: main.net.num_params(),
            main_lr: main.lr,
            schedule: schedule_name(&set.schedule),
            loss: loss_name(&set.loss),
            weight_decay: set.weight_decay,
            ema: args.ema,
            selected_by: part.select_by().name(),
            selected_on: if args.holdout.is_some() {
                "held-out training photos"
            } else {
                "validation"
            },
            bn_stats_faces: loaders.stats_faces(),
            threads: rayon::current_num_threads(),
            wall_seconds: 0.0,
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
                    test: r.test.as_ref(),
                })
                .collect(),
        }
    }
}

/// The run's HTML report: data, network and settings, training curves, results, figures.
pub(super) fn report<P: Part>(
    part: &P,
    set: &Settings,
    m: &Metrics<'_>,
    net: &Net,
    f: &Figures,
    description: &str,
) -> anyhow::Result<Report> {
    let mut r = Report::new(part.title());
    r.paragraph(part.intro());
    data_section(&mut r, m, description);
    network_section(&mut r, part, set, m, net)?;
    training_section(&mut r, m, f);
    results_section(&mut r, part, m, f);
    r.paragraph(format!("Total wall time {:.0} s.", m.wall_seconds));
    Ok(r)
}

fn data_section(r: &mut Report, m: &Metrics<'_>, description: &str) {
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
}

/// The net's layers, the part's notes on it, and the settings it trained with.
fn network_section<P: Part>(
    r: &mut Report,
    part: &P,
    set: &Settings,
    m: &Metrics<'_>,
    net: &Net,
) -> anyhow::Result<()> {
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
                "weights evaluated".to_string(),
                m.ema.map_or("as trained".to_string(), |d| {
                    format!("moving average, decay {d} per step")
                }),
            ],
            vec![
                "loss".to_string(),
                format!("{} on {}", m.loss, part.loss_target()),
            ],
            vec!["augmentation".to_string(), on(m.augment)],
            vec!["flip test (validation)".to_string(), on(m.flip_test)],
            vec![
                "best epoch chosen by".to_string(),
                format!("{} {}", m.selected_on, m.selected_by),
            ],
            vec!["seed".to_string(), m.seed.to_string()],
            vec!["threads".to_string(), m.threads.to_string()],
            vec!["parameters".to_string(), m.params.to_string()],
        ],
    );
    Ok(())
}

/// Loss and metric curves, and the learning-rate study.
fn training_section(r: &mut Report, m: &Metrics<'_>, f: &Figures) {
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
}

/// Every run's scores (best and last weights), then the figures of the main run.
fn results_section<P: Part>(r: &mut Report, part: &P, m: &Metrics<'_>, f: &Figures) {
    r.heading("Results");
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
        &score_rows(m),
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
    let tested = test_rows(m);
    if !tested.is_empty() {
        r.paragraph(format!(
            "The same weights on the {} validation faces, which picked neither the epoch nor \
             anything else (`--holdout`): the run's unbiased scores.",
            m.runs
                .iter()
                .find_map(|x| x.test.map(|t| t.faces))
                .unwrap_or_default()
        ));
        r.table(
            &[
                "lr",
                "weights",
                "mean error (px)",
                "MAE (px)",
                "NME",
                "FR@0.08",
                "AUC@0.08",
            ],
            &tested,
        );
    }
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
}

/// The results table's rows: each run's best and last weights.
fn score_rows(m: &Metrics<'_>) -> Vec<Vec<String>> {
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
    rows
}

/// `--holdout`'s rows: each run's picked and last weights on the validation faces.
fn test_rows(m: &Metrics<'_>) -> Vec<Vec<String>> {
    let pct = |v: Option<f32>| v.map_or("–".to_string(), |x| format!("{:.2}%", 100.0 * x));
    let mut rows = Vec::new();
    for x in &m.runs {
        let Some(t) = x.test else { continue };
        for (which, s) in [("best", &t.best), ("last", &t.last)] {
            rows.push(vec![
                format!("{:e}", x.lr),
                match (which, x.best_epoch) {
                    ("best", Some(e)) => format!("picked (epoch {})", e + 1),
                    _ => format!("last (epoch {})", x.epochs),
                },
                format!("{:.2}", s.mean_px),
                format!("{:.2}", s.mae_px),
                pct(s.nme_mean),
                pct(s.fr_008),
                s.auc_008.map_or("–".to_string(), |x| format!("{x:.3}")),
            ]);
        }
    }
    rows
}
