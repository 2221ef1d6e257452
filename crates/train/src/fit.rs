//! The training loop ([`fit`]), and inference over a loader ([`evaluate_loss`], [`predict`]).

use crate::bn::{Batches, recompute_bn_stats};
use crate::checkpoint::{
    BEST_WEIGHTS, CheckpointMeta, LAST_META, LAST_WEIGHTS, META_VERSION, epoch_ema, epoch_optim,
    epoch_weights, load_weights, publish_last_weights, save_weights,
};
use crate::ema::Ema;
use crate::optim::{Adam, AdamConfig};
use crate::{EpochRecord, History, Loss, Result, TrainConfig, TrainError};
use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::VarMap;
use fkd_core::{Affine, ImageSize};
use fkd_data::batch::Loader;
use fkd_data::prepare::Prepare;
use std::path::Path;
use std::time::Instant;

/// Runs `f` on a worker of rayon's global pool and waits for it. fkd's kernels open a parallel
/// region per op; opened from a worker, each is a local fork-join in which that thread does a
/// share, rather than a job queued from outside the pool while the caller sleeps (a third thread
/// on two cores, woken hundreds of times a training step; measured on a loaded 2-core VM:
/// NoseNet +20 %, FaceNet +11 %, the Part 4 net +10 % training images/s, the same results).
/// `f` must not rely on the caller's thread-locals (the precise-BN momentum is one: its passes
/// stay on the caller).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// A network that maps a batch of inputs to predictions, behaving differently in training
/// (`train = true`: dropout, batch statistics) and inference. Every candle `Module` and
/// `ModuleT` is one.
pub trait Model {
    /// The predictions for `x`.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
}

impl<T: ModuleT + ?Sized> Model for T {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        ModuleT::forward_t(self, x, train)
    }
}

/// Hears about a run's progress, to draw a progress bar or collect numbers. Every method does
/// nothing unless overridden; `()` is the observer that ignores everything.
pub trait Observer {
    /// An epoch (0-based) of `n_batches` training batches begins.
    fn epoch_started(&mut self, _epoch: usize, _n_batches: usize) {}
    /// Training batch `batch` of `epoch` had loss `loss` (before its update).
    fn batch_done(&mut self, _epoch: usize, _batch: usize, _loss: f64) {}
    /// An epoch finished, was validated and checkpointed.
    fn epoch_done(&mut self, _record: &EpochRecord) {}
}

impl Observer for () {}

/// One sample's raw network output, with what is needed to read it in the source photo.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The sample's index in the loader's list.
    pub index: usize,
    /// The model's output for the sample, flattened.
    pub output: Vec<f32>,
    /// The output for the horizontally mirrored input (the flip test), when asked for. It is
    /// the raw output: undoing the mirror (and renumbering left/right points) depends on what
    /// the output means, which the caller knows.
    pub flipped: Option<Vec<f32>>,
    /// The network input's size in pixels.
    pub input: ImageSize,
    /// Maps the input's pixels to the source photo's ([`fkd_data::prepare::Prepared::to_source`]).
    pub to_source: Affine,
}

/// Scores a model's validation predictions after each epoch; the epoch with the lowest score
/// is the one `best.safetensors` keeps. [`fit`] selects by the validation loss;
/// [`fit_selecting`] takes a `Selector` so that a part can select by what it reports (NME on
/// 300-W, pixel error on IMM), computed from the same forward pass as the loss.
pub trait Selector {
    /// The score's name, for the history and reports ("NME").
    fn name(&self) -> String;
    /// The score of these predictions (every validation sample, in index order); lower is
    /// better.
    fn score(&mut self, predictions: &[Prediction]) -> Result<f64>;
}

/// Where a run stands between epochs.
#[derive(Debug, Default)]
struct RunState {
    next_epoch: usize,
    history: History,
    /// The loss of the run's first batch.
    reference_loss: Option<f64>,
    best_valid: Option<f64>,
    /// The state files of the last saved epoch (weights, optimiser, weight averages), deleted
    /// once the next epoch's are committed ([`LAST_WEIGHTS`], which runs saved before
    /// per-epoch files name, never is: it is the user's copy of the last weights).
    saved: Vec<String>,
}

