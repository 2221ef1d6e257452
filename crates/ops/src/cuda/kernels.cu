// fkd's CUDA kernels for the training ops that Candle 0.11 has no fused kernel for: batch
// normalisation (statistics, normalise [+ residual] [+ ReLU], the two backward passes), the
// ReLU's backward mask and max-pooling (forward and backward). Compiled to PTX at build time
// by crates/ops/build.rs (nvcc --ptx) and loaded once per device by cuda/launch.rs.
//
// Layouts: activations are contiguous NCHW f32; `params` of a norm is a contiguous (4, c)
// f32 array: rows γ, β, μ, σ² (biased batch variance in training, running variance in
// inference). Per-channel sums are accumulated in f64 (atomicAdd on doubles, sm_60+), as the
// CPU kernels do, so the two backends agree to f32 rounding of the elementwise terms.

#include <stdint.h>

// Threads per block of every kernel here (the launcher in mod.rs uses the same number).
#define THREADS 256

// Block-wide sum of one double per thread into thread 0's return value.
__device__ __forceinline__ double block_sum(double v) {
    __shared__ double shared[THREADS / 32];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = threadIdx.x < THREADS / 32 ? shared[threadIdx.x] : 0.0;
    if (warp == 0)
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    __syncthreads();
    return v;
}

// Channel `ch`'s i-th element (0 ≤ i < n·hw) in NCHW data. Index arithmetic is 32-bit (GPUs
// divide in software, and 32-bit division is a third of 64-bit's cost): the launchers in mod.rs
// refuse tensors of 2³² elements or more.
__device__ __forceinline__ size_t at(int ch, size_t i, int c, int hw) {
    const unsigned b = (unsigned)i / (unsigned)hw, p = (unsigned)i - b * (unsigned)hw;
    return ((size_t)b * c + ch) * hw + p;
}

// The channel of element i of NCHW data.
__device__ __forceinline__ int channel_of(size_t i, int c, int hw) {
    return (int)(((unsigned)i / (unsigned)hw) % (unsigned)c);
}

// Partial sums for the batch statistics: grid (c, splits). acc[ch] += Σ(x − K), acc[c + ch]
// += Σ(x − K)², with the shift K = the channel's first element (one pass, no cancellation).
extern "C" __global__ void bn_stats_partial(const float* x, double* acc, int n, int c, int hw) {
    const int ch = blockIdx.x;
    const size_t m = (size_t)n * hw;
    const double k = x[at(ch, 0, c, hw)];
    double s = 0.0, sq = 0.0;
    for (size_t i = (size_t)blockIdx.y * THREADS + threadIdx.x; i < m;
         i += (size_t)gridDim.y * THREADS) {
        const double d = (double)x[at(ch, i, c, hw)] - k;
        s += d;
        sq += d * d;
    }
    s = block_sum(s);
    sq = block_sum(sq);
    if (threadIdx.x == 0) {
        atomicAdd(&acc[ch], s);
        atomicAdd(&acc[c + ch], sq);
    }
}

// out (2, c): means, then biased variances, from bn_stats_partial's sums.
extern "C" __global__ void bn_stats_final(const float* x, const double* acc, float* out, int n,
                                          int c, int hw) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    const double m = (double)n * hw;
    const double k = x[at(ch, 0, c, hw)];
    const double mean_d = acc[ch] / m;
    double var = acc[c + ch] / m - mean_d * mean_d;
    out[ch] = (float)(k + mean_d);
    out[c + ch] = (float)(var > 0.0 ? var : 0.0);
}

__device__ __forceinline__ void scale_shift(const float* params, int c, int ch, float eps,
                                            float* scale, float* shift) {
    const float inv_std = rsqrtf(params[3 * c + ch] + eps);
    *scale = params[ch] * inv_std;
    *shift = params[c + ch] - params[2 * c + ch] * *scale;
}

