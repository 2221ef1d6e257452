//! Adam with decoupled weight decay (AdamW, Loshchilov & Hutter) over the variables of a
//! [`VarMap`], with its state (moments and step count) saved to and loaded from safetensors so
//! that a resumed run continues exactly where it stopped.
//!
//! candle-nn's `AdamW` keeps its moments private and knows its variables only by position, so
//! its state cannot be saved; this one keys every moment by the variable's name.

use crate::checkpoint::write_atomic;
use crate::{Result, TrainConfig, TrainError};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::Path;

/// Adam's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// `β1, β2`: decay of the first and second moment estimates.
    pub betas: [f64; 2],
    /// `ε`, added to the square root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay: each step multiplies the weights of rank ≥ 2 (conv and linear
    /// kernels; not biases or norm parameters) by `1 − lr·weight_decay`.
    pub weight_decay: f64,
}

impl From<&TrainConfig> for AdamConfig {
    fn from(cfg: &TrainConfig) -> Self {
        Self {
            lr: cfg.lr,
            betas: cfg.betas,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        }
    }
}

/// One variable with its moment estimates.
struct Slot {
    name: String,
    /// Whether weight decay applies: kernels of rank ≥ 2 (conv, linear) yes; biases and norm
    /// scales and shifts (rank 1) no, the usual AdamW practice — decaying a norm's γ towards 0
    /// fights the normalisation instead of regularising.
    decays: bool,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// Adam with decoupled weight decay and bias correction.
///
/// Each step, for a parameter `θ` with gradient `g` at step `t`:
/// `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
/// `θ ← θ·(1 − lr·wd) − lr·m̂/(√v̂ + ε)` with `m̂ = m/(1−β1^t)`, `v̂ = v/(1−β2^t)`.
pub struct Adam {
    slots: Vec<Slot>,
    cfg: AdamConfig,
    step: u64,
    /// Use the fused CPU kernels where they apply (tests turn this off to compare).
    fused: bool,
}

/// Name of the step counter in a saved state file.
const STEP_KEY: &str = "step";

impl Adam {
    /// An optimiser for every variable now in `varmap`, with zero moments.
    pub fn new(varmap: &VarMap, cfg: AdamConfig) -> Result<Self> {
        let slots = sorted_vars(varmap)
            .into_iter()
            .map(|(name, var)| {
                // Two buffers of their own: the fused step updates them in place.
                let m = var.as_tensor().zeros_like()?;
                let v = var.as_tensor().zeros_like()?;
                let decays = var.as_tensor().rank() >= 2;
                Ok(Slot {
                    name,
                    decays,
                    var,
                    m,
                    v,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            slots,
            cfg,
            step: 0,
            fused: true,
        })
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    /// Sets the learning rate of the following steps (schedules call this each epoch).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Sets `β1, β2` of the following steps (the one-cycle schedule cycles β1). The bias
    /// correction of step `t` uses the β1 of that step, as PyTorch's Adam does.
    pub fn set_betas(&mut self, betas: [f64; 2]) {
        self.cfg.betas = betas;
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Back-propagates `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// One update of every variable that has a gradient in `grads` (others are left alone,
    /// moments and weight decay included, as PyTorch does for parameters without a gradient).
    pub fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step += 1;
        let [b1, b2] = self.cfg.betas;
        let t = self.step as f64;
        let (bc1, bc2) = (1.0 - b1.powf(t), 1.0 - b2.powf(t));
        // Folding the bias corrections into the step size and ε (Kingma & Ba, §2) gives the
        // same update with two fewer tensor operations per parameter:
        // lr·m̂/(√v̂ + ε) = (lr·√bc2/bc1)·m/(√v + ε·√bc2).
        let step_size = self.cfg.lr * bc2.sqrt() / bc1;
        let eps_hat = self.cfg.eps * bc2.sqrt();
        for slot in &mut self.slots {
            let decay = if slot.decays {
                1.0 - self.cfg.lr * self.cfg.weight_decay
            } else {
                1.0
            };
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            // Gradients carry the op graph of the backward pass (which holds the forward
            // activations). Without `detach`, each new moment would link to the previous one
            // and to that graph, so every step ever taken would stay in memory.
            let g = g.detach();
            if self.fused && fused::applies(&[slot.var.as_tensor(), &slot.m, &slot.v, &g]) {
                let h = fused::Hyper {
                    b1,
                    b2,
                    step_size,
                    eps_hat,
                    decay,
                };
                fused::step(&slot.var, &slot.m, &slot.v, &g, h)?;
                continue;
            }
            slot.m = (slot.m.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?.detach();
            slot.v = (slot.v.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?.detach();
            let update =
                (&slot.m / slot.v.sqrt()?.affine(1.0, eps_hat)?)?.affine(step_size, 0.0)?;
            let theta = &slot.var.as_tensor().detach();
            let next = if decay == 1.0 {
                (theta - update)?
            } else {
                (theta.affine(decay, 0.0)? - update)?
            };
            slot.var.set(&next)?;
        }
        Ok(())
    }

    /// Writes the moments (`m.<name>`, `v.<name>`) and the step count to a safetensors file,
    /// atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::with_capacity(2 * self.slots.len() + 1);
        for slot in &self.slots {
            tensors.insert(format!("m.{}", slot.name), slot.m.clone());
            tensors.insert(format!("v.{}", slot.name), slot.v.clone());
        }
        let step = i64::try_from(self.step)
            .map_err(|_| TrainError::checkpoint(path, "step count too large to save"))?;
        tensors.insert(STEP_KEY.into(), Tensor::new(&[step], &Device::Cpu)?);
        write_atomic(path, |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(|e| {
                TrainError::checkpoint(path, format!("cannot write optimiser state: {e}"))
            })
        })
    }

    /// Restores the moments and step count saved by [`Adam::save`]. The file must hold exactly
    /// this optimiser's variables with their shapes, else nothing is changed.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let mut saved = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            TrainError::checkpoint(path, format!("cannot read optimiser state: {e}"))
        })?;
        let step = saved
            .remove(STEP_KEY)
            .ok_or_else(|| {
                TrainError::checkpoint(path, "no step count: not an fkd optimiser state")
            })?
            .to_dtype(DType::I64)?
            .to_vec1::<i64>()?;
        let step = match step.as_slice() {
            [s] => u64::try_from(*s)
                .map_err(|_| TrainError::checkpoint(path, "negative step count"))?,
            _ => {
                return Err(TrainError::checkpoint(
                    path,
                    "the step count is not a single number",
                ));
            }
        };
        let mut moments = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let mut take = |kind: &str| -> Result<Tensor> {
                let key = format!("{kind}.{}", slot.name);
                let t = saved.remove(&key).ok_or_else(|| {
                    TrainError::checkpoint(
                        path,
                        format!("no {key}: the state belongs to another model"),
                    )
                })?;
                let want = slot.var.as_tensor();
                if t.dims() != want.dims() || t.dtype() != want.dtype() {
                    return Err(TrainError::checkpoint(
                        path,
                        format!(
                            "{key} is {:?} {:?} but the model's {} is {:?} {:?}: the state belongs to another model",
                            t.dtype(),
                            t.dims(),
                            slot.name,
                            want.dtype(),
                            want.dims()
                        ),
                    ));
                }
                Ok(t.to_device(want.device())?)
            };
            moments.push((take("m")?, take("v")?));
        }
        if !saved.is_empty() {
            let mut extra: Vec<&String> = saved.keys().collect();
            extra.sort();
            return Err(TrainError::checkpoint(
                path,
                format!(
                    "moments for variables the model lacks ({extra:?}): the state belongs to another model"
                ),
            ));
        }
        for (slot, (m, v)) in self.slots.iter_mut().zip(moments) {
            slot.m = m;
            slot.v = v;
        }
        self.step = step;
        Ok(())
    }
}

/// Every variable of `varmap` with its name, sorted by name: HashMap order varies between
/// runs, and a fixed order keeps the updates reproducible.
pub(crate) fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut named: Vec<(String, Var)> = {
        let data = varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// `state ← state + (1 − β)·(x − state)`, i.e. `β·state + (1 − β)·x` written so that a
/// constant `x` is a fixed point whatever the rounding of `β`: in place on the CPU (one parallel
/// pass), else with tensor ops and [`Var::set`]. For the weight average of [`crate::ema`];
/// `state` must own its storage, like the moments.
pub(crate) fn blend(state: &Var, x: &Tensor, beta: f64) -> candle_core::Result<()> {
    if state.device().is_cpu() && fused::applies(&[state.as_tensor(), x]) {
        return fused::blend(state.as_tensor(), x, beta);
    }
    let s = state.as_tensor();
    let next = (s + (x - s)?.affine(1.0 - beta, 0.0)?)?;
    state.set(&next)
}

/// Adam's update on the CPU as three parallel in-place passes (first moment, second moment,
/// weights) instead of about ten tensor ops, each with its own output buffer: 5 ms of a 47 ms
/// NoseNet training step at batch 8 went to the optimiser before. Nothing is allocated, zeroed
/// or copied: on Part 4's deconv net (13 M parameters) this cut the step from 46 ms (fresh
/// moment and weight buffers, then `Var::set`'s copy) to about 25 ms. Same arithmetic as the
/// tensor-op path.
mod fused {
    use candle_core::backend::BackendStorage;
    use candle_core::{
        CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Tensor, Var, WithDType,
    };
    use fkd_models::ops::simd;
    use rayon::prelude::*;

    /// Elements per parallel task.
    const GRAIN: usize = 1 << 14;

    #[derive(Clone, Copy)]
    pub(super) struct Hyper {
        pub b1: f64,
        pub b2: f64,
        pub step_size: f64,
        pub eps_hat: f64,
        pub decay: f64,
    }

    /// Whether the fused kernels serve these tensors: all f32 (or all f64), contiguous, on
    /// the CPU; or all f32 and contiguous on one CUDA device, in a build with `cuda`.
    pub(super) fn applies(ts: &[&Tensor]) -> bool {
        let dtype = ts[0].dtype();
        let on_cpu = ts.iter().all(|t| {
            matches!(t.device(), Device::Cpu)
                && t.dtype() == dtype
                && matches!(dtype, DType::F32 | DType::F64)
                && t.is_contiguous()
        });
        let on_cuda = cfg!(feature = "cuda")
            && ts.iter().all(|t| {
                t.device().same_device(ts[0].device())
                    && t.device().is_cuda()
                    && t.dtype() == DType::F32
                    && t.is_contiguous()
            });
        on_cpu || on_cuda
    }

    /// The float types the kernels run in: `WithDType` and a square root in the type itself.
    trait Real: WithDType {
        fn sqrt(self) -> Self;
        fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [Self]>;
    }

    macro_rules! real {
        ($t:ty, $variant:ident) => {
            impl Real for $t {
                #[inline(always)]
                fn sqrt(self) -> Self {
                    <$t>::sqrt(self)
                }
                fn slice_mut<'a>(
                    s: &'a mut CpuStorage,
                    l: &Layout,
                ) -> candle_core::Result<&'a mut [Self]> {
                    match s {
                        CpuStorage::$variant(d) => window_mut(d, l),
                        _ => candle_core::bail!("fused Adam: mixed dtypes"),
                    }
                }
            }
        };
    }
    real!(f32, F32);
    real!(f64, F64);

    fn window_mut<'a, T>(d: &'a mut [T], l: &Layout) -> candle_core::Result<&'a mut [T]> {
        match l.contiguous_offsets() {
            Some((a, b)) => Ok(&mut d[a..b]),
            None => candle_core::bail!("fused Adam: non-contiguous state"),
        }
    }

    fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
        match l.contiguous_offsets() {
            Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
            None => candle_core::bail!("fused Adam: non-contiguous input"),
        }
    }

    /// Runs `f(dst chunk, offset)` over `dst` in parallel chunks of [`GRAIN`] elements.
    /// Each chunk runs at the CPU's widest vector level (`fkd_ops::simd`): give `f`
    /// `#[inline(always)]` so that its loop is compiled for it.
    #[inline(always)]
    fn chunked<T: Send>(dst: &mut [T], f: impl Fn(&mut [T], usize) + Sync) {
        dst.par_chunks_mut(GRAIN).enumerate().for_each(|(i, d)| {
            simd::dispatch(
                #[inline(always)]
                || f(d, i * GRAIN),
            )
        });
    }

    /// One moment in place, with (moment, g): `m ← β₁·m + (1 − β₁)·g` for the first,
    /// `v ← β₂·v + (1 − β₂)·g²` for the second (`square`).
    struct Moment {
        beta: f64,
        square: bool,
    }

    fn moment<T: Real>(
        state: &mut CpuStorage,
        sl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
        beta: f64,
        square: bool,
    ) -> candle_core::Result<()> {
        let (b, c) = (T::from_f64(beta), T::from_f64(1.0 - beta));
        let g = slice::<T>(g, gl)?;
        let state = T::slice_mut(state, sl)?;
        if state.len() != g.len() {
            candle_core::bail!(
                "fused Adam: {} moments for {} gradients",
                state.len(),
                g.len()
            );
        }
        chunked(
            state,
            #[inline(always)]
            |d, at| {
                // Locals and one branch outside the loop, so that it vectorises (LLVM
                // reloads captured values after every store it cannot prove apart).
                let (b, c, g) = (b, c, &g[at..][..d.len()]);
                if square {
                    for (m, &g) in d.iter_mut().zip(g) {
                        *m = *m * b + g * g * c;
                    }
                } else {
                    for (m, &g) in d.iter_mut().zip(g) {
                        *m = *m * b + g * c;
                    }
                }
            },
        );
        Ok(())
    }

    impl InplaceOp2 for Moment {
        fn name(&self) -> &'static str {
            if self.square {
                "fkd-adam-second-moment"
            } else {
                "fkd-adam-first-moment"
            }
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<()> {
            let (beta, square) = (self.beta, self.square);
            match (s1.dtype(), s2.dtype()) {
                (DType::F32, DType::F32) => moment::<f32>(s1, l1, s2, l2, beta, square),
                (DType::F64, DType::F64) => moment::<f64>(s1, l1, s2, l2, beta, square),
                (a, b) => candle_core::bail!("{}: unsupported dtypes {a:?}, {b:?}", self.name()),
            }
        }

        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            s1: &mut candle_core::CudaStorage,
            l1: &Layout,
            s2: &candle_core::CudaStorage,
            l2: &Layout,
        ) -> candle_core::Result<()> {
            fkd_models::ops::cuda::adam_moment(s1, l1, s2, l2, self.beta, self.square)
        }
    }

    /// `θ ← θ·decay − step_size·m/(√v + ε̂)`, in place, with (θ, m, v).
    struct Weights(Hyper);

    fn weights<T: Real>(
        theta: &mut CpuStorage,
        tl: &Layout,
        m: &[T],
        v: &[T],
        h: Hyper,
    ) -> candle_core::Result<()> {
        let (decay, step, eps) = (
            T::from_f64(h.decay),
            T::from_f64(h.step_size),
            T::from_f64(h.eps_hat),
        );
        let theta = T::slice_mut(theta, tl)?;
        if theta.len() != m.len() || theta.len() != v.len() {
            candle_core::bail!("fused Adam: moments and weights differ in size");
        }
        chunked(
            theta,
            #[inline(always)]
            |d, at| {
                // As in `moment`: locals, and the branch outside the loop.
                let (decay, step, eps) = (decay, step, eps);
                let (m, v) = (&m[at..][..d.len()], &v[at..][..d.len()]);
                if h.decay == 1.0 {
                    for ((o, &m), &v) in d.iter_mut().zip(m).zip(v) {
                        *o -= m / (v.sqrt() + eps) * step;
                    }
                } else {
                    for ((o, &m), &v) in d.iter_mut().zip(m).zip(v) {
                        *o = *o * decay - m / (v.sqrt() + eps) * step;
                    }
                }
            },
        );
        Ok(())
    }

    impl InplaceOp3 for Weights {
        fn name(&self) -> &'static str {
            "fkd-adam-weights"
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> candle_core::Result<()> {
            match (s1.dtype(), s2.dtype(), s3.dtype()) {
                (DType::F32, DType::F32, DType::F32) => {
                    weights::<f32>(s1, l1, slice(s2, l2)?, slice(s3, l3)?, self.0)
                }
                (DType::F64, DType::F64, DType::F64) => {
                    weights::<f64>(s1, l1, slice(s2, l2)?, slice(s3, l3)?, self.0)
                }
                (a, b, c) => {
                    candle_core::bail!("{}: unsupported dtypes {a:?}, {b:?}, {c:?}", self.name())
                }
            }
        }

        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            s1: &mut candle_core::CudaStorage,
            l1: &Layout,
            s2: &candle_core::CudaStorage,
            l2: &Layout,
            s3: &candle_core::CudaStorage,
            l3: &Layout,
        ) -> candle_core::Result<()> {
            let h = self.0;
            fkd_models::ops::cuda::adam_weights(
                s1,
                l1,
                s2,
                l2,
                s3,
                l3,
                (h.decay, h.step_size, h.eps_hat),
            )
        }
    }

    /// `state ← state + (1 − β)·(x − state)` in place, on the CPU.
    pub(super) fn blend(state: &Tensor, x: &Tensor, beta: f64) -> candle_core::Result<()> {
        state.inplace_op2(x, &Blend { beta })
    }

    /// [`blend`]'s kernel, with (state, x).
    struct Blend {
        beta: f64,
    }

    fn blend_into<T: Real>(
        state: &mut CpuStorage,
        sl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
        beta: f64,
    ) -> candle_core::Result<()> {
        let c = T::from_f64(1.0 - beta);
        let x = slice::<T>(x, xl)?;
        let state = T::slice_mut(state, sl)?;
        if state.len() != x.len() {
            candle_core::bail!("fkd-ema: {} averages for {} values", state.len(), x.len());
        }
        chunked(
            state,
            #[inline(always)]
            |d, at| {
                let (c, x) = (c, &x[at..][..d.len()]);
                for (s, &x) in d.iter_mut().zip(x) {
                    *s = *s + c * (x - *s);
                }
            },
        );
        Ok(())
    }

    impl InplaceOp2 for Blend {
        fn name(&self) -> &'static str {
            "fkd-ema"
        }

        fn cpu_fwd(
            &self,
            s1: &mut CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<()> {
            match (s1.dtype(), s2.dtype()) {
                (DType::F32, DType::F32) => blend_into::<f32>(s1, l1, s2, l2, self.beta),
                (DType::F64, DType::F64) => blend_into::<f64>(s1, l1, s2, l2, self.beta),
                (a, b) => candle_core::bail!("{}: unsupported dtypes {a:?}, {b:?}", self.name()),
            }
        }
    }

    /// One step for one variable, updating it and its moments in place. The moments must be
    /// tensors of their own (no other tensor shares their storage): the optimiser's state.
    pub(super) fn step(
        var: &Var,
        m: &Tensor,
        v: &Tensor,
        g: &Tensor,
        h: Hyper,
    ) -> candle_core::Result<()> {
        m.inplace_op2(
            g,
            &Moment {
                beta: h.b1,
                square: false,
            },
        )?;
        v.inplace_op2(
            g,
            &Moment {
                beta: h.b2,
                square: true,
            },
        )?;
        var.as_tensor().inplace_op3(m, v, &Weights(h))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_nn::Init;

    /// A 1×2 kernel (rank 2, so weight decay applies to it).
    fn one_param(values: [f32; 2]) -> (VarMap, Tensor) {
        let varmap = VarMap::new();
        let theta = varmap
            .get((1, 2), "theta", Init::Const(0.0), DType::F32, &Device::Cpu)
            .unwrap();
        let mut vm = varmap.clone();
        vm.set_one("theta", Tensor::new(&[values], &Device::Cpu).unwrap())
            .unwrap();
        (varmap, theta)
    }

    /// `sum(θ·c)` has gradient `c` whatever θ is, so each step's gradient is chosen exactly.
    fn step_with_gradient(opt: &mut Adam, theta: &Tensor, c: [f32; 2]) {
        let c = Tensor::new(&[c], &Device::Cpu).unwrap();
        opt.backward_step(&(theta * c).unwrap().sum_all().unwrap())
            .unwrap();
    }

    const CFG: AdamConfig = AdamConfig {
        lr: 0.1,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.1,
    };

    /// The moments must not hold on to the autograd graph: a moment that tracked ops would
    /// chain every step's backward pass (and its activations) into memory forever.
    #[test]
    fn moments_keep_no_graph() {
        let (varmap, theta) = one_param([1.0, -2.0]);
        let mut opt = Adam::new(&varmap, CFG).unwrap();
        for _ in 0..3 {
            // d(Σθ²)/dθ = 2θ is computed from the variable, so the gradient tracks ops.
            opt.backward_step(&theta.sqr().unwrap().sum_all().unwrap())
                .unwrap();
        }
        for slot in &opt.slots {
            assert!(!slot.m.track_op() && !slot.v.track_op());
        }
    }

    #[test]
    fn two_steps_by_hand() {
        let (varmap, theta) = one_param([1.0, -2.0]);
        let mut opt = Adam::new(&varmap, CFG).unwrap();
        // Step 1, g = (0.5, −3): m̂ = g, v̂ = g², so the update is lr·sign(g);
        // θ = (1, −2)·(1 − 0.1·0.1) − 0.1·(1, −1) = (0.89, −1.88).
        step_with_gradient(&mut opt, &theta, [0.5, -3.0]);
        let got = theta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (got[0] - 0.89).abs() < 1e-6 && (got[1] + 1.88).abs() < 1e-6,
            "{got:?}"
        );
        // Step 2, g = (−1, 0.5): m = 0.9·(0.05, −0.3) + 0.1·g = (−0.055, −0.22),
        // v = 0.999·(0.00025, 0.009) + 0.001·g² = (0.00124975, 0.009241),
        // m̂ = m/0.19, v̂ = v/0.001999, θ = 0.99·θ − 0.1·m̂/(√v̂ + 1e-8)
        //   = (0.917710354, −1.807346245).
        step_with_gradient(&mut opt, &theta, [-1.0, 0.5]);
        let got = theta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((got[0] - 0.917_710_35).abs() < 1e-6, "{got:?}");
        assert!((got[1] + 1.807_346_2).abs() < 1e-6, "{got:?}");
        assert_eq!(opt.step_count(), 2);
    }

    /// Biases and norm parameters (rank 1) are not decayed: with a zero gradient a kernel
    /// shrinks by `1 − lr·wd` per step, a vector stays put.
    #[test]
    fn weight_decay_skips_vectors() {
        let varmap = VarMap::new();
        let kernel = varmap
            .get((2, 2), "w", Init::Const(1.0), DType::F32, &Device::Cpu)
            .unwrap();
        let bias = varmap
            .get(2, "b", Init::Const(1.0), DType::F32, &Device::Cpu)
            .unwrap();
        for fused in [true, false] {
            let mut opt = Adam::new(&varmap, CFG).unwrap();
            opt.fused = fused;
            // Multiplying by a zero tensor (not the scalar 0, which candle may fold away) gives
            // both variables a gradient of exactly zero.
            let zero = |t: &Tensor| t.mul(&t.zeros_like().unwrap()).unwrap().sum_all().unwrap();
            let loss = (zero(&kernel) + zero(&bias)).unwrap();
            let before_k = kernel.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let before_b = bias.to_vec1::<f32>().unwrap();
            opt.backward_step(&loss).unwrap();
            let k = kernel.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = bias.to_vec1::<f32>().unwrap();
            for (x, x0) in k.iter().zip(&before_k) {
                assert!((x - x0 * 0.99).abs() < 1e-6, "fused {fused}: {k:?}");
            }
            assert_eq!(b, before_b, "fused {fused}");
        }
    }

    /// The fused kernels' loops run at the CPU's widest vector level (`fkd_ops::simd`): every
    /// level gives the baseline's bits, with and without weight decay, and so does the weight
    /// average's blend.
    #[test]
    fn every_vector_level_gives_the_baseline_bits() {
        let n = 70_001;
        let init: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let runs = fkd_models::ops::simd::at_each_level(|| {
            let mut out = Vec::new();
            for weight_decay in [0.0, 0.1] {
                let (varmap, theta) = one_param_of(&init);
                let cfg = AdamConfig {
                    weight_decay,
                    ..CFG
                };
                let mut opt = Adam::new(&varmap, cfg).unwrap();
                for step in 0..3 {
                    let c: Vec<f32> = (0..n)
                        .map(|i| (((i + step * 13) * 29 % 97) as f32 - 48.0) / 10.0)
                        .collect();
                    let c = Tensor::new(c.as_slice(), &Device::Cpu).unwrap();
                    opt.backward_step(&(&theta * &c).unwrap().sum_all().unwrap())
                        .unwrap();
                }
                out.push(theta.to_vec1::<f32>().unwrap());
                let avg = Var::from_tensor(&theta.affine(0.5, 0.1).unwrap()).unwrap();
                blend(&avg, &theta, 0.9).unwrap();
                out.push(avg.as_tensor().to_vec1::<f32>().unwrap());
            }
            out
        });
        let bits = |v: &[Vec<f32>]| -> Vec<Vec<u32>> {
            v.iter()
                .map(|x| x.iter().map(|f| f.to_bits()).collect())
                .collect()
        };
        for (level, got) in &runs[1..] {
            assert!(bits(got) == bits(&runs[0].1), "{level:?}");
        }
    }

    /// A var map with one f32 vector `theta` holding `init`.
    fn one_param_of(init: &[f32]) -> (VarMap, Tensor) {
        let varmap = VarMap::new();
        let theta = varmap
            .get(
                init.len(),
                "theta",
                Init::Const(0.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let mut vm = varmap.clone();
        vm.set_one("theta", Tensor::new(init, &Device::Cpu).unwrap())
            .unwrap();
        (varmap, theta)
    }

    /// The fused CPU kernels and the tensor-op path take the same steps (f32 rounding aside),
    /// with and without weight decay, over tensors larger than one parallel task.
    #[test]
    fn fused_kernels_match_the_tensor_ops() {
        for weight_decay in [0.0, 0.1] {
            let n = 40_000;
            let init: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let cfg = AdamConfig {
                weight_decay,
                ..CFG
            };
            let ((vm_a, theta_a), (vm_b, theta_b)) = (one_param_of(&init), one_param_of(&init));
            let mut fused = Adam::new(&vm_a, cfg).unwrap();
            let mut plain = Adam::new(&vm_b, cfg).unwrap();
            plain.fused = false;
            for step in 0..5 {
                let c: Vec<f32> = (0..n)
                    .map(|i| (((i + step * 13) * 29 % 97) as f32 - 48.0) / 10.0)
                    .collect();
                let c = Tensor::new(c.as_slice(), &Device::Cpu).unwrap();
                for (opt, theta) in [(&mut fused, &theta_a), (&mut plain, &theta_b)] {
                    opt.backward_step(&(theta * &c).unwrap().sum_all().unwrap())
                        .unwrap();
                }
            }
            let (a, b) = (
                theta_a.to_vec1::<f32>().unwrap(),
                theta_b.to_vec1::<f32>().unwrap(),
            );
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-6, "wd {weight_decay}: {worst}");
            for (sa, sb) in fused.slots.iter().zip(&plain.slots) {
                let d = (&sa.v - &sb.v).unwrap().abs().unwrap().max_all().unwrap();
                assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
            }
        }
    }

    #[test]
    fn saved_state_continues_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adam.safetensors");
        let (varmap, theta) = one_param([1.0, -2.0]);
        let mut opt = Adam::new(&varmap, CFG).unwrap();
        step_with_gradient(&mut opt, &theta, [0.5, -3.0]);
        opt.save(&path).unwrap();
        let after_one = theta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        step_with_gradient(&mut opt, &theta, [-1.0, 0.5]);
        let straight = theta.flatten_all().unwrap().to_vec1::<f32>().unwrap();

        let (varmap2, theta2) = one_param([after_one[0], after_one[1]]);
        let mut opt2 = Adam::new(&varmap2, CFG).unwrap();
        opt2.load(&path).unwrap();
        assert_eq!(opt2.step_count(), 1);
        step_with_gradient(&mut opt2, &theta2, [-1.0, 0.5]);
        assert_eq!(
            theta2.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            straight
        );
    }

    #[test]
    fn state_of_another_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adam.safetensors");
        let (varmap, _) = one_param([1.0, -2.0]);
        Adam::new(&varmap, CFG).unwrap().save(&path).unwrap();
        let other = VarMap::new();
        other
            .get(3, "theta", Init::Const(0.0), DType::F32, &Device::Cpu)
            .unwrap();
        let err = Adam::new(&other, CFG)
            .unwrap()
            .load(&path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.theta is F32 [1, 2] but the model's theta is F32 [3]"),
            "{err}"
        );
        let renamed = VarMap::new();
        renamed
            .get(2, "phi", Init::Const(0.0), DType::F32, &Device::Cpu)
            .unwrap();
        let err = Adam::new(&renamed, CFG)
            .unwrap()
            .load(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no m.phi"), "{err}");
    }
}