/// Trains the variables of `varmap` (those of `model`) with Adam on `train`, validating on
/// `valid` after every epoch, as `cfg` says.
///
/// For each epoch `e` from 0 (or from the saved epoch + 1 when `cfg.resume`): the learning rate
/// is `cfg.lr_at(e)`; the batches are `train.epoch(e)`, so a shuffled loader visits a new
/// seeded order each epoch and a resumed run sees the same orders as an uninterrupted one; then
/// the validation loss is the mean over `valid`'s samples in inference mode. After the epoch,
/// `best.safetensors` (if the validation loss improved), `last.*` and `history.*` are written
/// to `cfg.out_dir`, each atomically (see [`crate::checkpoint`]).
///
/// The run stops with [`TrainError::Diverged`] as soon as a batch loss is NaN, infinite or
/// above `cfg.diverge_factor` × the loss of the run's first batch, or an epoch's training loss
/// is above `cfg.diverge_factor` × the first epoch's, or a validation loss is not finite.
/// Nothing of that epoch is saved; `history.*` records why the run stopped, and the variables
/// in `varmap` are restored to the last good checkpoint when there is one.
///
/// With a weight average ([`TrainConfig::ema`]) the averages are validated, and `best` and
/// `last.safetensors` hold them; a run that ends normally leaves the trained weights in
/// `varmap`, a diverged one the last saved averages (`last.safetensors`).
///
/// A new run refuses an `out_dir` that already holds one (`last.json`); a resumed run refuses
/// a configuration, training set size, batching or model that differs from the saved one.
pub fn fit<M: Model + Sync + ?Sized, P: Prepare, Q: Prepare>(
    model: &M,
    varmap: &VarMap,
    train: &Loader<P>,
    valid: &Loader<Q>,
    cfg: &TrainConfig,
    observer: &mut dyn Observer,
) -> Result<History> {
    fit_with(
        model,
        varmap,
        train,
        valid,
        cfg,
        observer,
        FitOptions::default(),
    )
}

/// [`fit`], keeping as `best.safetensors` the epoch with the lowest `selector` score instead
/// of the lowest validation loss. Each epoch's score is recorded in the history
/// ([`EpochRecord::valid_metric`], named by [`History::metric`]).
pub fn fit_selecting<M: Model + Sync + ?Sized, P: Prepare, Q: Prepare>(
    model: &M,
    varmap: &VarMap,
    train: &Loader<P>,
    valid: &Loader<Q>,
    cfg: &TrainConfig,
    observer: &mut dyn Observer,
    selector: &mut dyn Selector,
) -> Result<History> {
    let options = FitOptions {
        selector: Some(selector),
        ..FitOptions::default()
    };
    fit_with(model, varmap, train, valid, cfg, observer, options)
}

/// What [`fit_with`] does beyond [`fit`].
#[derive(Default)]
pub struct FitOptions<'a> {
    /// Keep as `best.safetensors` the epoch with the lowest score of this selector (as
    /// [`fit_selecting`]) instead of the lowest validation loss.
    pub selector: Option<&'a mut dyn Selector>,
    /// Before each validation, recompute the batch-norm running statistics over these batches
    /// ([`crate::recompute_bn_stats`]; typically training faces without augmentation), so the
    /// score, `best` and `last` describe the weights rather than the luck of the last batches.
    pub bn_stats: Option<&'a dyn Batches>,
    /// Read the batch losses back every this many batches (at least 1; one stacked copy per
    /// read). `None`: the device's default, every batch on the CPU and
    /// [`GPU_LOSS_READ_INTERVAL`] on a GPU. The losses, weights and history do not depend on it;
    /// a divergence is caught at the read, so up to this many steps late.
    pub loss_read_interval: Option<usize>,
}

