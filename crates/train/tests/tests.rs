//! Integration tests of `fit`, `evaluate_loss` and `predict` on a linear model learning
//! `y = 2·x0 + 1` from synthetic samples: convergence, files written, resume, divergence.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use fkd_core::{ImageSize, PixelPoint};
use fkd_data::batch::Loader;
use fkd_data::dataset::Sample;
use fkd_data::img::GrayImage;
use fkd_data::prepare::Prepared;
use fkd_train::checkpoint::{
    BEST_WEIGHTS, HISTORY_CSV, HISTORY_JSON, LAST_META, LAST_OPTIM, LAST_WEIGHTS,
};
use fkd_train::{
    CheckpointMeta, EpochRecord, History, Loss, Observer, Schedule, TrainConfig, TrainError,
    evaluate_loss, fit, load_weights, predict,
};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use std::path::Path;

/// A linear layer on the flattened `(B, 1, 1, 4)` input.
struct Lin(Linear);

impl Module for Lin {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(&x.flatten_from(1)?)
    }
}

/// A model with fixed initial weights, so two runs start from the same point.
fn model(outputs: usize) -> (Lin, VarMap) {
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let lin = candle_nn::linear(4, outputs, vb.pp("fc")).unwrap();
    let w: Vec<f32> = (0..4 * outputs).map(|i| 0.1 * i as f32 - 0.15).collect();
    varmap
        .set_one(
            "fc.weight",
            Tensor::from_vec(w, (outputs, 4), &Device::Cpu).unwrap(),
        )
        .unwrap();
    varmap
        .set_one(
            "fc.bias",
            Tensor::zeros(outputs, DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
    (Lin(lin), varmap)
}

fn samples(range: std::ops::Range<usize>) -> Vec<Sample> {
    range
        .map(|i| Sample {
            image: format!("{i}.png").into(),
            size: ImageSize::new(4, 1),
            points: vec![PixelPoint::new(0.0, 0.0)],
            bbox: None,
            person: None,
            id: i.to_string(),
            photo_scale: 1.0,
        })
        .collect()
}

/// Input: four numbers in [-0.5, 0.5] drawn from the sample number; target `2·x0 + 1`.
fn synthetic(sample: &Sample, _rng: &mut ChaCha8Rng) -> fkd_data::Result<Prepared> {
    let i: f32 = sample.id.parse().unwrap();
    let x: Vec<f32> = (1..=4)
        .map(|k| 0.5 * (i * 0.7 * k as f32 + k as f32).sin())
        .collect();
    let target = vec![2.0 * x[0] + 1.0];
    Ok(Prepared {
        image: GrayImage::new(4, 1, x).unwrap(),
        target,
        to_source: fkd_core::Affine::IDENTITY,
    })
}

type Synth = fn(&Sample, &mut ChaCha8Rng) -> fkd_data::Result<Prepared>;

fn loaders(cfg: &TrainConfig) -> (Loader<Synth>, Loader<Synth>) {
    let train = Loader::new(samples(0..60), synthetic as Synth, cfg.batch_size).shuffled(cfg.seed);
    let valid = Loader::new(samples(60..76), synthetic as Synth, 5);
    (train, valid)
}

fn config(dir: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 8,
        lr: 0.02,
        weight_decay: 0.01,
        schedule: Schedule::Step {
            every: 1,
            gamma: 0.9,
        },
        seed: 7,
        out_dir: dir.to_path_buf(),
        ..TrainConfig::default()
    }
}

fn run(cfg: &TrainConfig, observer: &mut dyn Observer) -> (Result<History, TrainError>, VarMap) {
    let (lin, varmap) = model(1);
    let (train, valid) = loaders(cfg);
    (fit(&lin, &varmap, &train, &valid, cfg, observer), varmap)
}

fn weights(varmap: &VarMap) -> Vec<f32> {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    names
        .into_iter()
        .flat_map(|n| {
            data[n]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn weights_in(path: &Path) -> Vec<f32> {
    let (_, varmap) = model(1);
    load_weights(&varmap, path).unwrap();
    weights(&varmap)
}

#[derive(Default)]
struct Recorder {
    started: Vec<(usize, usize)>,
    batches: usize,
    done: Vec<EpochRecord>,
}

impl Observer for Recorder {
    fn epoch_started(&mut self, epoch: usize, n_batches: usize) {
        self.started.push((epoch, n_batches));
    }
    fn batch_done(&mut self, _epoch: usize, _batch: usize, loss: f64) {
        assert!(loss.is_finite());
        self.batches += 1;
    }
    fn epoch_done(&mut self, record: &EpochRecord) {
        self.done.push(record.clone());
    }
}

#[test]
fn a_linear_model_learns_and_the_run_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        lr: 0.05,
        schedule: Schedule::Constant,
        ..config(dir.path(), 30)
    };
    let mut rec = Recorder::default();
    let (history, varmap) = run(&cfg, &mut rec);
    let history = history.unwrap();

    let first = &history.epochs[0];
    let last = history.epochs.last().unwrap();
    assert!(
        last.train_loss * 10.0 < first.train_loss,
        "{} → {}",
        first.train_loss,
        last.train_loss
    );
    let (first_valid, last_valid) = (first.valid_loss.unwrap(), last.valid_loss.unwrap());
    assert!(
        last_valid * 10.0 < first_valid,
        "{first_valid} → {last_valid}"
    );
    assert_eq!(history.epochs.len(), 30);
    assert_eq!(
        history.epochs.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        (0..30).collect::<Vec<_>>()
    );
    assert!(history.stopped.is_none());

    // The observer saw every epoch and batch (60 samples in batches of 8: 8 batches).
    assert_eq!(rec.started, (0..30).map(|e| (e, 8)).collect::<Vec<_>>());
    assert_eq!(rec.batches, 30 * 8);
    assert_eq!(rec.done, history.epochs);

    // History files parse back to what fit returned.
    assert_eq!(
        History::read_json(&dir.path().join(HISTORY_JSON)).unwrap(),
        history
    );
    let csv = std::fs::read_to_string(dir.path().join(HISTORY_CSV)).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("epoch,lr,train_loss,valid_loss,seconds,valid_metric")
    );
    for (line, r) in lines.zip(&history.epochs) {
        let f: Vec<f64> = line
            .split(',')
            .take(5)
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(
            f[..4],
            [r.epoch as f64, r.lr, r.train_loss, r.valid_loss.unwrap()]
        );
    }
    assert_eq!(csv.lines().count(), 31);

    // last = the final weights; best = the weights of the best epoch, whose valid loss it gives.
    assert_eq!(weights_in(&dir.path().join(LAST_WEIGHTS)), weights(&varmap));
    let best = history.best().unwrap();
    let best_loss = best.valid_loss.unwrap();
    assert!(
        history
            .epochs
            .iter()
            .all(|r| r.valid_loss >= Some(best_loss))
    );
    let (lin, best_vars) = model(1);
    load_weights(&best_vars, &dir.path().join(BEST_WEIGHTS)).unwrap();
    let (_, valid) = loaders(&cfg);
    let again = evaluate_loss(&lin, &valid, &cfg.loss).unwrap();
    assert!(
        (again - best_loss).abs() <= 1e-6 * best_loss.max(1e-6),
        "{again} vs {best_loss}"
    );

    let meta = CheckpointMeta::read(&dir.path().join(LAST_META)).unwrap();
    assert_eq!(
        (
            meta.epoch,
            meta.step,
            meta.train_samples,
            meta.train_batches
        ),
        (29, 240, 60, 8)
    );
    assert_eq!(meta.config, cfg);
    assert_eq!(meta.history, history);
    // The committed epoch's state files exist, the earlier epochs' were deleted, and
    // last.safetensors holds the same weights.
    assert_eq!(meta.weights_name(), "epoch-0029.safetensors");
    assert!(dir.path().join(meta.optim_name()).exists());
    assert!(!dir.path().join("epoch-0028.safetensors").exists());
    assert!(!dir.path().join("epoch-0028.optim.safetensors").exists());
    assert!(!dir.path().join(LAST_OPTIM).exists());
    assert_eq!(
        weights_in(&dir.path().join(meta.weights_name())),
        weights(&varmap)
    );

    // Predictions: one per validation sample, in order, close to 2·x0 + 1.
    let preds = predict(&lin, &valid).unwrap();
    assert_eq!(
        preds.iter().map(|p| p.index).collect::<Vec<_>>(),
        (0..16).collect::<Vec<_>>()
    );
    for p in &preds {
        let prepared =
            synthetic(&valid.samples()[p.index], &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        assert_eq!(p.output.len(), 1);
        assert!(
            (p.output[0] - prepared.target[0]).abs() < 0.2,
            "{p:?} vs {:?}",
            prepared.target
        );
    }
}

/// A selector that prefers the epoch it saw first: `best.safetensors` follows it, not the
/// loss, and the history records each epoch's score under the selector's name.
struct FirstEpochWins {
    calls: usize,
    seen: Vec<usize>,
}

impl fkd_train::Selector for FirstEpochWins {
    fn name(&self) -> String {
        "first".into()
    }
    fn score(&mut self, predictions: &[fkd_train::Prediction]) -> fkd_train::Result<f64> {
        self.seen.push(predictions.len());
        self.calls += 1;
        Ok(self.calls as f64)
    }
}

/// Trains the linear model for `epochs` epochs at lr 0.05, validating every `valid_every`-th
/// epoch and the last, under a [`FirstEpochWins`] selector: its configuration, the history,
/// and how many predictions each score saw.
fn fit_first_wins(
    dir: &Path,
    epochs: usize,
    valid_every: usize,
) -> (TrainConfig, History, Vec<usize>) {
    let cfg = TrainConfig {
        epochs,
        batch_size: 8,
        lr: 0.05,
        valid_every,
        out_dir: dir.to_path_buf(),
        ..TrainConfig::default()
    };
    let (train, valid) = loaders(&cfg);
    let (lin, varmap) = model(1);
    let mut selector = FirstEpochWins {
        calls: 0,
        seen: Vec::new(),
    };
    let history =
        fkd_train::fit_selecting(&lin, &varmap, &train, &valid, &cfg, &mut (), &mut selector)
            .unwrap();
    (cfg, history, selector.seen)
}

/// The validation loss of the weights `best.safetensors` in `dir` holds.
fn best_weights_loss(dir: &Path, cfg: &TrainConfig) -> f64 {
    let (lin, best_vars) = model(1);
    load_weights(&best_vars, &dir.join(BEST_WEIGHTS)).unwrap();
    let (_, valid) = loaders(cfg);
    evaluate_loss(&lin, &valid, &cfg.loss).unwrap()
}

#[test]
fn fit_selecting_keeps_the_selectors_best_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, history, seen) = fit_first_wins(dir.path(), 4, 1);
    assert_eq!(seen, vec![16; 4]);
    assert_eq!(history.metric.as_deref(), Some("first"));
    assert_eq!(history.best_epoch, Some(0));
    let scores: Vec<Option<f64>> = history.epochs.iter().map(|r| r.valid_metric).collect();
    assert_eq!(scores, [Some(1.0), Some(2.0), Some(3.0), Some(4.0)]);
    // The loss fell after epoch 0, yet best.safetensors holds epoch 0's weights.
    let first = history.epochs[0].valid_loss.unwrap();
    assert!(history.epochs[3].valid_loss.unwrap() < first);
    assert!((best_weights_loss(dir.path(), &cfg) - first).abs() <= 1e-6);
}

