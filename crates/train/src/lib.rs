//! fkd-train: one training loop for every part.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Init, VarMap};
//! use fkd_train::{Adam, AdamConfig, Loss};
//!
//! // Fit y = 2x with one weight from 0: twenty AdamW steps on the MSE bring it close.
//! let vars = VarMap::new();
//! let w = vars.get((1, 1), "w", Init::Const(0.0), DType::F32, &Device::Cpu)?;
//! let x = Tensor::new(&[[0.5f32], [1.0], [-1.0]], &Device::Cpu)?;
//! let y = (&x * 2.0)?;
//! let cfg = AdamConfig { lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.0 };
//! let mut adam = Adam::new(&vars, cfg)?;
//! let loss = |w: &Tensor| Loss::Mse.compute(&x.matmul(w)?, &y);
//! let before = loss(&w)?.to_scalar::<f32>()?;
//! for _ in 0..20 {
//!     adam.backward_step(&loss(&w)?)?;
//! }
//! assert!(loss(&w)?.to_scalar::<f32>()? < before / 4.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`config`]: [`TrainConfig`] (serde), with the [`Loss`] (MSE, L1, Wing) and learning-rate
//!   [`Schedule`] (constant, step, cosine, warm-up + cosine).
//! - [`loss`]: the losses on `(prediction, target)` tensors.
//! - [`ema`]: [`Ema`], a moving average of the weights that a run can validate and save
//!   instead of the weights ([`TrainConfig::ema`]).
//! - [`optim`]: [`Adam`] with decoupled weight decay (AdamW), whose state can be saved and
//!   loaded so a resumed run continues exactly.
//! - [`fit()`]: the loop — seeded epochs, per-epoch train and validation loss, a [`History`]
//!   written as JSON and CSV, atomic `last`/`best` checkpoints ([`checkpoint`]), resume, and a
//!   clear stop ([`TrainError::Diverged`]) when the loss turns NaN or explodes. Progress is
//!   reported to an [`Observer`], so a binary can draw a progress bar; logging uses `tracing`.
//!   [`fit_selecting`] keeps the best epoch by a part's own validation metric (a
//!   [`Selector`] over the epoch's [`Prediction`]s), not by the loss.
//!   [`fit_with`] adds "precise BN" ([`FitOptions::bn_stats`], [`recompute_bn_stats`]):
//!   batch-norm statistics recomputed over fixed batches before each validation.
//! - [`evaluate_loss`], [`validate`], [`predict`] and [`predict_flip`] (the flip test's second
//!   pass): inference over a loader; a [`Prediction`] carries the map back to the source photo.
//! - [`merge_flipped`]: the flip test's mean of a face's points and its mirror image's.
//!
//! Any candle `Module` or `ModuleT` is a [`Model`].

pub mod bn;
pub mod checkpoint;
pub mod config;
pub mod ema;
pub mod error;
pub mod fit;
pub mod flip;
pub mod history;
pub mod loss;
pub mod optim;

pub use bn::{Batches, recompute_bn_stats};
pub use checkpoint::{CheckpointMeta, load_weights, save_weights};
pub use config::{AdaptiveWing, FOREGROUND_THRESHOLD, Loss, Schedule, TrainConfig};
pub use ema::Ema;
pub use error::{Result, TrainError};
pub use fit::{
    FitOptions, GPU_LOSS_READ_INTERVAL, Model, Observer, Prediction, Selector, evaluate_loss, fit,
    fit_selecting, fit_with, on_pool, predict, predict_flip, validate,
};
pub use flip::merge_flipped;
pub use history::{EpochRecord, History};
pub use optim::{Adam, AdamConfig};
