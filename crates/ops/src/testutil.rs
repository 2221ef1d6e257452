//! Helpers shared by the ops' tests: seeded random f64 tensors, the largest difference
//! between two tensors, and a rayon pool of a given size.
#![allow(clippy::unwrap_used)]

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, VarBuilder, VarMap};
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

/// A tensor's values as f64 bit patterns (exact for f32 and f64), to compare results bit for
/// bit.
pub fn bits(t: &Tensor) -> Vec<u64> {
    let v: Vec<f64> = t
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    v.into_iter().map(f64::to_bits).collect()
}

/// The gradients of `sum(y · r)`: a loss whose gradient with respect to `y` is `r`, so every
/// output position is weighted differently.
pub fn weighted_grads(y: &Tensor, r: &Tensor) -> GradStore {
    (y * r).unwrap().sum_all().unwrap().backward().unwrap()
}

/// Two layers with the same random γ, β and running statistics, in separate var maps.
pub(crate) fn twin_layers(c: usize, rng: &mut ChaCha8Rng) -> [(VarMap, BatchNorm); 2] {
    let gamma = random_in(&[c], rng, 0.5, 1.5);
    let beta = random_in(&[c], rng, -0.5, 0.5);
    let rm = random_in(&[c], rng, -0.2, 0.2);
    let rv = random_in(&[c], rng, 0.5, 2.0);
    std::array::from_fn(|_| {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let cfg = BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine: true,
            momentum: 0.1,
        };
        let bn = candle_nn::batch_norm(c, cfg, vb).unwrap();
        let data = vm.data().lock().unwrap();
        data["weight"].set(&gamma).unwrap();
        data["bias"].set(&beta).unwrap();
        data["running_mean"].set(&rm).unwrap();
        data["running_var"].set(&rv).unwrap();
        drop(data);
        (vm, bn)
    })
}

/// ∂γ and ∂β of two twin layers' var maps agree.
pub(crate) fn assert_affine_grads_match(
    vm_a: &VarMap,
    vm_b: &VarMap,
    ga: &candle_core::backprop::GradStore,
    gb: &candle_core::backprop::GradStore,
    ctx: &str,
) {
    for name in ["weight", "bias"] {
        let va = vm_a.data().lock().unwrap()[name].clone();
        let vb = vm_b.data().lock().unwrap()[name].clone();
        let d = max_diff(ga.get(&va).unwrap(), gb.get(&vb).unwrap());
        assert!(d < 1e-9, "{ctx}: ∂{name} off by {d}");
    }
}