#[test]
fn valid_every_validates_every_nth_epoch_and_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, history, seen) = fit_first_wins(dir.path(), 5, 2);
    // Epochs 2 and 4 (counted from 1) and the last one, 5, validate; the others train only.
    assert_eq!(seen, vec![16; 3]);
    let validated: Vec<bool> = history
        .epochs
        .iter()
        .map(|r| r.valid_loss.is_some())
        .collect();
    assert_eq!(validated, [false, true, false, true, true]);
    let scores: Vec<Option<f64>> = history.epochs.iter().map(|r| r.valid_metric).collect();
    assert_eq!(scores, [None, Some(1.0), None, Some(2.0), Some(3.0)]);
    // Only a validated epoch can be the best: the selector's first score, epoch 1.
    assert_eq!(history.best_epoch, Some(1));
    let best = history.epochs[1].valid_loss.unwrap();
    assert!((best_weights_loss(dir.path(), &cfg) - best).abs() <= 1e-6);
    // The CSV leaves the skipped epochs' validation loss empty.
    let csv = std::fs::read_to_string(dir.path().join(HISTORY_CSV)).unwrap();
    assert!(csv.lines().nth(1).unwrap().starts_with("0,"));
    assert_eq!(csv.lines().nth(1).unwrap().split(',').nth(3), Some(""));

    let zero = TrainConfig {
        valid_every: 0,
        ..cfg.clone()
    };
    assert!(
        zero.validate()
            .unwrap_err()
            .to_string()
            .contains("valid_every")
    );
}

