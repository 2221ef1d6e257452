//! The nodes with their reference forward (the kernels' arithmetic on the CPU) against
//! fkd's CPU ops, forward and every gradient: what each node hands to which kernel, and how
//! each backward is composed, checked without a GPU.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::conv::plan::Geometry;
use crate::testutil::{random, weighted_grads};
use candle_core::backprop::GradStore;
use candle_core::{Device, Var};
use candle_nn::{BatchNormConfig, VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// While it lives, this thread's entry points build the nodes for f32 CPU tensors.
pub(crate) struct ReferenceNodes;

pub(crate) fn reference_nodes() -> ReferenceNodes {
    crate::cuda::launch::REFERENCE.set(true);
    ReferenceNodes
}

impl Drop for ReferenceNodes {
    fn drop(&mut self) {
        crate::cuda::launch::REFERENCE.set(false);
    }
}

fn f32_random(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    random(shape, rng).to_dtype(DType::F32).unwrap()
}

/// `max |a − b| / max(1, max |a|)`.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let m = |t: Tensor| t.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let scale = m(a.clone()).to_scalar::<f32>().unwrap().max(1.0);
    m((a - b).unwrap()).to_scalar::<f32>().unwrap() / scale
}

/// Runs `ours` (the nodes) and `theirs` (the CPU ops) on vars of `inputs`, and compares the
/// outputs and each input's gradient under the same random output weights.
fn same(
    what: &str,
    inputs: &[Tensor],
    rng: &mut ChaCha8Rng,
    ours: impl Fn(&[Var]) -> Tensor,
    theirs: impl Fn(&[Var]) -> Tensor,
) {
    let vars = || -> Vec<Var> {
        inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect()
    };
    let (va, vb) = (vars(), vars());
    let ya = {
        let _nodes = reference_nodes();
        ours(&va)
    };
    let yb = theirs(&vb);
    let d = rel(&yb, &ya);
    assert!(d < 2e-5, "{what}: outputs differ by {d}");
    let r = f32_random(ya.dims(), rng);
    let grads = |y: &Tensor, nodes: bool| -> GradStore {
        let _n = nodes.then(reference_nodes);
        weighted_grads(y, &r)
    };
    let (ga, gb) = (grads(&ya, true), grads(&yb, false));
    for (i, (a, b)) in va.iter().zip(&vb).enumerate() {
        let (a, b) = (ga.get(a).unwrap(), gb.get(b).unwrap());
        let d = rel(b, a);
        assert!(d < 2e-5, "{what}: gradients of input {i} differ by {d}");
    }
}

#[test]
fn reference_pool_and_relu_nodes_match_the_cpu_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (k, stride, pad) in [(2, 2, 0), (3, 2, 1), (3, 1, 1)] {
        let x = f32_random(&[2, 3, 9, 7], &mut rng);
        let win = Window::new(x.dims4().unwrap(), k, stride, pad).unwrap();
        same(
            &format!("pool k{k} s{stride} p{pad}"),
            &[x],
            &mut rng,
            |v| max_pool2d(&v[0], win).unwrap().unwrap(),
            |v| crate::pool::max_pool2d(&v[0], k, stride, pad).unwrap(),
        );
    }
    let x = f32_random(&[2, 3, 5, 4], &mut rng);
    same(
        "relu",
        &[x],
        &mut rng,
        |v| relu(&v[0]).unwrap().unwrap(),
        |v| v[0].relu().unwrap(),
    );
}

/// A norm layer with the seed's γ, β and running statistics.
fn layer(c: usize, seed: u64) -> (VarMap, BatchNorm) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let bn = candle_nn::batch_norm(c, BatchNormConfig::default(), vb).unwrap();
    let set = |t: &Tensor, v: Tensor| Var::from_tensor(t).unwrap().set(&v).unwrap();
    let (gamma, beta) = bn.weight_and_bias().unwrap();
    set(gamma, (f32_random(&[c], &mut rng) + 1.5).unwrap());
    set(beta, f32_random(&[c], &mut rng));
    set(bn.running_mean(), f32_random(&[c], &mut rng));
    set(
        bn.running_var(),
        (f32_random(&[c], &mut rng) + 1.5).unwrap(),
    );
    (vm, bn)
}

