//! The convolution and transposed convolution on CUDA through cuDNN (feature `cudnn`): each an
//! autograd node whose forward and both gradients are one cuDNN call each, in place of Candle
//! 0.11's CUDA backward (a direct transposed-conv kernel for ∂x, and ∂w as a conv over
//! transposed copies).
//!
//! Three primitives on one [`Geometry`] (the conv's: input n×c×h×w, kernel o×c×kh×kw, output
//! n×o×ho×wo): the forward `y = x ⊛ w`, the data gradient `∂x` from `∂y` and `w`, and the
//! filter gradient `∂w` from `x` and `∂y`. The transposed conv is the conv's data gradient, so
//! its forward is the data-gradient call, its ∂x the forward call and its ∂w the filter-gradient
//! call with the two activations swapped (see `convt.rs` for the geometry).
//!
//! Algorithms come from cuDNN's heuristics (`cudnnGet…Algorithm_v7`, as PyTorch without
//! `cudnn.benchmark`), once per shape and thread. Math: TF32 tensor cores when
//! [`crate::precision`] is TF32 (cuDNN's default math, as PyTorch's `cudnn.allow_tf32`),
//! FMA-only f32 otherwise.

#[cfg(feature = "cudnn")]
use std::cell::RefCell;
#[cfg(feature = "cudnn")]
use std::collections::HashMap;
#[cfg(feature = "cudnn")]
use std::sync::Arc;

#[cfg(feature = "cudnn")]
use candle_core::backend::BackendStorage;
#[cfg(feature = "cudnn")]
use candle_core::cuda_backend::cudarc::cudnn::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, FilterDescriptor,
    TensorDescriptor, sys,
};
#[cfg(feature = "cudnn")]
use candle_core::cuda_backend::cudarc::driver::CudaSlice;
#[cfg(feature = "cudnn")]
use candle_core::cuda_backend::{CudaDevice, CudaStorage, DeviceId};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use crate::conv::kernel::{self as conv, Needs, Route};
use crate::conv::plan::{Epilogue, Geometry};
use crate::cuda::launch::takes;
#[cfg(feature = "cudnn")]
use crate::cuda::launch::{view, wrap};
#[cfg(feature = "cudnn")]
use crate::precision::{Precision, precision};
use crate::storage::contiguous;

/// Which of the three cuDNN calls, and so what the op's two inputs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Call {
    /// (x, w) → y.
    Forward,
    /// (∂y, w) → ∂x.
    Data,
    /// (x, ∂y) → ∂w.
    Filter,
}

#[cfg(feature = "cudnn")]
/// An algorithm cache key: the call, its geometry and output channels, and the math.
type Key = (Call, Geometry, usize, bool);

#[cfg(feature = "cudnn")]
/// The algorithm cuDNN's heuristics chose for one call.
#[derive(Clone, Copy, Debug)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

#[cfg(feature = "cudnn")]
thread_local! {
    // cuDNN handles are neither Send nor Sync: one per thread and device, as Candle keeps its own.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    static ALGOS: RefCell<HashMap<Key, Algo>> = RefCell::new(HashMap::new());
}

#[cfg(feature = "cudnn")]
fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream())?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

#[cfg(feature = "cudnn")]
fn dims(v: [usize; 4]) -> Result<[i32; 4]> {
    let mut out = [0; 4];
    for (o, d) in out.iter_mut().zip(v) {
        *o = crate::cuda::launch::i32_of(d, "conv dimension")?;
    }
    Ok(out)
}

#[cfg(feature = "cudnn")]
/// The descriptors of one conv: x (n, c, h, w), w (o, c, kh, kw), y (n, o, ho, wo).
struct Descriptors {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
}

#[cfg(feature = "cudnn")]
fn descriptors(cudnn: &Arc<Cudnn>, g: &Geometry, o: usize, tf32: bool) -> Result<Descriptors> {
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let (p, s) = (
        crate::cuda::launch::i32_of(g.padding, "padding")?,
        crate::cuda::launch::i32_of(g.stride, "stride")?,
    );
    let mut conv = cudnn.create_conv2d::<f32>(
        [p, p],
        [s, s],
        [1, 1],
        sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
    )?;
    conv.set_math_type(if tf32 {
        sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
    } else {
        sys::cudnnMathType_t::CUDNN_FMA_MATH
    })?;
    Ok(Descriptors {
        conv,
        x: cudnn.create_4d_tensor::<f32>(nchw, dims([g.n, g.c, g.h, g.w])?)?,
        w: cudnn.create_4d_filter::<f32>(nchw, dims([o, g.c, g.kh, g.kw])?)?,
        y: cudnn.create_4d_tensor::<f32>(nchw, dims([g.n, o, g.ho, g.wo])?)?,
    })
}