#[test]
fn resuming_after_two_epochs_matches_an_uninterrupted_run() {
    let straight_dir = tempfile::tempdir().unwrap();
    let (straight, straight_vars) = run(&config(straight_dir.path(), 4), &mut ());
    let straight = straight.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (first_half, _) = run(&config(dir.path(), 2), &mut ());
    assert_eq!(first_half.unwrap().epochs.len(), 2);
    // A fresh process: a new model (with other initial weights) and optimiser.
    let cfg = TrainConfig {
        resume: true,
        ..config(dir.path(), 4)
    };
    let (lin, varmap) = model(1);
    varmap
        .clone()
        .set_one("fc.bias", Tensor::new(&[5.0f32], &Device::Cpu).unwrap())
        .unwrap();
    let (train, valid) = loaders(&cfg);
    let mut rec = Recorder::default();
    let resumed = fit(&lin, &varmap, &train, &valid, &cfg, &mut rec).unwrap();

    assert_eq!(
        rec.started,
        [(2, 8), (3, 8)],
        "only the remaining epochs ran"
    );
    assert_eq!(
        weights(&varmap),
        weights(&straight_vars),
        "bitwise the same weights"
    );
    assert_eq!(losses(&resumed), losses(&straight));
    assert_eq!(resumed.best_epoch, straight.best_epoch);
    assert_eq!(
        weights_in(&dir.path().join(BEST_WEIGHTS)),
        weights_in(&straight_dir.path().join(BEST_WEIGHTS))
    );
}

