//! fkd-metrics: how good a set of predicted landmarks is.
//!
//! ```
//! use fkd_core::{Layout, PixelPoint};
//! use fkd_metrics::nme;
//!
//! // Truth and a prediction 2 px to the right of every point; the outer eye corners (36, 45)
//! // are 100 px apart, so NME (mean error / inter-ocular distance) is 2 %.
//! let truth: Vec<PixelPoint> = (0..68)
//!     .map(|i| match i {
//!         36 => PixelPoint::new(100.0, 100.0),
//!         45 => PixelPoint::new(200.0, 100.0),
//!         _ => PixelPoint::new(150.0, 150.0),
//!     })
//!     .collect();
//! let pred: Vec<PixelPoint> = truth.iter().map(|p| PixelPoint::new(p.x + 2.0, p.y)).collect();
//! assert!((nme(&pred, &truth, &Layout::IBUG68)? - 0.02).abs() < 1e-6);
//! # Ok::<(), fkd_metrics::MetricsError>(())
//! ```
//!
//! Validation MSE in normalised coordinates, mean and per-point pixel error in the original
//! image, per-coordinate MAE, NME by inter-ocular distance (from the layout in `fkd-core`),
//! failure rate at 0.08/0.10 and the AUC of the cumulative error curve. Everything works on plain
//! slices of [`fkd_core`] points (no tensors), so any crate can score predictions.
//!
//! - [`points`]: coordinate-level errors ([`mse_normalised`], [`point_errors`], [`mae_px`], set
//!   means such as [`per_point_mean`]).
//! - [`nme`](mod@nme): NME per face and the failure rate, CED and AUC of a set of NMEs; its
//!   module docs state the exact definitions.
//! - [`evaluator`]: [`Evaluator`] accumulates faces and produces a serialisable [`Summary`];
//!   with [`Normaliser::None`] it also serves single-point tasks, where NME is undefined.
//!
//! Metrics return [`MetricsError`] instead of NaN on mismatched, empty or non-finite input.

pub mod error;
pub mod evaluator;
pub mod nme;
pub mod points;

pub use error::{MetricsError, Result};
pub use evaluator::{Evaluator, Normaliser, Summary};
pub use nme::{
    THRESHOLD_008, THRESHOLD_010, auc, ced, ced_grid, failure_rate, interocular_normaliser, nme,
    nme_per_face,
};
pub use points::{
    mae_px, mean_pixel_error, mean_point_error, median, mse_normalised, per_point_mean,
    point_errors,
};
