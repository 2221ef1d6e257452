//! An exponential moving average of the weights (EMA, Polyak averaging) for evaluation.
//!
//! After every optimiser step each float variable's average moves towards its value:
//! `avg ← d·avg + (1 − d)·θ`, with `d = min(decay, (1 + t) / (10 + t))` at step `t`, so the
//! first steps, whose weights are far from the end, are forgotten quickly (TensorFlow's
//! `ExponentialMovingAverage` with `num_updates`, timm's warm-up does the same). The average
//! smooths the step-to-step noise of the weights, most where the learning rate is still high;
//! with a schedule that ends near zero it matters most for the epochs before the end and for
//! picking the best epoch.
//!
//! Batch-norm running statistics are variables too and are averaged like the weights; with
//! precise BN ([`crate::FitOptions::bn_stats`]) they are recomputed for the averaged weights
//! before each validation anyway.
//!
//! The averages live in a [`VarMap`] of their own under the model's names, so they are saved
//! and loaded with [`crate::save_weights`] and [`crate::load_weights`] and a file of them loads
//! into the model like any checkpoint.

use crate::checkpoint::{load_weights, save_weights};
use crate::optim::{blend, sorted_vars};
use crate::{Result, TrainError};
use candle_core::Var;
use candle_nn::VarMap;
use std::path::Path;

/// The moving average of a model's variables (see the module doc).
pub struct Ema {
    decay: f64,
    /// (the model's variable, its average), sorted by name.
    slots: Vec<(Var, Var)>,
    /// The averages under the model's names.
    averages: VarMap,
}

impl Ema {
    /// Averages of every variable now in `varmap`, starting at their current values.
    pub fn new(varmap: &VarMap, decay: f64) -> Result<Self> {
        if !(decay > 0.0 && decay < 1.0) {
            return Err(TrainError::Config(format!(
                "the EMA decay must lie in (0, 1), not {decay}"
            )));
        }
        let named = sorted_vars(varmap);
        let averages = VarMap::new();
        let mut slots = Vec::with_capacity(named.len());
        {
            let mut data = averages
                .data()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (name, var) in named {
                // A buffer of its own: the update writes it in place.
                let average = Var::from_tensor(&var.as_tensor().copy()?)?;
                data.insert(name, average.clone());
                slots.push((var, average));
            }
        }
        Ok(Self {
            decay,
            slots,
            averages,
        })
    }

    /// The decay per step.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// The decay used after optimiser step `step` (counted from 1): `decay`, less at first.
    pub fn decay_at(&self, step: u64) -> f64 {
        let t = step as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Moves every average towards its variable, as after optimiser step `step`. Variables
    /// that are not floats (none of fkd's nets have any) are copied instead.
    pub fn update(&mut self, step: u64) -> Result<()> {
        let d = self.decay_at(step);
        for (var, average) in &self.slots {
            let value = var.as_tensor().detach();
            if value.dtype().is_float() {
                blend(average, &value, d)?;
            } else {
                average.set(&value)?;
            }
        }
        Ok(())
    }

    /// Exchanges the model's variables and their averages, so that the model computes with the
    /// averaged weights (for validation and saving); a second call swaps them back.
    pub fn swap(&mut self) -> Result<()> {
        for (var, average) in &self.slots {
            let value = var.as_tensor().copy()?;
            var.set(average.as_tensor())?;
            average.set(&value)?;
        }
        Ok(())
    }

    /// The averages under the model's names.
    pub fn averages(&self) -> &VarMap {
        &self.averages
    }

    /// Writes the averages as a weights file the model can load (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        save_weights(&self.averages, path)
    }

    /// Reads averages saved by [`Ema::save`] for the same model; on any difference nothing is
    /// changed and the error names the file.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        load_weights(&self.averages, path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::Init;

    fn one_var(value: [f32; 2]) -> (VarMap, Var) {
        let varmap = VarMap::new();
        varmap
            .get((2,), "w", Init::Const(0.0), DType::F32, &Device::Cpu)
            .unwrap();
        let var = varmap.data().lock().unwrap()["w"].clone();
        var.set(&Tensor::new(&value, &Device::Cpu).unwrap())
            .unwrap();
        (varmap, var)
    }

    fn values(var: &Var) -> Vec<f32> {
        var.as_tensor().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn decay_warms_up_then_holds() {
        let (varmap, _) = one_var([0.0, 0.0]);
        let ema = Ema::new(&varmap, 0.99).unwrap();
        assert!((ema.decay_at(1) - 2.0 / 11.0).abs() < 1e-12);
        assert!((ema.decay_at(90) - 91.0 / 100.0).abs() < 1e-12);
        assert_eq!(ema.decay_at(10_000), 0.99);
    }

    /// Weights that stop moving are their own average, exactly, at any decay (a kernel that
    /// rounded β and 1 − β separately would shrink or grow them step by step).
    #[test]
    fn constant_weights_are_a_fixed_point() {
        for decay in [0.9, 0.999, 0.99999] {
            let (varmap, var) = one_var([0.3, -1.7]);
            let mut ema = Ema::new(&varmap, decay).unwrap();
            for step in 1..=2000 {
                ema.update(step).unwrap();
            }
            let avg = ema.averages().data().lock().unwrap()["w"].clone();
            assert_eq!(values(&avg), values(&var), "decay {decay}");
        }
    }

    #[test]
    fn refuses_a_decay_outside_the_unit_interval() {
        let (varmap, _) = one_var([0.0, 0.0]);
        for bad in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(Ema::new(&varmap, bad).is_err(), "{bad}");
        }
    }

    /// Two updates by hand, then the swap puts the average in the model and back.
    #[test]
    fn averages_by_hand_and_swaps() {
        let (varmap, var) = one_var([1.0, -2.0]);
        let mut ema = Ema::new(&varmap, 0.5).unwrap();
        var.set(&Tensor::new(&[3.0f32, 2.0], &Device::Cpu).unwrap())
            .unwrap();
        // Step 1: d = min(0.5, 2/11) = 2/11: avg = 2/11·(1, −2) + 9/11·(3, 2).
        ema.update(1).unwrap();
        let d = 2.0f32 / 11.0;
        let want = [d + (1.0 - d) * 3.0, -2.0 * d + (1.0 - d) * 2.0];
        let avg = ema.averages().data().lock().unwrap()["w"].clone();
        for (a, b) in values(&avg).iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // Step 100: d = 0.5.
        var.set(&Tensor::new(&[5.0f32, 0.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(100).unwrap();
        let want = [0.5 * want[0] + 2.5, 0.5 * want[1]];
        for (a, b) in values(&avg).iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        ema.swap().unwrap();
        for (a, b) in values(&var).iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert_eq!(values(&avg), [5.0, 0.0]);
        ema.swap().unwrap();
        assert_eq!(values(&var), [5.0, 0.0]);
    }
}