// y = x·scale + shift [+ residual when `has_residual`], then max(·, 0) when `relu`.
extern "C" __global__ void bn_apply(const float* x, const float* params, const float* residual,
                                    int has_residual, float* y, size_t len, int c, int hw, float eps,
                                    int relu) {
    for (size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x; i < len;
         i += (size_t)gridDim.x * THREADS) {
        const int ch = channel_of(i, c, hw);
        float scale, shift;
        scale_shift(params, c, ch, eps, &scale, &shift);
        float v = x[i] * scale + shift;
        if (has_residual) v += residual[i];
        y[i] = relu && !(v > 0.0f) ? 0.0f : v;
    }
}

// The upstream gradient as the affine map saw it: zero where the ReLU (if the node has one
// after the map, and no residual between) cut the output.
__device__ __forceinline__ float masked(int relu, float scale, float shift, float v, float g) {
    return !relu || v * scale + shift > 0.0f ? g : 0.0f;
}

// Partial sums of the backward: grid (c, splits). acc[ch] += Σ g·(x − μ), acc[c + ch] += Σ g.
extern "C" __global__ void bn_grad_partial(const float* x, const float* grad, const float* params,
                                           double* acc, int n, int c, int hw, float eps,
                                           int relu) {
    const int ch = blockIdx.x;
    const size_t m = (size_t)n * hw;
    float scale, shift;
    scale_shift(params, c, ch, eps, &scale, &shift);
    const float mean = params[2 * c + ch];
    double sgx = 0.0, sg = 0.0;
    for (size_t i = (size_t)blockIdx.y * THREADS + threadIdx.x; i < m;
         i += (size_t)gridDim.y * THREADS) {
        const size_t j = at(ch, i, c, hw);
        const float v = x[j];
        const float g = masked(relu, scale, shift, v, grad[j]);
        sgx += (double)g * (double)(v - mean);
        sg += g;
    }
    sgx = block_sum(sgx);
    sg = block_sum(sg);
    if (threadIdx.x == 0) {
        atomicAdd(&acc[ch], sgx);
        atomicAdd(&acc[c + ch], sg);
    }
}

// out (2, c): ∂γ = σ⁻¹·Σg·(x − μ), ∂β = Σg.
extern "C" __global__ void bn_grad_final(const double* acc, const float* params, float* out,
                                         int c, float eps) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    const double inv_std = 1.0 / sqrt((double)params[3 * c + ch] + (double)eps);
    out[ch] = (float)(acc[ch] * inv_std);
    out[c + ch] = (float)acc[c + ch];
}

// ∂x = k·g + b·x + cc per channel (the module docs' formula with x̂ expanded); `sums` is
// bn_grad_final's (2, c) output. `batch_stats`: μ and σ came from this batch (training).
extern "C" __global__ void bn_grad_input(const float* x, const float* grad, const float* params,
                                         const float* sums, float* dx, size_t len, int n, int c,
                                         int hw, float eps, int relu, int batch_stats) {
    const double m = (double)n * hw;
    for (size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x; i < len;
         i += (size_t)gridDim.x * THREADS) {
        const int ch = channel_of(i, c, hw);
        float scale, shift;
        scale_shift(params, c, ch, eps, &scale, &shift);
        const float inv_std = rsqrtf(params[3 * c + ch] + eps);
        const float k = params[ch] * inv_std;
        float b = 0.0f, cc = 0.0f;
        if (batch_stats) {
            b = (float)(-(double)k / m * inv_std * sums[ch]);
            cc = (float)(-(double)k / m * sums[c + ch]) - b * params[2 * c + ch];
        }
        const float v = x[i];
        dx[i] = k * masked(relu, scale, shift, v, grad[i]) + b * v + cc;
    }
}

// grad·(y > 0): a ReLU's backward from its output.
extern "C" __global__ void relu_mask(const float* grad, const float* y, float* out, size_t len) {
    for (size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x; i < len;
         i += (size_t)gridDim.x * THREADS)
        out[i] = y[i] > 0.0f ? grad[i] : 0.0f;
}