/// A run with a weight average validates and publishes the averages, keeps the trained
/// weights for resuming, and resumes bitwise like an uninterrupted run.
#[test]
fn a_weight_average_is_validated_saved_and_resumed_exactly() {
    let ema_config = |dir: &Path, epochs| TrainConfig {
        ema: Some(0.9),
        ..config(dir, epochs)
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let (straight, trained) = run(&ema_config(straight_dir.path(), 4), &mut ());
    let straight = straight.unwrap();
    let dir = straight_dir.path();

    let meta = CheckpointMeta::read(&dir.join(LAST_META)).unwrap();
    let ema_file = meta
        .ema_file
        .clone()
        .expect("an EMA run names its averages");
    assert_eq!(ema_file, "epoch-0003.ema.safetensors");
    let averages = weights_in(&dir.join(&ema_file));
    assert_eq!(
        weights_in(&dir.join(LAST_WEIGHTS)),
        averages,
        "last = the averages"
    );
    assert_eq!(
        weights_in(&dir.join(meta.weights_name())),
        weights(&trained),
        "the epoch's weights file keeps the trained weights"
    );
    assert_ne!(averages, weights(&trained), "the average lags the weights");
    let ema_files = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".ema.safetensors")
        })
        .count();
    assert_eq!(ema_files, 1, "older epochs' averages are deleted");

    // The recorded validation loss is the averages'.
    let (lin, varmap) = model(1);
    load_weights(&varmap, &dir.join(LAST_WEIGHTS)).unwrap();
    let cfg = ema_config(dir, 4);
    let (_, valid) = loaders(&cfg);
    let loss = evaluate_loss(&lin, &valid, &cfg.loss).unwrap();
    assert_eq!(Some(loss), straight.epochs[3].valid_loss);

    // Two epochs, then a fresh process resumes to four.
    let half = tempfile::tempdir().unwrap();
    run(&ema_config(half.path(), 2), &mut ()).0.unwrap();
    let refused = TrainConfig {
        resume: true,
        ema: None,
        ..config(half.path(), 4)
    };
    let err = run(&refused, &mut ()).0.unwrap_err().to_string();
    assert!(err.contains("ema"), "{err}");
    let resumed_cfg = TrainConfig {
        resume: true,
        ..ema_config(half.path(), 4)
    };
    let (resumed, resumed_vars) = run(&resumed_cfg, &mut ());
    let resumed = resumed.unwrap();
    assert_eq!(
        weights(&resumed_vars),
        weights(&trained),
        "bitwise the same weights"
    );
    assert_eq!(losses(&resumed), losses(&straight));
    assert_eq!(resumed.best_epoch, straight.best_epoch);
    assert_eq!(weights_in(&half.path().join(LAST_WEIGHTS)), averages);
    assert_eq!(
        weights_in(&half.path().join(BEST_WEIGHTS)),
        weights_in(&dir.join(BEST_WEIGHTS))
    );
}