#[cfg(feature = "cudnn")]
/// The cached algorithm for `key`, or `pick()`'s, cached.
fn algorithm(key: Key, pick: impl FnOnce() -> Result<Algo>) -> Result<Algo> {
    if let Some(a) = ALGOS.with(|m| m.borrow().get(&key).copied()) {
        return Ok(a);
    }
    let a = pick()?;
    ALGOS.with(|m| m.borrow_mut().insert(key, a));
    Ok(a)
}

#[cfg(feature = "cudnn")]
/// The error of a cache entry of another call's kind (the key holds the call, so never).
fn mixed_up(a: Algo) -> candle_core::Error {
    candle_core::Error::Msg(format!("fkd-cudnn: cached algorithm {a:?} of another call"))
}

#[cfg(feature = "cudnn")]
/// A workspace of `bytes` on the device (none for 0).
fn workspace(dev: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    // SAFETY: cuDNN only writes the workspace before reading it.
    Ok(Some(unsafe { dev.alloc::<u8>(bytes) }?))
}

/// One cuDNN call of geometry `g` with `o` output channels, as an op without a backward.
struct Op {
    g: Geometry,
    o: usize,
    call: Call,
}

impl Op {
    fn out_dims(&self) -> [usize; 4] {
        let g = &self.g;
        match self.call {
            Call::Forward => [g.n, self.o, g.ho, g.wo],
            Call::Data => [g.n, g.c, g.h, g.w],
            Call::Filter => [self.o, g.c, g.kh, g.kw],
        }
    }
}

impl CustomOp2 for Op {
    fn name(&self) -> &'static str {
        match self.call {
            Call::Forward => "fkd-cudnn-conv",
            Call::Data => "fkd-cudnn-conv-grad-data",
            Call::Filter => "fkd-cudnn-conv-grad-filter",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (name, g, o) = (self.name(), &self.g, self.o);
        let (a, b) = (
            contiguous::<f32>(name, s1, l1)?,
            contiguous::<f32>(name, s2, l2)?,
        );
        // The same three results from fkd's CPU conv kernels.
        let out = match self.call {
            Call::Forward => Some(conv::forward(a, b, None, g, o, Epilogue::None).0),
            Call::Data => {
                let needs = Needs { x: true, w: false };
                conv::backward(&[], b, a, Route::Plain, g, o, false, needs).x
            }
            Call::Filter => {
                let w = vec![0.0f32; o * g.c * g.kh * g.kw];
                let needs = Needs { x: false, w: true };
                conv::backward(a, &w, b, Route::Plain, g, o, false, needs).w
            }
        };
        let Some(out) = out else {
            candle_core::bail!("{name}: the CPU conv kernels gave no result");
        };
        Ok((CpuStorage::F32(out), Shape::from(self.out_dims().to_vec())))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (name, g, o) = (self.name(), &self.g, self.o);
        let dev = s1.device();
        let (a, b) = (view(name, s1, l1)?, view(name, s2, l2)?);
        let out_dims = self.out_dims();
        let len = out_dims.iter().product();
        // SAFETY: cuDNN writes every element (beta = 0).
        let mut out = unsafe { dev.alloc::<f32>(len) }?;
        let cudnn = handle(dev)?;
        let tf32 = precision() == Precision::Tf32;
        let d = descriptors(&cudnn, g, o, tf32)?;
        let key = (self.call, *g, o, tf32);
        match self.call {
            Call::Forward => {
                let op = ConvForward {
                    conv: &d.conv,
                    x: &d.x,
                    w: &d.w,
                    y: &d.y,
                };
                let algo = match algorithm(key, || Ok(Algo::Forward(op.pick_algorithm()?)))? {
                    Algo::Forward(a) => a,
                    other => return Err(mixed_up(other)),
                };
                let mut ws = workspace(dev, op.get_workspace_size(algo)?)?;
                // SAFETY: a is x (n, c, h, w), b is w (o, c, kh, kw), out is y: as described.
                unsafe { op.launch(algo, ws.as_mut(), (1.0, 0.0), &a, &b, &mut out) }?;
            }
            Call::Data => {
                let op = ConvBackwardData {
                    conv: &d.conv,
                    dx: &d.x,
                    w: &d.w,
                    dy: &d.y,
                };
                let algo = match algorithm(key, || Ok(Algo::Data(op.pick_algorithm()?)))? {
                    Algo::Data(a) => a,
                    other => return Err(mixed_up(other)),
                };
                let mut ws = workspace(dev, op.get_workspace_size(algo)?)?;
                // SAFETY: a is ∂y (n, o, ho, wo), b is w, out is ∂x (n, c, h, w).
                unsafe { op.launch(algo, ws.as_mut(), (1.0, 0.0), &mut out, &b, &a) }?;
            }
            Call::Filter => {
                let op = ConvBackwardFilter {
                    conv: &d.conv,
                    x: &d.x,
                    dw: &d.w,
                    dy: &d.y,
                };
                let algo = match algorithm(key, || Ok(Algo::Filter(op.pick_algorithm()?)))? {
                    Algo::Filter(a) => a,
                    other => return Err(mixed_up(other)),
                };
                let mut ws = workspace(dev, op.get_workspace_size(algo)?)?;
                // SAFETY: a is x, b is ∂y, out is ∂w (o, c, kh, kw).
                unsafe { op.launch(algo, ws.as_mut(), (1.0, 0.0), &a, &mut out, &b) }?;
            }
        }
        Ok((wrap(out, dev), Shape::from(out_dims.to_vec())))
    }
}

