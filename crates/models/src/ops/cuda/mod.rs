//! The CUDA paths of fkd's fused ops (feature `cuda`): batch normalisation (with the ReLU and
//! residual of a ResNet block), ReLU and max-pooling as autograd nodes whose forward and
//! backward are fkd's kernels (`kernels.cu`, compiled to PTX by `build.rs`), and with the
//! `cudnn` feature the convolution and transposed convolution as nodes whose forward and both
//! gradients are cuDNN calls (module `cudnn`). Public: the in-place Adam kernels that
//! fkd-train's optimiser runs on CUDA ([`adam_moment`], [`adam_weights`]).
//!
//! Every function here returns `Ok(None)` for what it does not cover (a dtype other than f32,
//! a tensor not on a CUDA device), and the caller then runs Candle's ops, as on Metal. Nothing
//! here reads a tensor back to the host: statistics, sums and running averages stay on the
//! device, so a training step queues its kernels without waiting for the GPU.
//!
//! The nodes are compiled in every build: on the CPU their forward is `reference`'s port of each
//! kernel, so the tests run the nodes' plumbing (what each passes to which kernel, the layouts
//! of parameters and gradients, the composition of each backward) on any machine against fkd's
//! CPU ops; kernel launches, the PTX and device memory need the `cuda` feature.
//!
//! Invariants: every kernel reads contiguous f32 NCHW data (the entry points make inputs
//! contiguous); the per-channel sums of the norm are f64 on the device, as the CPU kernels'
//! are; a node's backward recomputes what it needs from its inputs and output (the pool's
//! argmax, the norm's ReLU mask), so nodes keep no device buffers between passes.

#![cfg_attr(feature = "cuda", allow(unsafe_code))]

mod reference;

#[cfg(feature = "cuda")]
use candle_core::backend::BackendStorage;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, InplaceOp2, Layout, Result, Shape,
    Tensor,
};
use candle_nn::BatchNorm;

use super::contiguous;
use super::norm::ReluMask;
use super::pool::Window;

#[cfg(feature = "cuda")]
/// The kernels' PTX, from `build.rs`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fkd_kernels.ptx"));
#[cfg(feature = "cuda")]
/// The module name under which the PTX is loaded once per device.
const MODULE: &str = "fkd_kernels";
#[cfg(feature = "cuda")]
/// Threads per block (`THREADS` in kernels.cu).
const THREADS: u32 = 256;
#[cfg(feature = "cuda")]
/// At most this many blocks per grid-stride launch: enough to fill any current GPU many times.
const MAX_BLOCKS: u32 = 8192;

#[cfg(test)]
thread_local! {
    /// Set by [`tests::reference_nodes`]: the entry points also take f32 CPU tensors, so the
    /// nodes run with their reference forward.
    static REFERENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the entry points build these nodes for `x`: when [`applies`] (and, in this module's
/// tests, for f32 CPU tensors too).
fn takes(x: &Tensor) -> bool {
    #[cfg(test)]
    if REFERENCE.get() && x.device().is_cpu() && x.dtype() == DType::F32 {
        return true;
    }
    applies(x)
}

/// True when `x` is an f32 tensor on a CUDA device of fewer than 2³² elements (the kernels'
/// index arithmetic is 32-bit): what these kernels cover.
pub(super) fn applies(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cuda(_))
        && x.dtype() == DType::F32
        && u32::try_from(x.elem_count()).is_ok()
}

#[cfg(feature = "cuda")]
/// The contiguous f32 data that `layout` views in `s`, or an error naming `op`.
fn view<'a>(op: &str, s: &'a CudaStorage, layout: &Layout) -> Result<CudaView<'a, f32>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous")
    };
    Ok(s.as_cuda_slice::<f32>()?.slice(start..end))
}

#[cfg(feature = "cuda")]
/// The f32 data of `layout` in `s`, mutable, or an error naming `op`.
fn view_mut<'a>(
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
fn elementwise(len: usize) -> LaunchConfig {
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
fn per_channel(c: usize, m: usize) -> LaunchConfig {
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
        let func = $dev.get_or_load_custom_func($name, MODULE, PTX)?;
        let mut builder = func.builder();
        $( builder.arg($arg); )+
        // SAFETY: every call passes the kernel's exact parameter list (types and order as in
        // kernels.cu), with device buffers of at least the lengths the kernel indexes.
        unsafe { builder.launch($cfg) }.w()?;
    }};
}