/// A run saved before per-epoch state files (`last.safetensors` and `last.optim.safetensors`,
/// named by no field of `last.json`) resumes to the uninterrupted run, and keeps
/// `last.safetensors`: the first new epoch republishes it and must not then delete it as the
/// old epoch's file.
#[test]
fn a_run_saved_in_the_old_layout_resumes_and_keeps_its_last_weights() {
    let straight_dir = tempfile::tempdir().unwrap();
    let (straight, straight_vars) = run(&config(straight_dir.path(), 3), &mut ());
    let straight = straight.unwrap();

    let dir = tempfile::tempdir().unwrap();
    run(&config(dir.path(), 2), &mut ()).0.unwrap();
    let meta_path = dir.path().join(LAST_META);
    let mut meta = CheckpointMeta::read(&meta_path).unwrap();
    std::fs::remove_file(dir.path().join(LAST_WEIGHTS)).unwrap();
    std::fs::rename(
        dir.path().join(meta.weights_name()),
        dir.path().join(LAST_WEIGHTS),
    )
    .unwrap();
    std::fs::rename(
        dir.path().join(meta.optim_name()),
        dir.path().join(LAST_OPTIM),
    )
    .unwrap();
    meta.weights_file = None;
    meta.optim_file = None;
    meta.write(&meta_path).unwrap();

    let cfg = TrainConfig {
        resume: true,
        ..config(dir.path(), 3)
    };
    let (resumed, varmap) = run(&cfg, &mut ());
    assert_eq!(losses(&resumed.unwrap()), losses(&straight));
    assert_eq!(weights(&varmap), weights(&straight_vars));
    assert_eq!(
        weights_in(&dir.path().join(LAST_WEIGHTS)),
        weights(&straight_vars),
        "last.safetensors is kept and holds the last epoch"
    );
    assert!(
        !dir.path().join(LAST_OPTIM).exists(),
        "the old optimiser file goes"
    );
}

fn losses(h: &History) -> Vec<(usize, f64, f64, Option<f64>)> {
    h.epochs
        .iter()
        .map(|r| (r.epoch, r.lr, r.train_loss, r.valid_loss))
        .collect()
}

/// A run killed while saving epoch 2 (its state files half written, `last.json` not yet
/// replaced) resumes from epoch 1, the last committed one, and ends bit for bit where an
/// uninterrupted run ends.
#[test]
fn a_run_killed_while_saving_resumes_from_the_last_committed_epoch() {
    let straight_dir = tempfile::tempdir().unwrap();
    let (straight, straight_vars) = run(&config(straight_dir.path(), 4), &mut ());
    let straight = straight.unwrap();

    let dir = tempfile::tempdir().unwrap();
    run(&config(dir.path(), 2), &mut ()).0.unwrap();
    // What a kill in the middle of epoch 2's save leaves: its files, truncated garbage.
    std::fs::write(
        dir.path().join("epoch-0002.optim.safetensors"),
        b"\x08\x00\x00",
    )
    .unwrap();
    std::fs::write(dir.path().join("epoch-0002.safetensors"), b"").unwrap();
    let cfg = TrainConfig {
        resume: true,
        ..config(dir.path(), 4)
    };
    let (lin, varmap) = model(1);
    let (train, valid) = loaders(&cfg);
    let resumed = fit(&lin, &varmap, &train, &valid, &cfg, &mut ()).unwrap();
    assert_eq!(losses(&resumed), losses(&straight));
    assert_eq!(weights(&varmap), weights(&straight_vars));
    let meta = CheckpointMeta::read(&dir.path().join(LAST_META)).unwrap();
    assert_eq!(meta.epoch, 3);
    assert!(!dir.path().join("epoch-0002.safetensors").exists());
}