/// The conv (`transposed: false`) or the transposed conv `(x, w) → y` of geometry `g` as a
/// node. The transposed conv is the data gradient of the conv of geometry `g` (whose output is
/// the transposed conv's input): the forward and data calls trade places, and its filter
/// gradient takes the two activations the other way round.
struct Node {
    g: Geometry,
    o: usize,
    transposed: bool,
}

impl Node {
    fn op(&self, call: Call) -> Op {
        Op {
            g: self.g,
            o: self.o,
            call,
        }
    }

    /// The calls of the forward and of ∂x.
    fn calls(&self) -> (Call, Call) {
        if self.transposed {
            (Call::Data, Call::Forward)
        } else {
            (Call::Forward, Call::Data)
        }
    }
}

impl CustomOp2 for Node {
    fn name(&self) -> &'static str {
        if self.transposed {
            "fkd-cudnn-conv-transpose2d"
        } else {
            "fkd-cudnn-conv2d"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.op(self.calls().0).cpu_fwd(s1, l1, s2, l2)
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.op(self.calls().0).cuda_fwd(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.detach().contiguous()?;
        let (xd, wd) = (x.detach(), w.detach());
        let dx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(&wd, &self.op(self.calls().1))?)
        } else {
            None
        };
        // The filter call takes (conv input, conv output gradient).
        let (input, out_grad) = if self.transposed {
            (&grad, &xd)
        } else {
            (&xd, &grad)
        };
        let dw = input.apply_op2_no_bwd(out_grad, &self.op(Call::Filter))?;
        Ok((dx, Some(dw)))
    }
}

/// Whether the entry points take `x`: an f32 CUDA tensor in a build with cuDNN (and in the
/// tests, an f32 CPU tensor, for the nodes' reference forward).
fn routes(x: &Tensor) -> bool {
    takes(x) && (cfg!(feature = "cudnn") || x.device().is_cpu())
}

/// Through cuDNN, when `x` and `w` are f32 on a CUDA device (`None` otherwise): the conv of
/// `x` by `w` (o, c, kh, kw) with geometry `g` (from `conv::Geometry::new`), or with
/// `transposed` the transposed conv of `x` by `w` (Cin, Cout, kh, kw), `g` then being the
/// geometry of the conv it transposes (from `convt::geometry`).
pub(crate) fn conv(
    x: &Tensor,
    w: &Tensor,
    g: Geometry,
    o: usize,
    transposed: bool,
) -> Result<Option<Tensor>> {
    if !routes(x) || !routes(w) {
        return Ok(None);
    }
    let node = Node { g, o, transposed };
    Ok(Some(x.contiguous()?.apply_op2(&w.contiguous()?, node)?))
}
