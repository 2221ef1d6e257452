//! Helpers shared by the ops' tests: seeded random f64 tensors, the largest difference
//! between two tensors, and a rayon pool of a given size.
#![allow(clippy::unwrap_used)]

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// An f64 tensor of `shape` with entries uniform in `lo..hi`.
pub fn random_in(shape: &[usize], rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> Tensor {
    let n = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Runs `f` on a rayon pool of `threads` threads.
pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// An f64 tensor of `shape` with entries uniform in `-1..1`.
pub fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    random_in(shape, rng, -1.0, 1.0)
}

/// The largest absolute difference between two f64 tensors of the same shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// The gradients of `sum(y · r)`: a loss whose gradient with respect to `y` is `r`, so every
/// output position is weighted differently.
pub fn weighted_grads(y: &Tensor, r: &Tensor) -> GradStore {
    (y * r).unwrap().sum_all().unwrap().backward().unwrap()
}
