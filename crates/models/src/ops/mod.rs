//! Fast training ops for the CPU: 2-D convolution, max-pooling and batch normalisation whose
//! forward and backward passes are fkd's own kernels, in place of Candle 0.11's (whose conv
//! input gradient is a single-threaded `conv_transpose2d` loop and whose max-pool backward is
//! wrong), each one autograd node.
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
//! [`crate::pool::max_pool2d_composed`], so the models run on every device. Every op is checked against Candle's reference op and finite differences
//! in the tests of its module. `gemm` holds the workspace's only `unsafe` code.

/// Runs a kernel over the contiguous data of one or two CPU storages of the same float dtype
/// (f32 or f64) and wraps its `Vec` back into a storage; other dtypes are an error naming the
/// op. The kernel is written once as a closure and pasted into each arm, so each copy is
/// inferred at its own element type.
macro_rules! float_kernel {
    ($name:expr, $kernel:expr, $s1:expr, $l1:expr) => {{
        use candle_core::backend::BackendStorage as _;
        match $s1.dtype() {
            candle_core::DType::F32 => candle_core::CpuStorage::F32($kernel(
                $crate::ops::contiguous::<f32>($name, $s1, $l1)?,
            )),
            candle_core::DType::F64 => candle_core::CpuStorage::F64($kernel(
                $crate::ops::contiguous::<f64>($name, $s1, $l1)?,
            )),
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", $name),
        }
    }};
    ($name:expr, $kernel:expr, $s1:expr, $l1:expr, $s2:expr, $l2:expr) => {{
        use candle_core::backend::BackendStorage as _;
        match ($s1.dtype(), $s2.dtype()) {
            (candle_core::DType::F32, candle_core::DType::F32) => {
                candle_core::CpuStorage::F32($kernel(
                    $crate::ops::contiguous::<f32>($name, $s1, $l1)?,
                    $crate::ops::contiguous::<f32>($name, $s2, $l2)?,
                ))
            }
            (candle_core::DType::F64, candle_core::DType::F64) => {
                candle_core::CpuStorage::F64($kernel(
                    $crate::ops::contiguous::<f64>($name, $s1, $l1)?,
                    $crate::ops::contiguous::<f64>($name, $s2, $l2)?,
                ))
            }
            (a, b) => candle_core::bail!("{}: unsupported dtypes {a:?}, {b:?}", $name),
        }
    }};
}

mod conv;
mod conv_bn;
mod convt;
pub mod cuda;
mod gemm;
mod norm;
mod pool;
pub mod profile;
#[cfg(test)]
mod testutil;

pub use conv::{
    conv2d, conv2d_layer, conv2d_relu, conv2d_relu_layer, conv2d_relu_pool, conv2d_relu_pool_layer,
};
pub use convt::{conv_transpose2d, conv_transpose2d_layer};
pub use norm::{StatsMomentum, batch_norm2d, batch_norm2d_add_relu, conv2d_batch_norm};
pub use pool::max_pool2d;

use candle_core::{CpuStorage, Layout, Result, WithDType};
use rayon::prelude::*;

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

/// `max(x, 0)`: on CUDA (f32) one node with a one-kernel backward, elsewhere Candle's ReLU.
fn relu(x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
    if let Some(y) = cuda::relu(x)? {
        return Ok(y);
    }
    x.relu()
}

/// The contiguous data that `layout` views in `storage`, or an error naming `op`.
fn contiguous<'a, T: WithDType>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Below this many elements [`zeros`] zeroes on the calling thread.
const PARALLEL_ZEROS: usize = 1 << 17;

/// A vector of `n` zeros. Large ones are zeroed by the rayon pool (`par_extend` writes each
/// thread's part in place): mimalloc keeps freed memory for reuse (purging off), so a large
/// buffer comes back dirty and its zeroing is a memset of the whole tensor, which on one
/// thread left the other core idle. A/B on the 2-core Xeon, 3–4 rounds: ResNet-18 at 224
/// pixels, batch 32, +4%; Part 4's deconv net +4%; FaceNet (small maps, under the bound)
/// unchanged, as when an earlier parallel fill of every buffer was measured on it.
fn zeros<T: WithDType>(n: usize) -> Vec<T> {
    if n < PARALLEL_ZEROS {
        return vec![T::zero(); n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(T::zero(), n));
    v
}

/// The range `lo..hi` of output positions `o` whose input position `o·stride + offset − padding`
/// lies in `0..len`.
fn valid_range(
    len: usize,
    out: usize,
    stride: usize,
    offset: usize,
    padding: usize,
) -> (usize, usize) {
    let lo = if padding > offset {
        (padding - offset).div_ceil(stride)
    } else {
        0
    };
    let hi = if len + padding > offset {
        ((len - 1 + padding - offset) / stride + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{PARALLEL_ZEROS, valid_range, zeros};

    /// Both ways of zeroing give `n` zeros, also on reused (dirty) memory.
    #[test]
    fn zeros_are_zeros_on_either_side_of_the_parallel_bound() {
        for n in [
            0,
            1,
            PARALLEL_ZEROS - 1,
            PARALLEL_ZEROS,
            3 * PARALLEL_ZEROS + 7,
        ] {
            drop(vec![f32::NAN; n]);
            let z: Vec<f32> = zeros(n);
            assert_eq!(z.len(), n);
            assert!(z.iter().all(|&v| v.to_bits() == 0), "n = {n}");
        }
    }

    #[test]
    fn valid_range_matches_brute_force() {
        for len in 1..9 {
            for stride in 1..4 {
                for padding in 0..4 {
                    for offset in 0..7 {
                        let out = 12;
                        let want: Vec<usize> = (0..out)
                            .filter(|&o| {
                                let i = (o * stride + offset) as isize - padding as isize;
                                i >= 0 && (i as usize) < len
                            })
                            .collect();
                        let (lo, hi) = valid_range(len, out, stride, offset, padding);
                        assert_eq!((lo..hi).collect::<Vec<_>>(), want);
                    }
                }
            }
        }
    }
}
