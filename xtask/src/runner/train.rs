//! Training one model of a run: the seeded net, `fkd_train::fit_with` with the part's metric
//! picking the best epoch and precise BN, and the scores of its best and last weights.

use super::args::{RunArgs, SelectBy, Settings};
use super::part::{Part, Split};
use crate::progress::Bar;
use anyhow::{Context, bail};
use candle_core::{DType, Device};
use candle_nn::VarMap;
use fkd_augment::Augmenter;
use fkd_data::batch::Loader;
use fkd_data::dataset::{DataSet, Sample};
use fkd_data::prepare::Prepare;
use fkd_landmarker::{Evaluation, ModelCard, Net};
use fkd_metrics::Summary;
use fkd_models::seeded_var_builder;
use fkd_train::{Batches, FitOptions, History, Prediction, Selector, TrainConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The net's outputs for every sample of `loader`, with the flip test when `flip`.
fn predict<S: Prepare>(
    net: &Net,
    loader: &Loader<S>,
    flip: bool,
) -> anyhow::Result<Vec<Prediction>> {
    Ok(if flip {
        fkd_train::predict_flip(net, loader)?
    } else {
        fkd_train::predict(net, loader)?
    })
}

/// Predicts (with the flip test when asked) and scores every sample of `loader` with the
/// model `card` describes.
pub fn evaluate<S: Prepare>(
    card: &ModelCard,
    net: &Net,
    loader: &Loader<S>,
    flip: bool,
) -> anyhow::Result<Evaluation> {
    let predictions = predict(net, loader, flip)?;
    Ok(fkd_landmarker::score_predictions(
        card,
        loader.samples(),
        &predictions,
    )?)
}

/// The part's metric over each epoch's validation predictions (without the flip test, which
/// would double the cost of every epoch).
pub(super) struct PartSelector<'a> {
    pub(super) card: ModelCard,
    pub(super) by: SelectBy,
    pub(super) samples: &'a [Sample],
}

impl Selector for PartSelector<'_> {
    fn name(&self) -> String {
        self.by.name().into()
    }

    fn score(&mut self, predictions: &[Prediction]) -> fkd_train::Result<f64> {
        let e = fkd_landmarker::score_predictions(&self.card, self.samples, predictions)
            .map_err(|e| fkd_train::TrainError::Config(e.to_string()))?;
        Ok(self.by.of(&e.summary))
    }
}

/// One trained model: its history and its scores.
pub(super) struct Run {
    pub(super) lr: f64,
    pub(super) dir: PathBuf,
    pub(super) history: History,
    /// The best epoch's weights (the model's, at the end).
    pub(super) best: Evaluation,
    /// The last epoch's weights.
    pub(super) last: Summary,
    /// Scores on the test faces (`--holdout`: the part's validation faces, never used to pick).
    pub(super) test: Option<TestScores>,
    pub(super) seconds: f64,
    pub(super) net: Net,
}

/// The picked and the last weights scored on faces no choice looked at.
#[derive(Clone, Debug, serde::Serialize)]
pub(super) struct TestScores {
    pub(super) faces: usize,
    pub(super) best: Summary,
    pub(super) last: Summary,
}

/// The batch size of the precise-BN passes: larger batches normalise each layer's input more
/// like the population statistics used at inference (measured on Part 3's 80-epoch weights,
/// 512 faces: batch 32 NME 5.1 %, 64 4.2–4.6 %, 128 4.1–4.2 %).
pub(super) const BN_STATS_BATCH: usize = 128;

/// About `n` of `samples`, evenly spread over the list (data sets list their sources one after
/// another: the first `n` would all be AFW); all of them when `n` is at least their number.
pub(super) fn spread(samples: &[Sample], n: usize) -> Vec<Sample> {
    let step = samples.len().div_ceil(n.max(1)).max(1);
    samples.iter().step_by(step).cloned().collect()
}

/// Training faces the annotation offset of a model trained with flips is measured on.
pub(super) const OFFSET_FACES: usize = 512;