#[cfg(feature = "cuda")]
fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("{what} {v} exceeds i32")))
}

#[cfg(feature = "cuda")]
fn wrap(slice: CudaSlice<f32>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, dev.clone())
}

pub(super) mod cudnn;

// ---------------------------------------------------------------------------------------------
// Batch normalisation

/// The norm's shape: `n` images of `c` channels of `hw` pixels, `eps`.
#[derive(Clone, Copy, Debug)]
struct Norm {
    n: usize,
    c: usize,
    hw: usize,
    eps: f32,
}

impl Norm {
    #[cfg(feature = "cuda")]
    fn len(&self) -> usize {
        self.n * self.c * self.hw
    }

    /// (n, c, hw) as the kernels' `int`s.
    #[cfg(feature = "cuda")]
    fn ints(&self) -> Result<(i32, i32, i32)> {
        Ok((
            i32_of(self.n, "batch")?,
            i32_of(self.c, "channels")?,
            i32_of(self.hw, "plane")?,
        ))
    }
}

/// (n, c, h, w) → (2, c): per-channel means, then biased variances.
struct Stats(Norm);

impl CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "fkd-batch-norm-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Norm { n, c, hw, .. } = self.0;
        let x = contiguous::<f32>(self.name(), s, l)?;
        let out = reference::bn_stats(x, n, c, hw);
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let Norm { n, c, hw, .. } = self.0;
        let dev = s.device();
        let x = view(self.name(), s, l)?;
        let acc = dev.alloc_zeros::<f64>(2 * c)?;
        // SAFETY: written in full by bn_stats_final below.
        let out = unsafe { dev.alloc::<f32>(2 * c) }?;
        let (ni, ci, hwi) = self.0.ints()?;
        launch!(
            dev,
            "bn_stats_partial",
            per_channel(c, n * hw),
            &x,
            &acc,
            &ni,
            &ci,
            &hwi
        );
        launch!(
            dev,
            "bn_stats_final",
            elementwise(c),
            &x,
            &acc,
            &out,
            &ni,
            &ci,
            &hwi
        );
        Ok((wrap(out, dev), Shape::from((2, c))))
    }
}

/// One running statistic of `c` channels updated in place from row `row` of the batch
/// statistics (2, c): `r ← keep·r + take·stats[row]`.
struct Running {
    row: usize,
    keep: f32,
    take: f32,
}

impl InplaceOp2 for Running {
    fn name(&self) -> &'static str {
        "fkd-batch-norm-running"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let stats = contiguous::<f32>(self.name(), s2, l2)?;
        let (CpuStorage::F32(r), Some((start, end))) = (s1, l1.contiguous_offsets()) else {
            candle_core::bail!(
                "{}: the running statistic must be contiguous f32",
                self.name()
            );
        };
        reference::bn_running(&mut r[start..end], stats, self.row, self.keep, self.take);
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        let name = self.name();
        let dev = s1.device().clone();
        let stats = view(name, s2, l2)?;
        let mut r = view_mut(name, s1, l1)?;
        let c = r.len();
        if stats.len() != 2 * c {
            candle_core::bail!("{name}: {} batch statistics for {c} channels", stats.len());
        }
        let (ci, row) = (i32_of(c, "channels")?, self.row as i32);
        launch!(
            dev,
            "bn_running",
            elementwise(c),
            &mut r,
            &stats,
            &ci,
            &row,
            &self.keep,
            &self.take
        );
        Ok(())
    }
}

