//! [`ReluMask`], `grad · (y > 0)`: the backward of a ReLU from its output, as one op on the CPU
//! (f32, f64) and on CUDA (f32); the batch norm's and the CUDA ReLU's backward use it.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, WithDType};
use rayon::prelude::*;

use crate::storage::{float_kernel, zeros};

/// `grad · (y > 0)`: a ReLU's backward from its output, on the CPU (f32, f64) and on CUDA
/// (f32, the `relu_mask` kernel).
pub(crate) struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "fkd-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn mask<T: WithDType>(grad: &[T], y: &[T]) -> Vec<T> {
            let mut out = zeros(grad.len());
            out.par_chunks_mut(1 << 14)
                .zip(grad.par_chunks(1 << 14).zip(y.par_chunks(1 << 14)))
                .for_each(|(d, (g, y))| {
                    for ((d, &g), &y) in d.iter_mut().zip(g).zip(y) {
                        *d = if y > T::zero() { g } else { T::zero() };
                    }
                });
            out
        }
        let out = float_kernel!(self.name(), mask, s1, l1, s2, l2);
        Ok((out, Shape::from(l1.dims())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::launch::relu_mask(self.name(), (s1, l1), (s2, l2))
    }
}