#[test]
fn resume_refuses_another_run() {
    let dir = tempfile::tempdir().unwrap();
    run(&config(dir.path(), 1), &mut ()).0.unwrap();

    // A new run over it is refused rather than overwriting it.
    let err = run(&config(dir.path(), 1), &mut ())
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds a run"), "{err}");

    let resume = |cfg: TrainConfig| TrainConfig {
        resume: true,
        ..cfg
    };
    let cfg = resume(TrainConfig {
        batch_size: 4,
        ..config(dir.path(), 3)
    });
    let err = run(&cfg, &mut ()).0.unwrap_err().to_string();
    assert!(err.contains("other settings (batch_size: 8 → 4)"), "{err}");

    // Another model shape: the weights do not fit.
    let cfg = resume(config(dir.path(), 3));
    let (lin, varmap) = model(2);
    let (train, valid) = loaders(&cfg);
    let err = fit(&lin, &varmap, &train, &valid, &cfg, &mut ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fc.bias is F32 [1] in the checkpoint but F32 [2] in the model"),
        "{err}"
    );

    // Another training set.
    let train = Loader::new(samples(0..50), synthetic as Synth, 8).shuffled(7);
    let (lin, varmap) = model(1);
    let err = fit(&lin, &varmap, &train, &valid, &cfg, &mut ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("60 samples in 8 batches, this loader has 50 in 7"),
        "{err}"
    );

    // Nothing to resume.
    let empty = tempfile::tempdir().unwrap();
    let err = run(&resume(config(empty.path(), 3)), &mut ())
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing to resume"), "{err}");
}

#[test]
fn a_huge_learning_rate_stops_the_run_and_keeps_the_last_good_checkpoint() {
    // Two sane epochs at lr 2⁻⁶, then lr 2⁻⁶·2²⁶ = 2²⁰ ≈ 1e6.
    let cfg_for = |dir: &Path, epochs| TrainConfig {
        lr: 0.015625,
        loss: Loss::Mse,
        schedule: Schedule::Step {
            every: 2,
            gamma: 67_108_864.0,
        },
        ..config(dir, epochs)
    };
    let good_dir = tempfile::tempdir().unwrap();
    let (good, good_vars) = run(&cfg_for(good_dir.path(), 2), &mut ());
    good.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut rec = Recorder::default();
    let (result, varmap) = run(&cfg_for(dir.path(), 4), &mut rec);
    let err = result.unwrap_err();
    match err {
        TrainError::Diverged { epoch, lr, loss } => {
            assert_eq!((epoch, lr), (2, 1_048_576.0));
            assert!(loss > 1e3, "{loss}");
        }
        ref other => panic!("expected Diverged, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("epoch 2 with lr 1048576"), "{msg}");
    assert!(msg.contains("last good checkpoint was kept"), "{msg}");
    assert_eq!(rec.done.len(), 2);

    // last.* still describe epoch 1, with its weights; the history says why the run stopped.
    let meta = CheckpointMeta::read(&dir.path().join(LAST_META)).unwrap();
    assert_eq!(meta.epoch, 1);
    let good_weights = weights(&good_vars);
    assert_eq!(weights_in(&dir.path().join(LAST_WEIGHTS)), good_weights);
    let history = History::read_json(&dir.path().join(HISTORY_JSON)).unwrap();
    assert_eq!(history.epochs.len(), 2);
    assert_eq!(history.stopped.as_deref(), Some(msg.as_str()));
    // The model in memory is back at the last good weights.
    assert_eq!(weights(&varmap), good_weights);
}

/// Reading the losses back a few batches at a time (what a GPU does) changes nothing that the
/// run computes: the same history, the same weights, bit for bit; and a divergence is still
/// caught, in the same epoch. An interval of 0 is refused.
#[test]
fn losses_read_in_groups_give_the_same_run() {
    let fit_every = |interval: Option<usize>, cfg: &TrainConfig| {
        let (lin, varmap) = model(1);
        let (train, valid) = loaders(cfg);
        let options = fkd_train::FitOptions {
            loss_read_interval: interval,
            ..Default::default()
        };
        let mut rec = Recorder::default();
        let r = fkd_train::fit_with(&lin, &varmap, &train, &valid, cfg, &mut rec, options);
        (r, weights(&varmap), rec)
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ra, wa, reca) = fit_every(None, &config(a.path(), 3));
    let (rb, wb, recb) = fit_every(Some(3), &config(b.path(), 3));
    assert_eq!(losses(&ra.unwrap()), losses(&rb.unwrap()));
    assert_eq!(wa, wb);
    assert_eq!(reca.batches, recb.batches);

    let c = tempfile::tempdir().unwrap();
    let (rc, _, _) = fit_every(Some(0), &config(c.path(), 1));
    assert!(rc.unwrap_err().to_string().contains("at least 1"));

    // Diverging in epoch 2 (lr × 2²⁶ after two epochs), read 4 batches at a time.
    let d = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        lr: 0.015625,
        loss: Loss::Mse,
        schedule: Schedule::Step {
            every: 2,
            gamma: 67_108_864.0,
        },
        ..config(d.path(), 4)
    };
    let (rd, _, _) = fit_every(Some(4), &cfg);
    assert!(
        matches!(rd, Err(TrainError::Diverged { epoch: 2, .. })),
        "{rd:?}"
    );
}

#[test]
fn nan_targets_stop_in_the_first_epoch() {
    fn poisoned(sample: &Sample, rng: &mut ChaCha8Rng) -> fkd_data::Result<Prepared> {
        let mut p = synthetic(sample, rng)?;
        if sample.id == "13" {
            p.target[0] = f32::NAN;
        }
        Ok(p)
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 3);
    let (lin, varmap) = model(1);
    let train = Loader::new(samples(0..60), poisoned as Synth, 8).shuffled(7);
    let (_, valid) = loaders(&cfg);
    let before = weights(&varmap);
    let mut rec = Recorder::default();
    let err = fit(&lin, &varmap, &train, &valid, &cfg, &mut rec).unwrap_err();
    assert!(
        matches!(err, TrainError::Diverged { epoch: 0, loss, .. } if loss.is_nan()),
        "{err}"
    );
    assert!(!dir.path().join(LAST_WEIGHTS).exists());
    assert!(!dir.path().join(BEST_WEIGHTS).exists());
    let history = History::read_json(&dir.path().join(HISTORY_JSON)).unwrap();
    assert!(history.epochs.is_empty() && history.stopped.is_some());
    // The batches before the poisoned one were applied; the poisoned one was not.
    let nan_batch = train.order(0).iter().position(|&i| i == 13).unwrap() / 8;
    assert_eq!(rec.batches, nan_batch);
    let after = weights(&varmap);
    assert!(after.iter().all(|w| w.is_finite()));
    assert_eq!(after != before, nan_batch > 0);
}

/// A fixed model on `(B, 1, 1, 4)` images: with `X = 0.1·x0 + 0.2·x1 + 0.3·x2 + 0.4·x3` it
/// predicts point 0 at `(X, 0.5)` and point 1 at `(X + 0.1, 0.7)`.
struct Fixed;

impl Module for Fixed {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let w = Tensor::new(&[[0.1f32], [0.2], [0.3], [0.4]], x.device())?;
        let big_x = x.flatten_from(1)?.matmul(&w)?;
        let n = big_x.dim(0)?;
        let c = |v: f32| Tensor::full(v, (n, 1), x.device());
        Tensor::cat(&[&big_x, &c(0.5)?, &(&big_x + 0.1)?, &c(0.7)?], 1)
    }
}

