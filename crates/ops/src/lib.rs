//! fkd-ops: fast training ops for Candle. 2-D convolution, max-pooling and batch normalisation
//! whose forward and backward passes are fkd's own kernels, in place of Candle 0.11's (whose
//! conv input gradient is a single-threaded `conv_transpose2d` loop and whose max-pool backward
//! is wrong), each one autograd node; on CUDA, fkd's kernels and cuDNN.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//!
//! // A 3×3 conv + ReLU + 2×2 max-pool as one node, equal to Candle's three ops.
//! let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &Device::Cpu)?)?;
//! let w = Tensor::randn(0f32, 0.3, (4, 3, 3, 3), &Device::Cpu)?;
//! let ours = fkd_ops::conv2d_relu_pool(&x, &w, None, 1, 1)?;
//! let theirs = x.conv2d(&w, 1, 1, 1, 1)?.relu()?.max_pool2d(2)?;
//! let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(diff < 1e-5);
//! // Its gradient flows like any Candle op's.
//! let grads = ours.sum_all()?.backward()?;
//! assert_eq!(grads.get(&x).expect("a gradient").dims(), [2, 3, 8, 8]);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! - [`conv2d`], [`conv2d_relu`], [`conv2d_relu_pool`]: `(N, C, H, W) ⊛ (O, C, kh, kw) [+ bias]`,
//!   any stride and zero padding, optionally followed by a ReLU and a 2×2 max-pool in the same
//!   node: blocked im2col + single-threaded `gemm` products per thread (module `conv`), or
//!   Winograd F(2×2, 3×3) for stride-1 3×3 convs with enough channels. The backward rebuilds
//!   each block's columns, so nothing the size of a column matrix outlives a call.
//! - [`conv_transpose2d`], [`conv_transpose2d_layer`]: `(N, Cin, H, W) ⊛ᵀ (Cin, Cout, kh, kw)`,
//!   PyTorch's transposed conv without output padding or dilation, as the input gradient of
//!   the conv with the same kernel (module `convt`): its forward is that backward's blocked
//!   col2im, its backward a conv forward (∂x) and a conv kernel gradient (∂w).
//! - [`max_pool2d`]: any square kernel, stride and −∞ padding, floor mode, as
//!   `torch.nn.MaxPool2d`; the gradient goes to the first maximum of each window, as PyTorch's.
//! - [`batch_norm2d`], [`batch_norm2d_add_relu`], [`conv2d_batch_norm`]: a candle-nn
//!   `BatchNorm` in training or inference mode, optionally with the ReLU (and a residual) that
//!   follows it, as one node with an analytic backward; folded into the conv at inference, and
//!   in training run with the conv before it as one node (module `conv_bn`), so the norm's
//!   input gradient never passes through Candle's gradient store.
//!
//! - [`profile`]: an opt-in timer of every fused op call (`cargo xtask bench-child --phases`).
//!
//! On the CPU (f32 and f64) every op is fkd's kernel; on CUDA (f32) the batch norm, the ReLU,
//! max-pooling and (with the `cudnn` feature) the convolutions are fkd's CUDA nodes (`cuda`);
//! elsewhere (Metal, other dtypes) each op falls back to Candle's own ops and the composed
//! [`crate::composed::max_pool2d_composed`], so the models run on every device. Every op is checked against Candle's reference op and finite differences
//! in the tests of its module. `gemm` and [`simd`] (which runs fkd's loops compiled for
//! AVX2 or AVX-512 where the CPU has them) hold the workspace's only `unsafe` code.

mod bn_layer;
pub mod composed;
mod conv;
mod conv_bn;
mod convt;
pub mod cuda;
mod depthwise;
mod gemm;
mod norm;
mod pool;
pub mod precision;
pub mod profile;
mod relu;
mod relu_mask;
pub mod simd;
mod storage;
#[cfg(test)]
mod testutil;
mod window;

pub use bn_layer::StatsMomentum;
pub use conv::{
    conv2d, conv2d_layer, conv2d_relu, conv2d_relu_layer, conv2d_relu_pool, conv2d_relu_pool_layer,
};
pub use conv_bn::conv2d_batch_norm;
pub use convt::{conv_transpose2d, conv_transpose2d_layer};
pub use depthwise::depthwise_conv3x3;
pub use norm::{batch_norm2d, batch_norm2d_add_relu};
pub use pool::max_pool2d;
pub use window::window_out_len;

use candle_core::Result;

/// The most memory that tensors held at once on `device` since the process started, in bytes,
/// for a CUDA device (the high-water mark of its default memory pool, which Candle allocates
/// from); `None` for other devices and in builds without `cuda`.
pub fn gpu_peak_bytes(device: &candle_core::Device) -> Result<Option<u64>> {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(dev) = device {
        return Ok(Some(cuda::peak_bytes(dev)?));
    }
    let _ = device;
    Ok(None)
}

/// For a CUDA device: its name and compute capability, and whether it has TF32 tensor cores
/// (compute capability 8.0 and later); `None` for other devices and in builds without `cuda`.
pub fn gpu_description(device: &candle_core::Device) -> Result<Option<(String, bool)>> {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(dev) = device {
        return Ok(Some(cuda::describe(dev)?));
    }
    let _ = device;
    Ok(None)
}
