//! The CUDA nodes' forward on the CPU: each kernel of `kernels.cu` ported line for line to a
//! loop over the same indices, with the same f32 and f64 arithmetic (sequential sums instead of
//! block and atomic sums). It makes every CUDA node a working CPU op, so the tests run the
//! nodes' plumbing (what each node passes to which kernel, the parameter and gradient layouts,
//! the backward's composition) on any machine, against fkd's CPU ops; on a GPU `tests/cuda.rs`
//! then checks the kernels themselves.

use crate::window::Window;

/// NCHW index of channel `ch`'s i-th element (as `at` in kernels.cu).
fn at(ch: usize, i: usize, c: usize, hw: usize) -> usize {
    let (b, p) = (i / hw, i % hw);
    (b * c + ch) * hw + p
}

/// `(scale, shift)` of channel `ch` from the (4, c) params γ, β, μ, σ².
fn scale_shift(params: &[f32], c: usize, ch: usize, eps: f32) -> (f32, f32) {
    let inv_std = 1.0 / (params[3 * c + ch] + eps).sqrt();
    let scale = params[ch] * inv_std;
    (scale, params[c + ch] - params[2 * c + ch] * scale)
}

/// bn_stats_partial + bn_stats_final: (2, c) means, then biased variances.
pub(super) fn bn_stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let m = n * hw;
    let mut out = vec![0.0f32; 2 * c];
    for ch in 0..c {
        let k = f64::from(x[at(ch, 0, c, hw)]);
        let (mut s, mut sq) = (0.0f64, 0.0f64);
        for i in 0..m {
            let d = f64::from(x[at(ch, i, c, hw)]) - k;
            s += d;
            sq += d * d;
        }
        let mean_d = s / m as f64;
        let var = sq / m as f64 - mean_d * mean_d;
        out[ch] = (k + mean_d) as f32;
        out[c + ch] = var.max(0.0) as f32;
    }
    out
}

/// bn_running: `r ← keep·r + take·stats[row]`, in place.
pub(super) fn bn_running(r: &mut [f32], stats: &[f32], row: usize, keep: f32, take: f32) {
    let c = r.len();
    for (ch, v) in r.iter_mut().enumerate() {
        *v = keep * *v + take * stats[row * c + ch];
    }
}

/// bn_apply: `relu?(x·scale + shift [+ residual])`.
pub(super) fn bn_apply(
    x: &[f32],
    params: &[f32],
    residual: Option<&[f32]>,
    (c, hw): (usize, usize),
    eps: f32,
    relu: bool,
) -> Vec<f32> {
    (0..x.len())
        .map(|i| {
            let (scale, shift) = scale_shift(params, c, (i / hw) % c, eps);
            let mut v = x[i] * scale + shift;
            if let Some(r) = residual {
                v += r[i];
            }
            if !relu || v > 0.0 { v } else { 0.0 }
        })
        .collect()
}

fn masked(relu: bool, scale: f32, shift: f32, v: f32, g: f32) -> f32 {
    if !relu || v * scale + shift > 0.0 {
        g
    } else {
        0.0
    }
}

/// bn_grad_partial + bn_grad_final: (2, c) ∂γ = σ⁻¹·Σg·(x − μ), then ∂β = Σg.
pub(super) fn bn_grad_sums(
    x: &[f32],
    grad: &[f32],
    params: &[f32],
    (n, c, hw): (usize, usize, usize),
    eps: f32,
    relu: bool,
) -> Vec<f32> {
    let mut out = vec![0.0f32; 2 * c];
    for ch in 0..c {
        let (scale, shift) = scale_shift(params, c, ch, eps);
        let mean = params[2 * c + ch];
        let (mut sgx, mut sg) = (0.0f64, 0.0f64);
        for i in 0..n * hw {
            let j = at(ch, i, c, hw);
            let g = masked(relu, scale, shift, x[j], grad[j]);
            sgx += f64::from(g) * f64::from(x[j] - mean);
            sg += f64::from(g);
        }
        let inv_std = 1.0 / (f64::from(params[3 * c + ch]) + f64::from(eps)).sqrt();
        out[ch] = (sgx * inv_std) as f32;
        out[c + ch] = sg as f32;
    }
    out
}

/// bn_grad_input: `∂x = k·g + b·x + cc` per channel.
#[allow(clippy::too_many_arguments)]
pub(super) fn bn_grad_input(
    x: &[f32],
    grad: &[f32],
    params: &[f32],
    sums: &[f32],
    (n, c, hw): (usize, usize, usize),
    eps: f32,
    relu: bool,
    batch_stats: bool,
) -> Vec<f32> {
    let m = (n * hw) as f64;
    (0..x.len())
        .map(|i| {
            let ch = (i / hw) % c;
            let (scale, shift) = scale_shift(params, c, ch, eps);
            let inv_std = 1.0 / (params[3 * c + ch] + eps).sqrt();
            let k = params[ch] * inv_std;
            let (mut b, mut cc) = (0.0f32, 0.0f32);
            if batch_stats {
                b = (-f64::from(k) / m * f64::from(inv_std) * f64::from(sums[ch])) as f32;
                cc = (-f64::from(k) / m * f64::from(sums[c + ch])) as f32 - b * params[2 * c + ch];
            }
            k * masked(relu, scale, shift, x[i], grad[i]) + b * x[i] + cc
        })
        .collect()
}

/// relu_fwd.
pub(super) fn relu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect()
}

/// pool_argmax: the input index of output `i`'s window maximum (first maximum; every NaN wins).
fn pool_argmax(x: &[f32], i: usize, p: &Window) -> Option<usize> {
    let (ox, oy, plane) = (i % p.wo, (i / p.wo) % p.ho, i / (p.wo * p.ho));
    let mut best: Option<(usize, f32)> = None;
    for ky in 0..p.k {
        let Some(iy) = (oy * p.stride + ky)
            .checked_sub(p.padding)
            .filter(|&v| v < p.h)
        else {
            continue;
        };
        for kx in 0..p.k {
            let Some(ix) = (ox * p.stride + kx)
                .checked_sub(p.padding)
                .filter(|&v| v < p.w)
            else {
                continue;
            };
            let j = plane * p.h * p.w + iy * p.w + ix;
            let v = x[j];
            if best.is_none_or(|(_, bv)| v > bv || v.is_nan()) {
                best = Some((j, v));
            }
        }
    }
    best.map(|b| b.0)
}

/// max_pool_fwd.
pub(super) fn max_pool(x: &[f32], p: &Window) -> Vec<f32> {
    (0..p.out_len())
        .map(|i| pool_argmax(x, i, p).map_or(f32::NEG_INFINITY, |j| x[j]))
        .collect()
}

/// max_pool_bwd: each output's gradient added at its window's argmax.
pub(super) fn max_pool_grad(x: &[f32], grad: &[f32], p: &Window) -> Vec<f32> {
    let mut dx = vec![0.0f32; x.len()];
    for (i, &g) in grad.iter().enumerate() {
        if let Some(j) = pool_argmax(x, i, p) {
            dx[j] += g;
        }
    }
    dx
}