/// [`fit`] with the [`FitOptions`].
pub fn fit_with<M: Model + Sync + ?Sized, P: Prepare, Q: Prepare>(
    model: &M,
    varmap: &VarMap,
    train: &Loader<P>,
    valid: &Loader<Q>,
    cfg: &TrainConfig,
    observer: &mut dyn Observer,
    options: FitOptions<'_>,
) -> Result<History> {
    let FitOptions {
        mut selector,
        bn_stats,
        loss_read_interval: read_interval,
    } = options;
    check_fit(varmap, train, valid, cfg, read_interval)?;
    let dir = cfg.out_dir.as_path();
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut opt = Adam::new(varmap, AdamConfig::from(cfg))?;
    let mut ema = cfg.ema.map(|decay| Ema::new(varmap, decay)).transpose()?;
    let mut state = if cfg.resume {
        resume(dir, cfg, varmap, &mut opt, ema.as_mut(), train)?
    } else {
        if dir.join(LAST_META).exists() {
            return Err(TrainError::checkpoint(
                dir,
                "this folder already holds a run (last.json): resume it, or choose another out_dir",
            ));
        }
        RunState::default()
    };
    state.history.metric = selector.as_ref().map(|s| s.name());
    if state.next_epoch >= cfg.epochs {
        tracing::info!(
            epochs = cfg.epochs,
            "the saved run already finished every epoch"
        );
    }

    for epoch in state.next_epoch..cfg.epochs {
        let started = Instant::now();
        let lr = cfg.lr_at_step(epoch, 0, train.n_batches());
        opt.set_lr(lr);
        let diverged = |loss: f64| TrainError::Diverged { epoch, lr, loss };
        observer.epoch_started(epoch, train.n_batches());
        let interval = read_interval.unwrap_or_else(|| loss_read_interval(train.device()));
        let epoch_run = EpochRun {
            epoch,
            lr,
            cfg,
            varmap,
            dir,
            interval,
        };
        let train_loss =
            epoch_run.train(model, train, &mut opt, ema.as_mut(), &mut state, observer)?;
        let first_epoch_loss = state
            .history
            .epochs
            .first()
            .map_or(train_loss, |r| r.train_loss);
        if too_large(train_loss, first_epoch_loss, cfg.diverge_factor) {
            return Err(stop(dir, varmap, &mut state.history, diverged(train_loss)));
        }
        let validated = if cfg.validates(epoch) {
            // With a weight average, the averages are validated (and their batch-norm
            // statistics recomputed), then the trained weights put back.
            if let Some(ema) = ema.as_mut() {
                ema.swap()?;
            }
            let validated = validate_epoch(model, valid, cfg, bn_stats, selector.as_deref_mut())?;
            if let Some(ema) = ema.as_mut() {
                ema.swap()?;
            }
            Some(validated)
        } else {
            None
        };
        let valid_loss = validated.map(|(loss, _)| loss);
        let valid_metric = validated.and_then(|(_, metric)| metric);
        if let Some(loss) = valid_loss.filter(|l| !l.is_finite()) {
            return Err(stop(dir, varmap, &mut state.history, diverged(loss)));
        }
        let record = EpochRecord {
            epoch,
            lr,
            train_loss,
            valid_loss,
            valid_metric,
            seconds: started.elapsed().as_secs_f64(),
        };
        epoch_run.commit(&record, &opt, ema.as_ref(), &mut state, train)?;
        tracing::debug!(
            epoch,
            lr,
            train_loss,
            valid_loss,
            seconds = record.seconds,
            "epoch done"
        );
        observer.epoch_done(&record);
    }
    Ok(state.history)
}

