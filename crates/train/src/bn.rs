//! "Precise BN": batch-norm running statistics recomputed from the training faces with the
//! weights as they are, instead of the exponential average that training leaves behind.
//!
//! Training updates each layer's running mean and variance with momentum 0.1 from augmented
//! batches, so they describe the last ~10 batches (160 faces at batch 16), drawn under weights
//! that have since moved, and of rotated, rescaled, re-lit faces. The validation score of one
//! set of weights then jumps with the luck of those batches (on 300-W, NME 4.2–8.3 % from one
//! epoch to the next at lr 1e-5). Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021),
//! and fvcore's `update_bn_stats` recompute them instead: forward passes in training mode over
//! a fixed set of batches, each layer's statistics the mean of the batches' (momentum `1/k` for
//! the `k`-th batch, see [`fkd_models::ops::StatsMomentum`]). The weights are not touched.

use crate::{Model, Result, TrainError};
use fkd_data::batch::{Batch, Loader};
use fkd_data::prepare::Prepare;
use fkd_models::ops::StatsMomentum;

/// A fixed series of batches, as a trait object: what [`recompute_bn_stats`] and
/// [`crate::FitOptions::bn_stats`] read. Every [`Loader`] is one (its epoch-0 order).
pub trait Batches {
    /// How many batches [`Batches::batches`] yields.
    fn n_batches(&self) -> usize;
    /// The batches, in a fixed order.
    fn batches(&self) -> Box<dyn Iterator<Item = fkd_data::Result<Batch>> + '_>;
}

impl<P: Prepare> Batches for Loader<P> {
    fn n_batches(&self) -> usize {
        Loader::n_batches(self)
    }

    fn batches(&self) -> Box<dyn Iterator<Item = fkd_data::Result<Batch>> + '_> {
        Box::new(self.epoch(0))
    }
}

/// Replaces the running statistics of every batch norm in `model` by their mean over the
/// forward passes (training mode) of `batches`; returns how many batches were used. The
/// statistics of a layer see the previous layers normalised by batch statistics, as in
/// training. A model without batch norm is unchanged (the passes are wasted, not wrong).
pub fn recompute_bn_stats<M: Model + ?Sized>(model: &M, batches: &dyn Batches) -> Result<usize> {
    let mut used = 0usize;
    for batch in batches.batches() {
        let batch = batch?;
        let _momentum = StatsMomentum::set(1.0 / (used + 1) as f64)?;
        model.forward_t(&batch.images, true)?;
        used += 1;
    }
    if used == 0 {
        return Err(TrainError::Config(
            "recomputing batch-norm statistics needs at least one batch".into(),
        ));
    }
    Ok(used)
}
