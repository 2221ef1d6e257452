//! What every CUDA node of the crate shares: which tensors the nodes take ([`takes`],
//! [`applies`]), the kernels' PTX and launch configurations, the `launch!` macro, device views,
//! and the `relu_mask` kernel (the CUDA forward of [`crate::relu_mask::ReluMask`]).

#![cfg_attr(feature = "cuda", allow(unsafe_code))]

#[cfg(feature = "cuda")]
use candle_core::Shape;
#[cfg(feature = "cuda")]
use candle_core::backend::BackendStorage;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{DType, Device, Tensor};

#[cfg(feature = "cuda")]
/// The kernels' PTX, from `build.rs`.
pub(crate) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fkd_kernels.ptx"));
#[cfg(feature = "cuda")]
/// The module name under which the PTX is loaded once per device.
pub(crate) const MODULE: &str = "fkd_kernels";
#[cfg(feature = "cuda")]
/// Threads per block (`THREADS` in kernels.cu).
pub(crate) const THREADS: u32 = 256;
#[cfg(feature = "cuda")]
/// At most this many blocks per grid-stride launch: enough to fill any current GPU many times.
pub(crate) const MAX_BLOCKS: u32 = 8192;

#[cfg(test)]
thread_local! {
    /// Set by the CUDA nodes' tests: the entry points also take f32 CPU tensors, so the nodes
    /// run with their reference forward.
    pub(crate) static REFERENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the entry points build these nodes for `x`: when [`applies`] (and, in this module's
/// tests, for f32 CPU tensors too).
pub(crate) fn takes(x: &Tensor) -> bool {
    #[cfg(test)]
    if REFERENCE.get() && x.device().is_cpu() && x.dtype() == DType::F32 {
        return true;
    }
    applies(x)
}

/// True when `x` is an f32 tensor on a CUDA device of fewer than 2³² elements (the kernels'
/// index arithmetic is 32-bit): what these kernels cover.
pub(crate) fn applies(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cuda(_))
        && x.dtype() == DType::F32
        && u32::try_from(x.elem_count()).is_ok()
}

#[cfg(feature = "cuda")]
/// The contiguous f32 data that `layout` views in `s`, or an error naming `op`.
pub(crate) fn view<'a>(op: &str, s: &'a CudaStorage, layout: &Layout) -> Result<CudaView<'a, f32>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous")
    };
    Ok(s.as_cuda_slice::<f32>()?.slice(start..end))
}

#[cfg(feature = "cuda")]
/// The f32 data of `layout` in `s`, mutable, or an error naming `op`.
pub(crate) fn view_mut<'a>(
    op: &str,
    s: &'a mut CudaStorage,
    layout: &Layout,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaViewMut<'a, f32>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: state must be contiguous")
    };
    Ok(s.as_cuda_slice_mut::<f32>()?.slice_mut(start..end))
}

#[cfg(feature = "cuda")]
/// A launch of `len` elements over grid-stride loops.
pub(crate) fn elementwise(len: usize) -> LaunchConfig {
    let blocks = len.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS as usize) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[cfg(feature = "cuda")]
/// A launch of one row of blocks per channel, `splits` blocks per channel, so that every
/// channel's `m` values are summed by enough blocks to fill the GPU.
pub(crate) fn per_channel(c: usize, m: usize) -> LaunchConfig {
    let per_block = THREADS as usize * 16;
    let splits = m.div_ceil(per_block).clamp(1, (4096 / c.max(1)).max(1)) as u32;
    LaunchConfig {
        grid_dim: (c as u32, splits, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[cfg(feature = "cuda")]
/// One launch of kernel `$name` of kernels.cu on `$dev` with the arguments listed (each a
/// reference to a device view or slice, or to an `i32`, `usize` or `f32` value).
macro_rules! launch {
    ($dev:expr, $name:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let func = $dev.get_or_load_custom_func(
            $name,
            $crate::cuda::launch::MODULE,
            $crate::cuda::launch::PTX,
        )?;
        let mut builder = func.builder();
        $( builder.arg($arg); )+
        // SAFETY: every call passes the kernel's exact parameter list (types and order as in
        // kernels.cu), with device buffers of at least the lengths the kernel indexes.
        unsafe { builder.launch($cfg) }.w()?;
    }};
}

#[cfg(feature = "cuda")]
pub(crate) fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("{what} {v} exceeds i32")))
}

#[cfg(feature = "cuda")]
pub(crate) fn wrap(slice: CudaSlice<f32>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, dev.clone())
}
#[cfg(feature = "cuda")]
pub(crate) use launch;

/// The `relu_mask` kernel, `grad · (y > 0)`: [`crate::relu_mask::ReluMask`]'s CUDA forward.
#[cfg(feature = "cuda")]
pub(crate) fn relu_mask(
    name: &str,
    (s1, l1): (&CudaStorage, &Layout),
    (s2, l2): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device();
    let (g, y) = (view(name, s1, l1)?, view(name, s2, l2)?);
    let len = l1.shape().elem_count();
    // SAFETY: relu_mask writes every element.
    let out = unsafe { dev.alloc::<f32>(len) }?;
    launch!(dev, "relu_mask", elementwise(len), &g, &y, &out, &len);
    Ok((wrap(out, dev), Shape::from(l1.dims())))
}