/// The flip test's second pass is the model's output for the mirrored input; merged back
/// through the mirror permutation and x → W − x, worked out by hand for a bright first column.
#[test]
fn predict_flip_gives_the_mirrored_output_and_merge_averages() {
    let bright_left = |_: &Sample, _: &mut ChaCha8Rng| -> fkd_data::Result<Prepared> {
        Ok(Prepared {
            image: GrayImage::new(4, 1, vec![1.0, 0.0, 0.0, 0.0]).unwrap(),
            target: vec![0.0; 4],
            to_source: fkd_core::Affine::scaling(2.0, 3.0),
        })
    };
    let loader = Loader::new(samples(0..3), bright_left, 2);
    let plain = predict(&Fixed, &loader).unwrap();
    assert_eq!(plain[0].output, vec![0.1, 0.5, 0.2, 0.7]);
    assert_eq!(plain[0].flipped, None);
    let flip = fkd_train::predict_flip(&Fixed, &loader).unwrap();
    assert_eq!(flip.len(), 3);
    let pixels = |row: &[f32]| -> Vec<PixelPoint> {
        row.chunks_exact(2)
            .map(|c| PixelPoint::new(c[0] * 4.0, c[1]))
            .collect()
    };
    for (i, p) in flip.iter().enumerate() {
        assert_eq!(p.index, i);
        assert_eq!(p.input, fkd_core::ImageSize::new(4, 1));
        assert_eq!(p.to_source, fkd_core::Affine::scaling(2.0, 3.0));
        // Mirrored: the bright column is the last, X = 0.4.
        assert_eq!(p.flipped.as_deref(), Some(&[0.4, 0.5, 0.5, 0.7][..]));
        // Point 0 is the mirror's point 1 at (4 − 2, 0.7), point 1 the mirror's point 0 at
        // (4 − 1.6, 0.5); averaged with (0.4, 0.5) and (0.8, 0.7): (1.2, 0.6), (1.6, 0.6).
        let merged = fkd_train::merge_flipped(
            &pixels(&p.output),
            &pixels(p.flipped.as_deref().unwrap()),
            4.0,
            &[1, 0],
        )
        .unwrap();
        for (got, want) in merged.iter().zip([(1.2, 0.6), (1.6, 0.6)]) {
            assert!(
                got.distance(PixelPoint::new(want.0, want.1)) < 1e-6,
                "{merged:?}"
            );
        }
    }
    let two = pixels(&plain[0].output);
    let err = fkd_train::merge_flipped(&two, &two, 4.0, &[0, 1, 2]).unwrap_err();
    assert!(err.to_string().contains("3 points"), "{err}");
    assert!(fkd_train::merge_flipped(&two, &two, 4.0, &[0, 5]).is_err());
}