/// PyTorch's running-statistics update (as `norm::update_running`) from batch statistics
/// `stats` (2, c) that stay on their device: two in-place kernels, no read back.
fn update_running(bn: &BatchNorm, stats: &Tensor, m: usize) -> Result<()> {
    let momentum = super::norm::running_momentum(bn);
    let unbiased = m as f64 / (m as f64 - 1.0);
    for (row, stat, factor) in [(0, bn.running_mean(), 1.0), (1, bn.running_var(), unbiased)] {
        let op = Running {
            row,
            keep: (1.0 - momentum) as f32,
            take: (momentum * factor) as f32,
        };
        stat.inplace_op2(stats, &op)?;
    }
    Ok(())
}

/// The node (x, params[, residual]) → `relu?(x·scale + shift [+ residual])`, where params is
/// (4, c): γ, β, μ, σ².
struct NormNode {
    norm: Norm,
    relu: bool,
    /// μ and σ are this batch's (training): ∂x has the two extra terms.
    batch_stats: bool,
}

impl NormNode {
    /// The `bn_apply` kernel on CUDA storages.
    #[cfg(feature = "cuda")]
    fn apply_cuda(
        &self,
        x: (&CudaStorage, &Layout),
        params: (&CudaStorage, &Layout),
        residual: Option<(&CudaStorage, &Layout)>,
    ) -> Result<(CudaStorage, Shape)> {
        let name = "fkd-batch-norm";
        let eps = self.norm.eps;
        let dev = x.0.device();
        let len = self.norm.len();
        let xv = view(name, x.0, x.1)?;
        let pv = view(name, params.0, params.1)?;
        let rv = residual.map(|(s, l)| view(name, s, l)).transpose()?;
        // SAFETY: bn_apply writes every element.
        let y = unsafe { dev.alloc::<f32>(len) }?;
        let (_, ci, hwi) = self.norm.ints()?;
        let relu = self.relu as i32;
        // Without a residual the kernel gets x as a placeholder pointer it never reads.
        let (r, has_r) = match &rv {
            Some(r) => (r, 1i32),
            None => (&xv, 0i32),
        };
        launch!(
            dev,
            "bn_apply",
            elementwise(len),
            &xv,
            &pv,
            r,
            &has_r,
            &y,
            &len,
            &ci,
            &hwi,
            &eps,
            &relu
        );
        Ok((wrap(y, dev), Shape::from(x.1.dims())))
    }

    /// [`reference::bn_apply`] on CPU storages.
    fn apply_cpu(
        &self,
        x: (&CpuStorage, &Layout),
        params: (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let name = "fkd-batch-norm";
        let Norm { c, hw, eps, .. } = self.norm;
        let xv = contiguous::<f32>(name, x.0, x.1)?;
        let pv = contiguous::<f32>(name, params.0, params.1)?;
        let rv = residual
            .map(|(s, l)| contiguous::<f32>(name, s, l))
            .transpose()?;
        let y = reference::bn_apply(xv, pv, rv, (c, hw), eps, self.relu);
        Ok((CpuStorage::F32(y), Shape::from(x.1.dims())))
    }

    /// ∂x (when x needs one) and ∂params (rows ∂γ, ∂β, then zeros) from the gradient `grad` of
    /// the affine map's output, already masked by the ReLU unless `relu`.
    fn grads(
        &self,
        relu: bool,
        x: &Tensor,
        params: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let needs_x = x.track_op();
        let (x, params) = (x.detach(), params.detach());
        let op = GradSums {
            norm: self.norm,
            relu,
        };
        let sums = x.apply_op3_no_bwd(grad, &params, &op)?;
        let dx = if needs_x {
            let aux = Tensor::cat(&[&params, &sums], 0)?;
            let op = GradInput {
                norm: self.norm,
                relu,
                batch_stats: self.batch_stats,
            };
            Some(x.apply_op3_no_bwd(grad, &aux, &op)?)
        } else {
            None
        };
        let dparams = Tensor::cat(&[&sums, &sums.zeros_like()?], 0)?;
        Ok((dx, dparams))
    }
}

impl CustomOp2 for NormNode {
    fn name(&self) -> &'static str {
        "fkd-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.apply_cpu((s1, l1), (s2, l2), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.apply_cuda((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.detach().contiguous()?;
        let (dx, dparams) = self.grads(self.relu, x, params, &grad)?;
        Ok((dx, Some(dparams)))
    }
}

