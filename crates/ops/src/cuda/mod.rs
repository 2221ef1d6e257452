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

use crate::cuda::launch::takes;
#[cfg(feature = "cuda")]
use crate::cuda::launch::{elementwise, i32_of, launch, per_channel, view, view_mut, wrap};
#[cfg(feature = "cuda")]
use candle_core::backend::BackendStorage;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, PushKernelArg};
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, InplaceOp2, Layout, Result, Shape, Tensor,
};
use candle_nn::BatchNorm;

use crate::relu_mask::ReluMask;
use crate::storage::contiguous;
use crate::window::Window;

pub(crate) mod cudnn;
pub(crate) mod launch;

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

/// PyTorch's running-statistics update (as `bn_layer::update_running`) from batch statistics
/// `stats` (2, c) that stay on their device: two in-place kernels, no read back.
fn update_running(bn: &BatchNorm, stats: &Tensor, m: usize) -> Result<()> {
    let momentum = crate::bn_layer::running_momentum(bn);
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
pub(crate) fn batch_norm(
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
    let (n, c, hw) = crate::bn_layer::norm_dims(bn, x)?;
    let norm = Norm {
        n,
        c,
        hw,
        eps: bn.eps() as f32,
    };
    let x = x.contiguous()?;
    let stats = if train {
        let m = n * hw;
        crate::bn_layer::check_trainable(m, "input", x.dims())?;
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
pub(crate) fn relu(x: &Tensor) -> Result<Option<Tensor>> {
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
pub(crate) fn max_pool2d(x: &Tensor, win: Window) -> Result<Option<Tensor>> {
    if !takes(x) {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(MaxPool(win))?))
}

// ---------------------------------------------------------------------------------------------
// Memory

#[cfg(feature = "cuda")]
/// `NAME (compute X.Y)` of the device, and whether its tensor cores run TF32 (compute ≥ 8.0).
pub(crate) fn describe(dev: &CudaDevice) -> Result<(String, bool)> {
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
pub(crate) fn peak_bytes(dev: &CudaDevice) -> Result<u64> {
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
mod tests;