/// A batch norm over the raw `(B, 1, 1, 4)` input, then the linear layer: the norm's input does
/// not depend on the weights, so its exact statistics over a set of batches are known.
struct NormLin {
    bn: candle_nn::BatchNorm,
    lin: Linear,
}

impl candle_core::ModuleT for NormLin {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = fkd_models::ops::batch_norm2d(&self.bn, x, train, false)?;
        self.lin.forward(&y.flatten_from(1)?)
    }
}

fn norm_model() -> (NormLin, VarMap) {
    let (lin, varmap) = model(1);
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = candle_nn::BatchNormConfig {
        eps: 1e-5,
        remove_mean: true,
        affine: true,
        momentum: 0.1,
    };
    let bn = candle_nn::batch_norm(1, cfg, vb.pp("bn")).unwrap();
    (NormLin { bn, lin: lin.0 }, varmap)
}

/// The batch norm's running mean and variance in `varmap`.
fn running(varmap: &VarMap) -> (f32, f32) {
    let data = varmap.data().lock().unwrap();
    let get = |n: &str| data[n].as_tensor().to_vec1::<f32>().unwrap()[0];
    (get("bn.running_mean"), get("bn.running_var"))
}

/// With `FitOptions::bn_stats`, the statistics after each epoch (in memory and in the saved
/// checkpoints) are the mean over the stats batches of each batch's mean and unbiased
/// variance; without it they are training's moving average, which differs.
#[test]
fn precise_bn_recomputes_the_running_statistics_before_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2);
    let (train, valid) = loaders(&cfg);
    let stats = Loader::new(samples(0..30), synthetic as Synth, 10);
    let mut want = (0.0f64, 0.0f64);
    for batch in stats.epoch(0) {
        let v: Vec<f64> = batch
            .unwrap()
            .images
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
        want = (want.0 + m / 3.0, want.1 + var / 3.0);
    }
    let (net, varmap) = norm_model();
    let options = fkd_train::FitOptions {
        bn_stats: Some(&stats),
        ..Default::default()
    };
    fkd_train::fit_with(&net, &varmap, &train, &valid, &cfg, &mut (), options).unwrap();
    let close = |(m, v): (f32, f32)| {
        (f64::from(m) - want.0).abs() < 1e-5 && (f64::from(v) - want.1).abs() < 1e-5
    };
    assert!(
        close(running(&varmap)),
        "{:?} vs {want:?}",
        running(&varmap)
    );
    let (_, saved) = norm_model();
    load_weights(&saved, &dir.path().join(LAST_WEIGHTS)).unwrap();
    assert!(close(running(&saved)));

    let other = tempfile::tempdir().unwrap();
    let (net, varmap) = norm_model();
    fit(
        &net,
        &varmap,
        &train,
        &valid,
        &config(other.path(), 2),
        &mut (),
    )
    .unwrap();
    assert!(!close(running(&varmap)), "{:?}", running(&varmap));

    let none = Loader::new(Vec::new(), synthetic as Synth, 10);
    assert!(fkd_train::recompute_bn_stats(&net, &none).is_err());
}