impl CustomOp3 for NormNode {
    fn name(&self) -> &'static str {
        "fkd-batch-norm-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.apply_cpu((s1, l1), (s2, l2), Some((s3, l3)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.apply_cuda((s1, l1), (s2, l2), Some((s3, l3)))
    }

    /// The residual's gradient is the output gradient masked by the ReLU (`y > 0`); the affine
    /// map sees that same masked gradient.
    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _residual: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.detach().contiguous()?;
        let masked = if self.relu {
            grad.apply_op2_no_bwd(&y.detach(), &ReluMask)?
        } else {
            grad
        };
        let (dx, dparams) = self.grads(false, x, params, &masked)?;
        Ok((dx, Some(dparams), Some(masked)))
    }
}

/// (x, grad, params) → (2, c): ∂γ = σ⁻¹·Σg·(x − μ), ∂β = Σg, with g masked by the ReLU when
/// `relu` (recomputed from x).
struct GradSums {
    norm: Norm,
    relu: bool,
}

impl CustomOp3 for GradSums {
    fn name(&self) -> &'static str {
        "fkd-batch-norm-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Norm { n, c, hw, eps } = self.norm;
        let name = self.name();
        let (x, g, p) = (
            contiguous::<f32>(name, s1, l1)?,
            contiguous::<f32>(name, s2, l2)?,
            contiguous::<f32>(name, s3, l3)?,
        );
        let out = reference::bn_grad_sums(x, g, p, (n, c, hw), eps, self.relu);
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let Norm { n, c, hw, eps } = self.norm;
        let name = self.name();
        let dev = s1.device();
        let (x, g, p) = (
            view(name, s1, l1)?,
            view(name, s2, l2)?,
            view(name, s3, l3)?,
        );
        let acc = dev.alloc_zeros::<f64>(2 * c)?;
        // SAFETY: written in full by bn_grad_final.
        let out = unsafe { dev.alloc::<f32>(2 * c) }?;
        let (ni, ci, hwi) = self.norm.ints()?;
        let relu = self.relu as i32;
        launch!(
            dev,
            "bn_grad_partial",
            per_channel(c, n * hw),
            &x,
            &g,
            &p,
            &acc,
            &ni,
            &ci,
            &hwi,
            &eps,
            &relu
        );
        launch!(
            dev,
            "bn_grad_final",
            elementwise(c),
            &acc,
            &p,
            &out,
            &ci,
            &eps
        );
        Ok((wrap(out, dev), Shape::from((2, c))))
    }
}

/// (x, grad, aux) → ∂x, where aux (6, c) is the params (4, c) and [`GradSums`]' output.
struct GradInput {
    norm: Norm,
    relu: bool,
    batch_stats: bool,
}