// max(x, 0).
extern "C" __global__ void relu_fwd(const float* x, float* y, size_t len) {
    for (size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x; i < len;
         i += (size_t)gridDim.x * THREADS)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// The input index of the first maximum of output `i`'s window (−∞ padding, as PyTorch), or −1
// when the window holds only padding (it cannot: padding ≤ kernel/2).
__device__ __forceinline__ long long pool_argmax(const float* x, size_t i, int h, int w, int ho,
                                                 int wo, int k, int stride, int pad) {
    const unsigned row = (unsigned)i / (unsigned)wo;
    const int ox = (int)((unsigned)i - row * (unsigned)wo), oy = (int)(row % (unsigned)ho);
    const size_t plane = row / (unsigned)ho;
    const float* src = x + plane * h * w;
    long long best = -1;
    float bv = 0.0f;
    for (int ky = 0; ky < k; ++ky) {
        const int iy = oy * stride + ky - pad;
        if (iy < 0 || iy >= h) continue;
        for (int kx = 0; kx < k; ++kx) {
            const int ix = ox * stride + kx - pad;
            if (ix < 0 || ix >= w) continue;
            const float v = src[iy * w + ix];
            // The first maximum wins, and every NaN wins (so the last NaN is the argmax), as
            // in PyTorch's kernels and fkd's CPU pool.
            if (best < 0 || v > bv || isnan(v)) {
                best = (long long)(plane * h * w) + iy * w + ix;
                bv = v;
            }
        }
    }
    return best;
}

extern "C" __global__ void max_pool_fwd(const float* x, float* y, size_t len, int h, int w, int ho,
                                        int wo, int k, int stride, int pad) {
    for (size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x; i < len;
         i += (size_t)gridDim.x * THREADS) {
        const long long j = pool_argmax(x, i, h, w, ho, wo, k, stride, pad);
        y[i] = j >= 0 ? x[j] : -INFINITY;
    }
}

// dx (zeroed by the caller) += grad at each window's first maximum; windows overlap when
// stride < kernel, hence the atomic add.
extern "C" __global__ void max_pool_bwd(const float* x, const float* grad, float* dx, size_t len,
                                        int h, int w, int ho, int wo, int k, int stride, int pad) {
    for (size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x; i < len;
         i += (size_t)gridDim.x * THREADS) {
        const long long j = pool_argmax(x, i, h, w, ho, wo, k, stride, pad);
        if (j >= 0) atomicAdd(&dx[j], grad[i]);
    }
}

// Adam's first (square = 0) or second (square = 1) moment in place: m ← β·m + (1 − β)·g[²].
extern "C" __global__ void adam_moment(float* m, const float* g, size_t len, float beta,
                                       int square) {
    const float c = 1.0f - beta;
    for (size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x; i < len;
         i += (size_t)gridDim.x * THREADS) {
        const float gi = g[i];
        m[i] = m[i] * beta + (square ? gi * gi : gi) * c;
    }
}

// Adam's weight update in place: θ ← θ·decay − step·m/(√v + ε̂) (decay 1: no weight decay).
extern "C" __global__ void adam_weights(float* theta, const float* m, const float* v, size_t len,
                                        float decay, float step, float eps) {
    for (size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x; i < len;
         i += (size_t)gridDim.x * THREADS) {
        const float update = m[i] / (sqrtf(v[i]) + eps) * step;
        theta[i] = decay == 1.0f ? theta[i] - update : theta[i] * decay - update;
    }
}

// A running statistic in place: r ← keep·r + take·stats[row·c + ch], one thread per channel
// (row 0: the batch means; row 1: the biased variances, `take` carrying the unbiasing factor).
extern "C" __global__ void bn_running(float* r, const float* stats, int c, int row, float keep,
                                      float take) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    r[ch] = keep * r[ch] + take * stats[row * c + ch];
}
