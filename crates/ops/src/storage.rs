//! What every CPU kernel of the crate shares: reading a storage's contiguous data
//! ([`contiguous`], and [`float_kernel!`] to run one kernel body at f32 and f64), zeroed
//! buffers filled by the rayon pool ([`zeros`]), and the window arithmetic of padded sweeps
//! ([`valid_range`]).

use candle_core::{CpuStorage, Layout, Result, WithDType};
use rayon::prelude::*;

/// Runs a kernel over the contiguous data of one or two CPU storages of the same float dtype
/// (f32 or f64) and wraps its `Vec` back into a storage; other dtypes are an error naming the
/// op. The kernel is written once as a closure and pasted into each arm, so each copy is
/// inferred at its own element type.
macro_rules! float_kernel {
    ($name:expr, $kernel:expr, $s1:expr, $l1:expr) => {{
        use candle_core::backend::BackendStorage as _;
        match $s1.dtype() {
            candle_core::DType::F32 => candle_core::CpuStorage::F32($kernel(
                $crate::storage::contiguous::<f32>($name, $s1, $l1)?,
            )),
            candle_core::DType::F64 => candle_core::CpuStorage::F64($kernel(
                $crate::storage::contiguous::<f64>($name, $s1, $l1)?,
            )),
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", $name),
        }
    }};
    ($name:expr, $kernel:expr, $s1:expr, $l1:expr, $s2:expr, $l2:expr) => {{
        use candle_core::backend::BackendStorage as _;
        match ($s1.dtype(), $s2.dtype()) {
            (candle_core::DType::F32, candle_core::DType::F32) => {
                candle_core::CpuStorage::F32($kernel(
                    $crate::storage::contiguous::<f32>($name, $s1, $l1)?,
                    $crate::storage::contiguous::<f32>($name, $s2, $l2)?,
                ))
            }
            (candle_core::DType::F64, candle_core::DType::F64) => {
                candle_core::CpuStorage::F64($kernel(
                    $crate::storage::contiguous::<f64>($name, $s1, $l1)?,
                    $crate::storage::contiguous::<f64>($name, $s2, $l2)?,
                ))
            }
            (a, b) => candle_core::bail!("{}: unsupported dtypes {a:?}, {b:?}", $name),
        }
    }};
}
pub(crate) use float_kernel;

/// The contiguous data that `layout` views in `storage`, or an error naming `op`.
pub(crate) fn contiguous<'a, T: WithDType>(
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
/// thread left the other core idle. A/B on two cores (AVX-512), 3–4 rounds: ResNet-18 at 224
/// pixels, batch 32, +4%; Part 4's deconv net +4%; FaceNet (small maps, under the bound)
/// unchanged, as when an earlier parallel fill of every buffer was measured on it.
pub(crate) fn zeros<T: WithDType>(n: usize) -> Vec<T> {
    if n < PARALLEL_ZEROS {
        return vec![T::zero(); n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(T::zero(), n));
    v
}

/// The range `lo..hi` of output positions `o` whose input position `o·stride + offset − padding`
/// lies in `0..len`.
pub(crate) fn valid_range(
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

    /// The patched Candle copies a transposed matrix in tiles (`third_party/candle-core`,
    /// FKD-PATCH.md): `t().contiguous()` equals a plain loop for sizes around the 16×16 tile,
    /// for a transposed view with an offset (a narrowed matrix), in f32 and f64, and so does
    /// a Linear layer's weight gradient, which arrives as such a view.
    #[test]
    fn transposed_copies_match_a_plain_loop() {
        use candle_core::{DType, Device, Tensor};
        for (r, c) in [(1, 5), (3, 1), (16, 16), (17, 33), (40, 7), (5, 100)] {
            for dtype in [DType::F32, DType::F64] {
                let n = r * (c + 2);
                let base = Tensor::arange(0u32, n as u32, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
                    .reshape((r, c + 2))
                    .unwrap();
                // A (c × r) view with an offset and a row stride of c + 2.
                let view = base.narrow(1, 1, c).unwrap().t().unwrap();
                let got: Vec<Vec<f64>> = view
                    .contiguous()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec2()
                    .unwrap();
                let want: Vec<Vec<f64>> = (0..c)
                    .map(|i| (0..r).map(|j| (j * (c + 2) + 1 + i) as f64).collect())
                    .collect();
                assert_eq!(got, want, "{r}×{c} {dtype:?}");
            }
        }
        // Into a destination at an offset: the second half of a concatenation.
        let m = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let both = Tensor::cat(&[&m.t().unwrap(), &m.t().unwrap()], 0).unwrap();
        let want: Vec<Vec<f32>> = (0..8)
            .map(|i| (0..3).map(|j| (j * 4 + i % 4) as f32).collect())
            .collect();
        assert_eq!(both.to_vec2::<f32>().unwrap(), want);
        let counting = |rows: usize, cols: usize| {
            let t = Tensor::arange(0f32, (rows * cols) as f32, &Device::Cpu).unwrap();
            candle_core::Var::from_tensor(&t.reshape((rows, cols)).unwrap()).unwrap()
        };
        let (x, w) = (counting(3, 4), counting(5, 4));
        let y = x.matmul(&w.t().unwrap()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let gw = g.get(&w).unwrap();
        assert!(gw.is_contiguous());
        // ∂(Σ x·wᵀ)/∂w[o][i] = Σ_b x[b][i] = 12 + 3i.
        let want: Vec<Vec<f32>> = (0..5)
            .map(|_| (0..4).map(|i| 12.0 + 3.0 * i as f32).collect())
            .collect();
        assert_eq!(gw.to_vec2::<f32>().unwrap(), want);
    }

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