impl CustomOp3 for GradInput {
    fn name(&self) -> &'static str {
        "fkd-batch-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Norm { n, c, hw, eps } = self.norm;
        let name = self.name();
        let (x, g, aux) = (
            contiguous::<f32>(name, s1, l1)?,
            contiguous::<f32>(name, s2, l2)?,
            contiguous::<f32>(name, s3, l3)?,
        );
        let (params, sums) = aux.split_at(4 * c);
        let dims = (n, c, hw);
        let dx =
            reference::bn_grad_input(x, g, params, sums, dims, eps, self.relu, self.batch_stats);
        Ok((CpuStorage::F32(dx), Shape::from(l1.dims())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let Norm { c, eps, .. } = self.norm;
        let name = self.name();
        let dev = s1.device();
        let (x, g, aux) = (
            view(name, s1, l1)?,
            view(name, s2, l2)?,
            view(name, s3, l3)?,
        );
        let (params, sums) = (aux.slice(..4 * c), aux.slice(4 * c..));
        let len = self.norm.len();
        // SAFETY: bn_grad_input writes every element.
        let dx = unsafe { dev.alloc::<f32>(len) }?;
        let (ni, ci, hwi) = self.norm.ints()?;
        let (relu, batch) = (self.relu as i32, self.batch_stats as i32);
        launch!(
            dev,
            "bn_grad_input",
            elementwise(len),
            &x,
            &g,
            &params,
            &sums,
            &dx,
            &len,
            &ni,
            &ci,
            &hwi,
            &eps,
            &relu,
            &batch
        );
        Ok((wrap(dx, dev), Shape::from(l1.dims())))
    }
}

/// A candle-nn `BatchNorm` with an affine part on an f32 CUDA tensor, as the CPU's fused node
/// (`ops::batch_norm2d` and `ops::batch_norm2d_add_relu`): `None` when `x` is not one. In
/// training the batch statistics and the running-statistics update stay on the device.
pub(super) fn batch_norm(
    bn: &BatchNorm,
    x: &Tensor,
    residual: Option<&Tensor>,
    train: bool,
    relu: bool,
) -> Result<Option<Tensor>> {
    let Some((gamma, beta)) = bn.weight_and_bias() else {
        return Ok(None);
    };
    if !takes(x) || gamma.dtype() != DType::F32 || bn.running_mean().dtype() != DType::F32 {
        return Ok(None);
    }
    let (n, c, hw) = super::norm::norm_dims(bn, x)?;
    let norm = Norm {
        n,
        c,
        hw,
        eps: bn.eps() as f32,
    };
    let x = x.contiguous()?;
    let stats = if train {
        let m = n * hw;
        super::norm::check_trainable(m, "input", x.dims())?;
        let s = x.detach().apply_op1_no_bwd(&Stats(norm))?;
        update_running(bn, &s, m)?;
        s
    } else {
        Tensor::stack(&[bn.running_mean(), bn.running_var()], 0)?
    };
    let params = Tensor::cat(&[&Tensor::stack(&[gamma, beta], 0)?, &stats.detach()], 0)?;
    let node = NormNode {
        norm,
        relu,
        batch_stats: train,
    };
    let y = match residual {
        Some(r) => x.apply_op3(&params, &r.contiguous()?, node)?,
        None => x.apply_op2(&params, node)?,
    };
    Ok(Some(y))
}

// ---------------------------------------------------------------------------------------------
// ReLU

/// The `relu_mask` kernel, `grad · (y > 0)`: [`ReluMask`]'s CUDA forward.
#[cfg(feature = "cuda")]
pub(super) fn relu_mask(
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

/// `max(x, 0)` as one node whose backward is one kernel ([`ReluMask`]); Candle's ReLU
/// backward is five.
struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "fkd-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(self.name(), s, l)?;
        Ok((CpuStorage::F32(reference::relu(x)), Shape::from(l.dims())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = s.device();
        let x = view(self.name(), s, l)?;
        let len = l.shape().elem_count();
        // SAFETY: relu_fwd writes every element.
        let y = unsafe { dev.alloc::<f32>(len) }?;
        launch!(dev, "relu_fwd", elementwise(len), &x, &y, &len);
        Ok((wrap(y, dev), Shape::from(l.dims())))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.detach().contiguous()?;
        Ok(Some(grad.apply_op2_no_bwd(&y.detach(), &ReluMask)?))
    }
}

/// `max(x, 0)` on an f32 CUDA tensor as one node; `None` for other tensors.
pub(super) fn relu(x: &Tensor) -> Result<Option<Tensor>> {
    if !takes(x) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(Relu)?))
}

// ---------------------------------------------------------------------------------------------
// Max-pooling

/// The pool's sizes as the kernels take them.
#[cfg(feature = "cuda")]
fn window_args(w: &Window) -> Result<[i32; 7]> {
    Ok([
        i32_of(w.h, "height")?,
        i32_of(w.w, "width")?,
        i32_of(w.ho, "height")?,
        i32_of(w.wo, "width")?,
        i32_of(w.k, "kernel")?,
        i32_of(w.stride, "stride")?,
        i32_of(w.padding, "padding")?,
    ])
}

