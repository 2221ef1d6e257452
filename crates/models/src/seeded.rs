//! Seeded parameter initialisation: a `VarBuilder` backend that creates a `VarMap`'s variables
//! from a ChaCha RNG instead of Candle's CPU RNG, which cannot be seeded
//! (`Device::Cpu.set_seed` is an error in Candle 0.11). With it, `--seed S` gives the same
//! initial weights on every run and machine, so "median of 3 seeds" means something.
//!
//! Each variable draws from its own stream, derived from the seed and the variable's name, so
//! adding a layer does not change the initial weights of the others.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A `VarBuilder` over `varmap` whose new variables are drawn from a generator seeded by `seed`.
/// Variables already in the map are returned as they are (their shape is checked).
pub fn seeded_var_builder<'a>(
    varmap: &'a VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'a> {
    VarBuilder::from_backend(Box::new(Seeded { varmap, seed }), dtype, device.clone())
}

struct Seeded<'a> {
    varmap: &'a VarMap,
    seed: u64,
}

/// FNV-1a over the name, so each variable's stream depends only on (seed, name).
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Draws `shape.elem_count()` values as `init` asks.
fn sample(init: Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = shape.elem_count();
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
            .collect()
    };
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
                let u1 = 1.0 - rng.random::<f64>();
                let u2 = rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (mean + std * z) as f32
            })
            .collect()
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn => FanInOut::FanIn.for_shape(shape),
                FanInOut::FanOut => FanInOut::FanOut.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

impl SimpleBackend for Seeded<'_> {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|e| candle_core::Error::Msg(format!("var map lock poisoned: {e}")))?;
        if let Some(var) = data.get(name) {
            let t = var.as_tensor();
            if t.shape() != &s {
                candle_core::bail!("variable {name} has shape {:?}, asked for {s:?}", t.dims());
            }
            return t.to_dtype(dtype);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ name_hash(name));
        let values = sample(h, &s, &mut rng);
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|e| candle_core::Error::Msg(format!("var map lock poisoned: {e}")))?;
        match data.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype),
            None => candle_core::bail!("no variable named {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .is_ok_and(|d| d.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{ConvRegressor, ConvRegressorConfig};

    fn weights(seed: u64) -> Vec<(String, Vec<f32>)> {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
        ConvRegressor::new(&ConvRegressorConfig::nose(), vb).unwrap();
        let mut all: Vec<(String, Vec<f32>)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let a = weights(1);
        assert_eq!(a, weights(1));
        let b = weights(2);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0 && x.1 != y.1));
    }

    #[test]
    fn draws_follow_the_init() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let shape = Shape::from((64, 4, 3, 3));
        // Kaiming uniform, fan-in 36, ReLU gain √2: bound √3·√2/6 = 0.408.
        let init = candle_nn::init::DEFAULT_KAIMING_UNIFORM;
        let v = sample(init, &shape, &mut rng);
        let bound = (3.0f32).sqrt() * 2f32.sqrt() / 6.0;
        assert!(v.iter().all(|x| x.abs() <= bound + 1e-6));
        assert!(v.iter().any(|x| *x > 0.9 * bound) && v.iter().any(|x| *x < -0.9 * bound));
        let n = sample(
            Init::Randn {
                mean: 1.0,
                stdev: 2.0,
            },
            &Shape::from(20_000),
            &mut rng,
        );
        let mean = n.iter().sum::<f32>() / n.len() as f32;
        let std = (n.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n.len() as f32).sqrt();
        assert!(
            (mean - 1.0).abs() < 0.05 && (std - 2.0).abs() < 0.05,
            "{mean} {std}"
        );
        assert_eq!(
            sample(Init::Const(0.5), &Shape::from(3), &mut rng),
            vec![0.5; 3]
        );
    }
}