#[test]
fn reference_norm_nodes_match_the_cpu_norm() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let c = 5;
    for train in [true, false] {
        for (relu, residual) in [(false, false), (true, false), (true, true)] {
            // An imposed momentum (precise BN's) in one case, the layer's own in the others.
            let _momentum =
                (relu && !residual).then(|| crate::bn_layer::StatsMomentum::set(0.25).unwrap());
            let what = format!("norm train {train} relu {relu} residual {residual}");
            let x = (f32_random(&[3, c, 6, 7], &mut rng) * 3.0).unwrap();
            let r = f32_random(&[3, c, 6, 7], &mut rng);
            let (vm_a, bn_a) = layer(c, 3);
            let (vm_b, bn_b) = layer(c, 3);
            let inputs = if residual { vec![x, r] } else { vec![x] };
            same(
                &what,
                &inputs,
                &mut rng,
                |v| {
                    match residual {
                        true => batch_norm(&bn_a, &v[0], Some(&v[1]), train, true),
                        false => batch_norm(&bn_a, &v[0], None, train, relu),
                    }
                    .unwrap()
                    .unwrap()
                },
                |v| {
                    match residual {
                        true => crate::norm::batch_norm2d_add_relu(&bn_b, &v[0], &v[1], train),
                        false => crate::norm::batch_norm2d(&bn_b, &v[0], train, relu),
                    }
                    .unwrap()
                },
            );
            let (a, b) = (vm_a.data().lock().unwrap(), vm_b.data().lock().unwrap());
            for name in ["running_mean", "running_var"] {
                let d = rel(b[name].as_tensor(), a[name].as_tensor());
                assert!(d < 1e-6, "{what}: {name} differs by {d}");
            }
        }
    }
}

/// The norm's parameter gradients (γ, β) through the nodes equal the CPU norm's.
#[test]
fn reference_norm_nodes_give_the_cpu_parameter_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let c = 4;
    let x = f32_random(&[2, c, 5, 5], &mut rng);
    let r = f32_random(&[2, c, 5, 5], &mut rng);
    let run = |nodes: bool| -> Vec<Tensor> {
        let (vm, bn) = layer(c, 4);
        let _n = nodes.then(reference_nodes);
        let y = if nodes {
            batch_norm(&bn, &x, None, true, true).unwrap().unwrap()
        } else {
            crate::norm::batch_norm2d(&bn, &x, true, true).unwrap()
        };
        let g = weighted_grads(&y, &r);
        let data = vm.data().lock().unwrap();
        ["weight", "bias"]
            .iter()
            .map(|n| g.get(data[*n].as_tensor()).unwrap().clone())
            .collect()
    };
    for (a, b) in run(true).iter().zip(&run(false)) {
        let d = rel(b, a);
        assert!(d < 2e-5, "parameter gradients differ by {d}");
    }
}

#[test]
fn reference_cudnn_nodes_match_the_cpu_convolutions() {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for (n, c, h, w, o, k, stride, pad) in [
        (2, 3, 9, 8, 4, 3, 1, 1),
        (2, 4, 11, 10, 6, 3, 2, 1),
        (1, 2, 12, 12, 3, 7, 2, 3),
    ] {
        let x = f32_random(&[n, c, h, w], &mut rng);
        let wt = f32_random(&[o, c, k, k], &mut rng);
        let (g, oo) = Geometry::new(&x, &wt, stride, pad).unwrap();
        same(
            &format!("conv {c}→{o} {h}×{w} k{k} s{stride} p{pad}"),
            &[x, wt],
            &mut rng,
            |v| cudnn::conv(&v[0], &v[1], g, oo, false).unwrap().unwrap(),
            |v| crate::conv::conv2d(&v[0], &v[1], None, stride, pad).unwrap(),
        );
    }
    for (n, ci, co, h, k, stride, pad) in [(2, 4, 3, 5, 4, 2, 1), (1, 3, 5, 6, 3, 1, 1)] {
        let x = f32_random(&[n, ci, h, h + 2], &mut rng);
        let wt = f32_random(&[ci, co, k, k], &mut rng);
        let (g, oo) = crate::convt::geometry(&x, &wt, stride, pad).unwrap();
        same(
            &format!("convT {ci}→{co} k{k} s{stride} p{pad}"),
            &[x, wt],
            &mut rng,
            |v| cudnn::conv(&v[0], &v[1], g, oo, true).unwrap().unwrap(),
            |v| crate::convt::conv_transpose2d(&v[0], &v[1], stride, pad).unwrap(),
        );
    }
}