/// Max-pooling as a node; the backward recomputes each window's first maximum from x.
struct MaxPool(Window);

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "fkd-max-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let win = &self.0;
        let x = contiguous::<f32>(self.name(), s, l)?;
        let y = reference::max_pool(x, win);
        Ok((
            CpuStorage::F32(y),
            Shape::from((win.n, win.c, win.ho, win.wo)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let win = &self.0;
        let dev = s.device();
        let x = view(self.name(), s, l)?;
        let len = win.out_len();
        // SAFETY: max_pool_fwd writes every element.
        let y = unsafe { dev.alloc::<f32>(len) }?;
        let [h, w, ho, wo, k, stride, pad] = window_args(win)?;
        launch!(
            dev,
            "max_pool_fwd",
            elementwise(len),
            &x,
            &y,
            &len,
            &h,
            &w,
            &ho,
            &wo,
            &k,
            &stride,
            &pad
        );
        Ok((wrap(y, dev), Shape::from((win.n, win.c, win.ho, win.wo))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.detach().contiguous()?;
        Ok(Some(
            x.detach().apply_op2_no_bwd(&grad, &MaxPoolGrad(self.0))?,
        ))
    }
}

/// (x, ∂y) → ∂x of [`MaxPool`].
struct MaxPoolGrad(Window);

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "fkd-max-pool-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (
            contiguous::<f32>(self.name(), s1, l1)?,
            contiguous::<f32>(self.name(), s2, l2)?,
        );
        let dx = reference::max_pool_grad(x, g, &self.0);
        Ok((CpuStorage::F32(dx), Shape::from(l1.dims())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let win = &self.0;
        let dev = s1.device();
        let (x, g) = (view(self.name(), s1, l1)?, view(self.name(), s2, l2)?);
        let len = win.out_len();
        let dx = dev.alloc_zeros::<f32>(win.n * win.c * win.h * win.w)?;
        let [h, w, ho, wo, k, stride, pad] = window_args(win)?;
        launch!(
            dev,
            "max_pool_bwd",
            elementwise(len),
            &x,
            &g,
            &dx,
            &len,
            &h,
            &w,
            &ho,
            &wo,
            &k,
            &stride,
            &pad
        );
        Ok((wrap(dx, dev), Shape::from(l1.dims())))
    }
}

/// Max-pooling of an f32 CUDA tensor with a checked window; `None` for other tensors.
pub(super) fn max_pool2d(x: &Tensor, win: Window) -> Result<Option<Tensor>> {
    if !takes(x) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(MaxPool(win))?))
}

// ---------------------------------------------------------------------------------------------
// Memory

#[cfg(feature = "cuda")]
/// `NAME (compute X.Y)` of the device, and whether its tensor cores run TF32 (compute ≥ 8.0).
pub(super) fn describe(dev: &CudaDevice) -> Result<(String, bool)> {
    let ctx = dev.cuda_stream().context().clone();
    let name = ctx.name().w()?;
    let (major, minor) = ctx.compute_capability().w()?;
    Ok((format!("{name} (compute {major}.{minor})"), major >= 8))
}

#[cfg(feature = "cuda")]
/// The high-water mark of the device's default memory pool, in bytes: the most memory that
/// Candle's stream-ordered allocations (every tensor, cuDNN workspaces included) held at once.
/// Memory that cuBLAS or cuDNN allocate for themselves is not in it (nor is it in PyTorch's
/// `max_memory_allocated`).
pub(super) fn peak_bytes(dev: &CudaDevice) -> Result<u64> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let ctx = dev.cuda_stream().context().clone();
    ctx.bind_to_thread().w()?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: `pool` is a valid out-pointer and the device handle comes from a live context.
    unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) }
        .result()
        .w()?;
    let mut high: u64 = 0;
    // SAFETY: USED_MEM_HIGH is a cuuint64_t attribute, written to `high`.
    unsafe {
        sys::cuMemPoolGetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            (&mut high as *mut u64).cast(),
        )
    }
    .result()
    .w()?;
    Ok(high)
}

// ---------------------------------------------------------------------------------------------
// Adam (for fkd-train's optimiser)