/// Refuses what `fit` cannot train: a bad config or read interval, an empty loader, a model
/// without variables.
fn check_fit<P: Prepare, Q: Prepare>(
    varmap: &VarMap,
    train: &Loader<P>,
    valid: &Loader<Q>,
    cfg: &TrainConfig,
    read_interval: Option<usize>,
) -> Result<()> {
    cfg.validate()?;
    if read_interval == Some(0) {
        return Err(TrainError::Config(
            "the loss read interval must be at least 1 batch".into(),
        ));
    }
    if train.n_batches() == 0 {
        return Err(TrainError::Config(
            "the training loader has no batches".into(),
        ));
    }
    if valid.n_batches() == 0 {
        return Err(TrainError::Config(
            "the validation loader has no batches".into(),
        ));
    }
    if varmap.all_vars().is_empty() {
        return Err(TrainError::Config(
            "the model has no variables to train".into(),
        ));
    }
    Ok(())
}

/// One epoch of a run: what its training pass and its checkpoint need.
struct EpochRun<'a> {
    epoch: usize,
    /// The epoch's first learning rate (what the history records).
    lr: f64,
    cfg: &'a TrainConfig,
    varmap: &'a VarMap,
    dir: &'a Path,
    /// Batches whose losses are read back together.
    interval: usize,
}

impl EpochRun<'_> {
    /// The training pass: every batch's forward, loss and Adam step, the losses read back
    /// `interval` at a time (stopping at a diverging one). Returns the mean loss per sample.
    fn train<M: Model + Sync + ?Sized, P: Prepare>(
        &self,
        model: &M,
        train: &Loader<P>,
        opt: &mut Adam,
        mut ema: Option<&mut Ema>,
        state: &mut RunState,
        observer: &mut dyn Observer,
    ) -> Result<f64> {
        let (epoch, cfg, n_batches) = (self.epoch, self.cfg, train.n_batches());
        let diverged = |loss: f64| TrainError::Diverged {
            epoch,
            lr: self.lr,
            loss,
        };
        let (sum, count) = train.prefetched(epoch as u64, PREFETCH_BATCHES, |batches| {
            let (mut sum, mut count) = (0.0, 0usize);
            // (batch, rows, loss) of the batches whose loss is not read yet.
            let mut pending: Vec<(usize, usize, Tensor)> = Vec::with_capacity(self.interval);
            let mut read = |pending: &mut Vec<(usize, usize, Tensor)>| -> Result<()> {
                let losses: Vec<Tensor> = pending.iter().map(|p| p.2.clone()).collect();
                let values = Tensor::stack(&losses, 0)?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?;
                for ((b, rows, _), value) in pending.drain(..).zip(values) {
                    let reference = *state.reference_loss.get_or_insert(value);
                    if too_large(value, reference, cfg.diverge_factor) {
                        return Err(stop(
                            self.dir,
                            self.varmap,
                            &mut state.history,
                            diverged(value),
                        ));
                    }
                    sum += value * rows as f64;
                    count += rows;
                    observer.batch_done(epoch, b, value);
                }
                Ok(())
            };
            for (b, batch) in batches.enumerate() {
                let batch = batch?;
                opt.set_lr(cfg.lr_at_step(epoch, b, n_batches));
                opt.set_betas(cfg.betas_at_step(epoch, b, n_batches));
                // The step's compute runs on a worker of rayon's pool, so that each of its
                // kernels' parallel regions is a local fork-join in which this thread takes a
                // share, instead of a job queued from outside the pool while this thread sleeps
                // (a third thread on two cores, woken hundreds of times a step).
                let loss = on_pool(|| -> Result<Tensor> {
                    let pred = model.forward_t(&batch.images, true)?;
                    Ok(cfg.loss.compute(&pred, &batch.targets)?)
                })?;
                pending.push((b, batch.indices.len(), loss.detach()));
                if pending.len() >= self.interval || b + 1 == n_batches {
                    read(&mut pending)?;
                }
                on_pool(|| opt.backward_step(&loss))?;
                if let Some(ema) = ema.as_deref_mut() {
                    let step = opt.step_count();
                    on_pool(|| ema.update(step))?;
                }
            }
            if !pending.is_empty() {
                read(&mut pending)?;
            }
            Ok::<_, TrainError>((sum, count))
        })?;
        Ok(sum / count as f64)
    }

    /// Records the epoch and commits its checkpoint: `best.safetensors` when its score (the
    /// selector's, else the validation loss; none without validation; a non-finite one never
    /// wins) improved, this epoch's state files, then `last.json` naming them (the commit
    /// point), then the previous epoch's files go (see the checkpoint module), then the
    /// history. With a weight average, `best` and `last` are the averages.
    fn commit<P: Prepare>(
        &self,
        record: &EpochRecord,
        opt: &Adam,
        ema: Option<&Ema>,
        state: &mut RunState,
        train: &Loader<P>,
    ) -> Result<()> {
        let (epoch, dir, varmap) = (self.epoch, self.dir, self.varmap);
        let score = record.valid_metric.or(record.valid_loss);
        state.history.epochs.push(record.clone());
        if let Some(score) = score.filter(|s| s.is_finite())
            && state.best_valid.is_none_or(|best| score < best)
        {
            state.best_valid = Some(score);
            state.history.best_epoch = Some(epoch);
            match ema {
                Some(ema) => ema.save(&dir.join(BEST_WEIGHTS))?,
                None => save_weights(varmap, &dir.join(BEST_WEIGHTS))?,
            }
        }
        let (weights_file, optim_file) = (epoch_weights(epoch), epoch_optim(epoch));
        opt.save(&dir.join(&optim_file))?;
        save_weights(varmap, &dir.join(&weights_file))?;
        let ema_file = match ema {
            Some(ema) => {
                let file = epoch_ema(epoch);
                ema.save(&dir.join(&file))?;
                Some(file)
            }
            None => None,
        };
        let current: Vec<String> = [Some(weights_file.clone()), Some(optim_file.clone())]
            .into_iter()
            .chain([ema_file.clone()])
            .flatten()
            .collect();
        let previous = std::mem::replace(&mut state.saved, current);
        CheckpointMeta {
            version: META_VERSION,
            epoch,
            step: opt.step_count(),
            reference_loss: state.reference_loss.unwrap_or(record.train_loss),
            best_valid: state.best_valid,
            train_samples: train.samples().len(),
            train_batches: train.n_batches(),
            config: self.cfg.clone(),
            history: state.history.clone(),
            weights_file: Some(weights_file.clone()),
            optim_file: Some(optim_file.clone()),
            ema_file: ema_file.clone(),
        }
        .write(&dir.join(LAST_META))?;
        publish_last_weights(dir, ema_file.as_deref().unwrap_or(&weights_file))?;
        for old in previous {
            if old != LAST_WEIGHTS && !state.saved.contains(&old) {
                // Best effort: a stale state file only costs disk space.
                let _ = std::fs::remove_file(dir.join(old));
            }
        }
        state.history.write(dir)?;
        Ok(())
    }
}