/// `card` with its [annotation offset](ModelCard::annotation_offset) measured by `net` on
/// `faces` (unaugmented training faces, predicted as the model is scored: with the flip test
/// when `flip`), also written into the card in `dir`. The faces are the training set's, so
/// the validation faces play no part in it.
fn with_offset<S: Prepare>(
    card: ModelCard,
    net: &Net,
    faces: &Loader<S>,
    flip: bool,
    dir: &Path,
) -> anyhow::Result<ModelCard> {
    let predictions = predict(net, faces, flip)?;
    let samples = faces.samples();
    let mut rows = Vec::with_capacity(predictions.len());
    for p in &predictions {
        let s = samples
            .get(p.index)
            .context("a prediction for a face the loader does not hold")?;
        rows.push((s.photo_scale, card.truth(&s.points), card.source_points(p)?));
    }
    let estimate = ModelCard::measure_offset(rows);
    let offset = estimate.and_then(|e| e.offset());
    if let Some(e) = estimate {
        tracing::info!(
            "annotation offset from {} training faces: dx {:+.3} ± {:.3} px (in the annotated \
             photos' pixels), {}",
            e.faces,
            e.dx,
            e.standard_error,
            if offset.is_some() {
                "added to every prediction"
            } else {
                "not told from noise: none added"
            }
        );
    }
    let path = dir.join(fkd_landmarker::MODEL_CARD);
    let mut written = ModelCard::read(&path)?;
    written.annotation_offset = offset;
    written.write(&path)?;
    Ok(ModelCard {
        annotation_offset: offset,
        ..card
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn train_one<P: Part, S: Prepare, V: Prepare>(
    part: &P,
    train: &Loader<S>,
    valid: &Loader<V>,
    test: Option<&Loader<V>>,
    bn_stats: Option<&dyn Batches>,
    offset_faces: Option<&Loader<S>>,
    set: &Settings,
    lr: f64,
    args: &RunArgs,
    dir: &Path,
    device: &Device,
) -> anyhow::Result<Run> {
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
        ema: args.ema,
        ..TrainConfig::default()
    };
    let t = Instant::now();
    let mut bar = Bar::new(format!("{} lr {lr:e}", part.name()), set.epochs);
    let card = part.card();
    let mut selector = PartSelector {
        card: card.clone(),
        by: part.select_by(),
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
    // The last epoch as saved: with `--ema` the averages (the model holds the trained
    // weights), otherwise the weights as they are (after a resume of a finished run, too).
    let last_path = dir.join(fkd_train::checkpoint::LAST_WEIGHTS);
    if last_path.exists() {
        fkd_train::load_weights(&vm, &last_path)?;
    }
    let card = match offset_faces {
        Some(faces) => with_offset(card, &net, faces, set.flip_test, dir)?,
        None => card,
    };
    let last = evaluate(&card, &net, valid, set.flip_test)?.summary;
    let test_last = test
        .map(|t| evaluate(&card, &net, t, set.flip_test))
        .transpose()?;
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
    let best = evaluate(&card, &net, valid, set.flip_test)?;
    let test = match (test, test_last) {
        (Some(t), Some(last)) => Some(TestScores {
            faces: t.samples().len(),
            best: evaluate(&card, &net, t, set.flip_test)?.summary,
            last: last.summary,
        }),
        _ => None,
    };
    Ok(Run {
        lr,
        dir: dir.to_path_buf(),
        history,
        best,
        last,
        test,
        seconds,
        net,
    })
}

/// The loaders of a run: shuffled, augmented training batches; plain validation batches; and
/// the fixed training faces the batch-norm statistics are recomputed from (precise BN).
pub(super) struct Loaders<P: Part> {
    pub(super) train: Loader<P::Step>,
    pub(super) valid: Loader<P::Step>,
    /// `--holdout`'s test faces (the part's validation faces).
    pub(super) test: Option<Loader<P::Step>>,
    pub(super) stats: Option<Loader<P::Step>>,
    /// Whether the annotation offset is measured (models trained with flips that predict
    /// whole faces), on [`Loaders::offset_faces`].
    measure_offset: bool,
    /// The offset's training faces where `stats` does not hold the same ones.
    offset: Option<Loader<P::Step>>,
}

impl<P: Part> Loaders<P> {
    pub(super) fn new(
        part: &P,
        split: &Split,
        test: Option<&DataSet>,
        set: &Settings,
        args: &RunArgs,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let augmenter = set
            .augment
            .map(|cfg| Augmenter::new(cfg, part.layout()))
            .transpose()?;
        let train = Loader::new(split.train.samples.clone(), part.step(augmenter), set.batch)
            .shuffled(args.seed)
            .on(device.clone());
        let valid = Loader::new(
            split.valid.samples.clone(),
            part.step(None),
            set.batch.max(16),
        )
        .on(device.clone());
        let test = test.map(|t| {
            Loader::new(t.samples.clone(), part.step(None), set.batch.max(16)).on(device.clone())
        });
        let bn_faces = args.bn_stats.unwrap_or_else(|| part.bn_stats_faces());
        let stats = (bn_faces > 0).then(|| {
            let faces = spread(&split.train.samples, bn_faces);
            let batch = faces.len().min(BN_STATS_BATCH);
            Loader::new(faces, part.step(None), batch).on(device.clone())
        });
        // A net that saw mirrored faces predicts mirror-symmetric points, with or without the
        // flip test. The faces are `spread`'s, as the statistics', so with as many of them the
        // statistics' loader (and the crops it already holds) serves.
        let flipped = set.augment.is_some_and(|a| a.flip_prob > 0.0);
        let measure_offset = flipped && part.whole_face();
        let offset = (measure_offset && (stats.is_none() || bn_faces != OFFSET_FACES)).then(|| {
            let faces = spread(&split.train.samples, OFFSET_FACES);
            Loader::new(faces, part.step(None), set.batch.max(16)).on(device.clone())
        });
        Ok(Self {
            train,
            valid,
            test,
            stats,
            measure_offset,
            offset,
        })
    }

    /// The training faces the annotation offset is measured on, if it is.
    pub(super) fn offset_faces(&self) -> Option<&Loader<P::Step>> {
        if !self.measure_offset {
            return None;
        }
        self.offset.as_ref().or(self.stats.as_ref())
    }

    /// Faces the batch-norm statistics are recomputed from (0: none).
    pub(super) fn stats_faces(&self) -> usize {
        self.stats.as_ref().map_or(0, |l| l.samples().len())
    }
}