#[cfg(feature = "cuda")]
/// Adam's moment update in place on the device: `m ← β·m + (1 − β)·g` (or `g²` when `square`),
/// for `InplaceOp2::cuda_fwd` (f32, contiguous, same length).
pub fn adam_moment(
    m: &mut CudaStorage,
    ml: &Layout,
    g: &CudaStorage,
    gl: &Layout,
    beta: f64,
    square: bool,
) -> Result<()> {
    let name = "fkd-adam-moment";
    let dev = m.device().clone();
    let gv = view(name, g, gl)?;
    let mut mv = view_mut(name, m, ml)?;
    let len = gv.len();
    if mv.len() != len {
        candle_core::bail!("{name}: {} moments for {len} gradients", mv.len());
    }
    let (beta, square) = (beta as f32, square as i32);
    launch!(
        dev,
        "adam_moment",
        elementwise(len),
        &mut mv,
        &gv,
        &len,
        &beta,
        &square
    );
    Ok(())
}

#[cfg(feature = "cuda")]
/// Adam's weight update in place on the device: `θ ← θ·decay − step·m/(√v + ε̂)`, for
/// `InplaceOp3::cuda_fwd` (f32, contiguous, same length).
#[allow(clippy::too_many_arguments)]
pub fn adam_weights(
    theta: &mut CudaStorage,
    tl: &Layout,
    m: &CudaStorage,
    ml: &Layout,
    v: &CudaStorage,
    vl: &Layout,
    (decay, step, eps): (f64, f64, f64),
) -> Result<()> {
    let name = "fkd-adam-weights";
    let dev = theta.device().clone();
    let (mv, vv) = (view(name, m, ml)?, view(name, v, vl)?);
    let mut tv = view_mut(name, theta, tl)?;
    let len = tv.len();
    if mv.len() != len || vv.len() != len {
        candle_core::bail!("{name}: moments and weights differ in size");
    }
    let (decay, step, eps) = (decay as f32, step as f32, eps as f32);
    launch!(
        dev,
        "adam_weights",
        elementwise(len),
        &mut tv,
        &mv,
        &vv,
        &len,
        &decay,
        &step,
        &eps
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The nodes with their reference forward (the kernels' arithmetic on the CPU) against
    //! fkd's CPU ops, forward and every gradient: what each node hands to which kernel, and how
    //! each backward is composed, checked without a GPU.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ops::conv::Geometry;
    use crate::ops::testutil::{random, weighted_grads};
    use candle_core::Var;
    use candle_core::backprop::GradStore;
    use candle_nn::{BatchNormConfig, VarBuilder, VarMap};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// While it lives, this thread's entry points build the nodes for f32 CPU tensors.
    pub(super) struct ReferenceNodes;

    pub(super) fn reference_nodes() -> ReferenceNodes {
        REFERENCE.set(true);
        ReferenceNodes
    }

    impl Drop for ReferenceNodes {
        fn drop(&mut self) {
            REFERENCE.set(false);
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
                |v| crate::ops::max_pool2d(&v[0], k, stride, pad).unwrap(),
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
                    (relu && !residual).then(|| crate::ops::StatsMomentum::set(0.25).unwrap());
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
                            true => crate::ops::batch_norm2d_add_relu(&bn_b, &v[0], &v[1], train),
                            false => crate::ops::batch_norm2d(&bn_b, &v[0], train, relu),
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
                crate::ops::batch_norm2d(&bn, &x, true, true).unwrap()
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
                |v| crate::ops::conv2d(&v[0], &v[1], None, stride, pad).unwrap(),
            );
        }
        for (n, ci, co, h, k, stride, pad) in [(2, 4, 3, 5, 4, 2, 1), (1, 3, 5, 6, 3, 1, 1)] {
            let x = f32_random(&[n, ci, h, h + 2], &mut rng);
            let wt = f32_random(&[ci, co, k, k], &mut rng);
            let (g, oo) = crate::ops::convt::geometry(&x, &wt, stride, pad).unwrap();
            same(
                &format!("convT {ci}→{co} k{k} s{stride} p{pad}"),
                &[x, wt],
                &mut rng,
                |v| cudnn::conv(&v[0], &v[1], g, oo, true).unwrap().unwrap(),
                |v| crate::ops::conv_transpose2d(&v[0], &v[1], stride, pad).unwrap(),
            );
        }
    }
}
