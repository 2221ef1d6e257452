//! Criterion micro-benchmarks: fkd-models' ops against the Candle ops they replace, forward and
//! backward together (what a training step pays), at shapes of fkd's nets with batch 8 (16 for
//! the transposed conv, which also has a forward-only case).
//! `cargo bench -p fkd-ops`; whole-network numbers against PyTorch are `cargo xtask bench`.

#![allow(missing_docs, clippy::unwrap_used)]

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{BatchNormConfig, VarBuilder, VarMap};
use criterion::{Criterion, criterion_group, criterion_main};
use fkd_ops as ops;

fn var(shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()).unwrap()
}

/// Forward, a weighted sum as the loss, backward.
fn step(y: Tensor) {
    let r = y.ones_like().unwrap();
    let grads = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
    std::hint::black_box(grads);
}

fn conv(c: &mut Criterion) {
    // FaceNet's conv2: 12 → 16 channels, 5×5, on 60×80 maps.
    let (x, w, b) = (var(&[8, 12, 60, 80]), var(&[16, 12, 5, 5]), var(&[16]));
    let mut g = c.benchmark_group("conv2d 8x12x60x80 k5 fwd+bwd");
    g.bench_function("fkd", |bench| {
        bench.iter(|| step(ops::conv2d(&x, &w, Some(&b), 1, 2).unwrap()))
    });
    g.bench_function("candle", |bench| {
        bench.iter(|| {
            let y = x.conv2d(&w, 2, 1, 1, 1).unwrap();
            step(y.broadcast_add(&b.reshape((1, 16, 1, 1)).unwrap()).unwrap())
        })
    });
    g.finish();
    // ResNet-18's layer2 entry: 64 → 128 channels, 3×3, stride 2, on 56×56 maps.
    let (x, w) = (var(&[8, 64, 56, 56]), var(&[128, 64, 3, 3]));
    let mut g = c.benchmark_group("conv2d 8x64x56x56 k3 s2 fwd+bwd");
    g.sample_size(10);
    g.bench_function("fkd", |bench| {
        bench.iter(|| step(ops::conv2d(&x, &w, None, 2, 1).unwrap()))
    });
    g.bench_function("candle", |bench| {
        bench.iter(|| step(x.conv2d(&w, 1, 2, 1, 1).unwrap()))
    });
    g.finish();
}

fn conv_transpose(c: &mut Criterion) {
    // ResNetDeconv's second and third upsampling at a 128-pixel input: 256 → 256 channels,
    // 4×4, stride 2, padding 1, 16×16 → 32×32 maps, batch 16.
    let (x, w) = (var(&[16, 256, 16, 16]), var(&[256, 256, 4, 4]));
    let mut g = c.benchmark_group("conv_transpose2d 16x256x16x16 k4 s2 fwd");
    g.sample_size(10);
    g.bench_function("fkd", |bench| {
        bench.iter(|| std::hint::black_box(ops::conv_transpose2d(&x, &w, 2, 1).unwrap()))
    });
    g.bench_function("candle", |bench| {
        bench.iter(|| std::hint::black_box(x.conv_transpose2d(&w, 1, 0, 2, 1).unwrap()))
    });
    g.finish();
    let mut g = c.benchmark_group("conv_transpose2d 16x256x16x16 k4 s2 fwd+bwd");
    g.sample_size(10);
    g.bench_function("fkd", |bench| {
        bench.iter(|| step(ops::conv_transpose2d(&x, &w, 2, 1).unwrap()))
    });
    g.bench_function("candle", |bench| {
        bench.iter(|| step(x.conv_transpose2d(&w, 1, 0, 2, 1).unwrap()))
    });
    g.finish();
}

fn pool(c: &mut Criterion) {
    let x = var(&[8, 12, 120, 160]);
    let mut g = c.benchmark_group("max_pool2d 8x12x120x160 2x2 fwd+bwd");
    g.bench_function("fkd", |bench| {
        bench.iter(|| step(ops::max_pool2d(&x, 2, 2, 0).unwrap()))
    });
    // Candle's own pool has a wrong backward; the composed pool is what fkd used before.
    g.bench_function("composed", |bench| {
        bench.iter(|| step(fkd_ops::composed::max_pool2d_composed(&x, 2, 2, 0).unwrap()))
    });
    g.finish();
}

fn batch_norm(c: &mut Criterion) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let bn = candle_nn::batch_norm(64, BatchNormConfig::default(), vb).unwrap();
    let x = var(&[8, 64, 56, 56]);
    let mut g = c.benchmark_group("batch_norm 8x64x56x56 train fwd+bwd");
    g.bench_function("fkd", |bench| {
        bench.iter(|| step(ops::batch_norm2d(&bn, &x, true, false).unwrap()))
    });
    g.bench_function("candle", |bench| {
        bench.iter(|| step(bn.forward_t(&x, true).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, conv, conv_transpose, pool, batch_norm);
criterion_main!(benches);
