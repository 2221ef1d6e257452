//! fkd-metrics: how good a set of predicted landmarks is.
//!
//! Will own (issue "Parts 1 and 2"): validation MSE in normalised coordinates, mean and per-point
//! pixel error in the original image, NME by inter-ocular distance (from the layout in
//! `fkd-core`), failure rate at 0.08/0.10 and the AUC of the cumulative error curve.