/// Validation after an epoch: the batch-norm statistics recomputed (when `bn_stats` is given),
/// then the validation loss and, with a selector, its score.
fn validate_epoch<M: Model + Sync + ?Sized, Q: Prepare>(
    model: &M,
    valid: &Loader<Q>,
    cfg: &TrainConfig,
    bn_stats: Option<&dyn Batches>,
    selector: Option<&mut (dyn Selector + '_)>,
) -> Result<(f64, Option<f64>)> {
    if let Some(stats) = bn_stats {
        recompute_bn_stats(model, stats)?;
    }
    match selector {
        None => Ok((evaluate_loss(model, valid, &cfg.loss)?, None)),
        Some(selector) => {
            let (loss, predictions) = validate(model, valid, &cfg.loss)?;
            Ok((loss, Some(selector.score(&predictions)?)))
        }
    }
}

/// Whether `loss` means the run diverged: not finite, or above `factor × reference` (the
/// relative test is skipped for a zero reference, which any progress would exceed).
fn too_large(loss: f64, reference: f64, factor: f64) -> bool {
    !loss.is_finite() || (reference > 0.0 && loss > factor * reference)
}

/// Training batches prepared ahead of the one being trained on (see `Loader::prefetched`).
const PREFETCH_BATCHES: usize = 2;

/// On a GPU the training loop reads the batch losses back once per this many batches (one
/// stacked copy, one wait for the device), so the host queues the next steps while the GPU
/// works; a divergence is then caught up to this many steps late.
pub const GPU_LOSS_READ_INTERVAL: usize = 16;

/// Batches per read of the losses: every batch on the CPU (nothing runs ahead there, and the
/// divergence check stops at the first bad batch), [`GPU_LOSS_READ_INTERVAL`] elsewhere.
fn loss_read_interval(device: &Device) -> usize {
    if device.is_cpu() {
        1
    } else {
        GPU_LOSS_READ_INTERVAL
    }
}

/// Ends a diverged run: records why in `history.*`, puts the last good weights back into
/// `varmap` when this run saved any, and returns the error to report.
fn stop(dir: &Path, varmap: &VarMap, history: &mut History, err: TrainError) -> TrainError {
    tracing::warn!("{err}");
    history.stopped = Some(err.to_string());
    if let Err(e) = history.write(dir) {
        tracing::warn!("could not record the divergence in the history: {e}");
    }
    if !history.epochs.is_empty()
        && let Err(e) = load_weights(varmap, &dir.join(LAST_WEIGHTS))
    {
        tracing::warn!("could not restore the last good weights: {e}");
    }
    err
}

/// Loads the run saved in `dir` into `varmap`, `opt` and `ema`, after checking it is the same
/// run.
fn resume<P: Prepare>(
    dir: &Path,
    cfg: &TrainConfig,
    varmap: &VarMap,
    opt: &mut Adam,
    ema: Option<&mut Ema>,
    train: &Loader<P>,
) -> Result<RunState> {
    let meta_path = dir.join(LAST_META);
    if !meta_path.exists() {
        return Err(TrainError::checkpoint(
            &meta_path,
            "nothing to resume: no finished epoch was saved here (start without resume)",
        ));
    }
    let meta = CheckpointMeta::read(&meta_path)?;
    let mismatches = cfg.resume_mismatches(&meta.config);
    if !mismatches.is_empty() {
        return Err(TrainError::checkpoint(
            &meta_path,
            format!(
                "cannot resume: the run was saved with other settings ({}); use them, or start a new run in another out_dir",
                mismatches.join(", ")
            ),
        ));
    }
    let (samples, batches) = (train.samples().len(), train.n_batches());
    if (meta.train_samples, meta.train_batches) != (samples, batches) {
        return Err(TrainError::checkpoint(
            &meta_path,
            format!(
                "cannot resume: the run trained on {} samples in {} batches, this loader has {samples} in {batches}",
                meta.train_samples, meta.train_batches
            ),
        ));
    }
    load_weights(varmap, &dir.join(meta.weights_name()))?;
    opt.load(&dir.join(meta.optim_name()))?;
    if opt.step_count() != meta.step {
        return Err(TrainError::checkpoint(
            &meta_path,
            format!(
                "cannot resume: the optimiser state is at step {} but last.json at step {}; the run was \
                 written by an older build and interrupted while saving — best.safetensors is \
                 intact, the run must start again",
                opt.step_count(),
                meta.step
            ),
        ));
    }
    if let Some(ema) = ema {
        let Some(file) = meta.ema_file.as_deref() else {
            return Err(TrainError::checkpoint(
                &meta_path,
                "cannot resume: the run saved no weight averages (ema_file)",
            ));
        };
        ema.load(&dir.join(file))?;
    }
    tracing::info!(epoch = meta.epoch, "resuming after the saved epoch");
    let saved = [
        Some(meta.weights_name().to_string()),
        Some(meta.optim_name().to_string()),
        meta.ema_file.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    Ok(RunState {
        next_epoch: meta.epoch + 1,
        history: meta.history,
        reference_loss: Some(meta.reference_loss),
        best_valid: meta.best_valid,
        saved,
    })
}

/// A scalar tensor's value as `f64`.
fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// The mean of `loss` over `loader`'s samples, in inference mode. Batches are weighted by
/// their size, so a short last batch counts as much per sample as the others.
pub fn evaluate_loss<M: Model + Sync + ?Sized, P: Prepare>(
    model: &M,
    loader: &Loader<P>,
    loss: &Loss,
) -> Result<f64> {
    Ok(infer(model, loader, Some(loss), false, false)?.0)
}

/// [`evaluate_loss`] and [`predict`] from one forward pass per batch.
pub fn validate<M: Model + Sync + ?Sized, P: Prepare>(
    model: &M,
    loader: &Loader<P>,
    loss: &Loss,
) -> Result<(f64, Vec<Prediction>)> {
    infer(model, loader, Some(loss), true, false)
}

/// The model's output for every sample of `loader` (inference mode), in index order.
pub fn predict<M: Model + Sync + ?Sized, P: Prepare>(
    model: &M,
    loader: &Loader<P>,
) -> Result<Vec<Prediction>> {
    Ok(infer(model, loader, None, true, false)?.1)
}

/// [`predict`] with the flip test's second pass: each prediction also carries the model's
/// output for the horizontally mirrored input ([`Prediction::flipped`]), for the caller to map
/// back and average (for faces trained with flips, the mean of the two halves the error of an
/// asymmetric bias).
pub fn predict_flip<M: Model + Sync + ?Sized, P: Prepare>(
    model: &M,
    loader: &Loader<P>,
) -> Result<Vec<Prediction>> {
    Ok(infer(model, loader, None, true, true)?.1)
}

/// One inference pass over `loader`: the mean loss (0 without one) and, when `collect`, every
/// sample's prediction (with the mirrored input's when `flip`).
fn infer<M: Model + Sync + ?Sized, P: Prepare>(
    model: &M,
    loader: &Loader<P>,
    loss: Option<&Loss>,
    collect: bool,
    flip: bool,
) -> Result<(f64, Vec<Prediction>)> {
    let rows_of = |out: &Tensor| -> Result<Vec<Vec<f32>>> {
        Ok(out
            .flatten_from(1)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?)
    };
    let (mut sum, mut count) = (0.0, 0usize);
    let mut preds = Vec::with_capacity(if collect { loader.samples().len() } else { 0 });
    for batch in loader.epoch(0) {
        let batch = batch?;
        let out = on_pool(|| model.forward_t(&batch.images, false))?;
        let rows = batch.indices.len();
        if let Some(loss) = loss {
            sum += scalar(&loss.compute(&out, &batch.targets)?)? * rows as f64;
        }
        count += rows;
        if !collect {
            continue;
        }
        let outputs = rows_of(&out)?;
        if outputs.len() != rows {
            return Err(TrainError::Config(format!(
                "the model returned {} rows for a batch of {rows}",
                outputs.len()
            )));
        }
        let mut flipped: Vec<Option<Vec<f32>>> = vec![None; rows];
        if flip {
            let w = batch.images.dim(3)?;
            let reversed: Vec<u32> = (0..w as u32).rev().collect();
            let reversed = Tensor::new(reversed.as_slice(), batch.images.device())?;
            let mirrored = batch.images.index_select(&reversed, 3)?;
            let mirrored = on_pool(|| model.forward_t(&mirrored, false))?;
            flipped = rows_of(&mirrored)?.into_iter().map(Some).collect();
        }
        let (_, _, h, w) = batch.images.dims4()?;
        let input = ImageSize::new(w as u32, h as u32);
        for (((&index, output), flipped), &to_source) in batch
            .indices
            .iter()
            .zip(outputs)
            .zip(flipped)
            .zip(&batch.to_source)
        {
            preds.push(Prediction {
                index,
                output,
                flipped,
                input,
                to_source,
            });
        }
    }
    if count == 0 {
        return Err(TrainError::Config(
            "cannot evaluate on a loader without samples".into(),
        ));
    }
    preds.sort_by_key(|p| p.index);
    Ok((sum / count as f64, preds))
}
