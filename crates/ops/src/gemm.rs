//! The one place in fkd that calls `unsafe` code: a safe, bounds-checked front for the `gemm`
//! crate's matrix product — the kernel behind Candle's own CPU `matmul` — so that the
//! convolution can multiply sub-blocks of its own scratch buffers in place, accumulate into a
//! gradient, and choose its threading per call, none of which `Tensor::matmul` allows.
//!
//! Soundness rests on two checks made before every call: each strided view lies inside its
//! slice (the largest offset it can touch is in bounds), and the destination's elements are
//! pairwise distinct (no two (i, j) share a memory cell, so gemm's threads never write the same
//! cell). The borrow checker already keeps the destination apart from both operands.
#![allow(unsafe_code)]

use candle_core::WithDType;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// Element types the product supports: `f32` and `f64` (the `gemm` crate panics on others, so
/// the bound is sealed to these two).
pub(crate) trait Float: WithDType + sealed::Sealed {}
impl Float for f32 {}
impl Float for f64 {}

/// Whether every element `(i, j)`, `i < rows`, `j < cols`, at offset `i·rs + j·cs` lies in
/// `0..len`.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)));
    matches!(last, Some(last) if last < len && isize::try_from(last).is_ok())
}

/// Whether the offsets `i·rs + j·cs` are pairwise distinct: one stride steps over the whole
/// extent of the other.
fn distinct(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows <= 1 {
        return cols <= 1 || cs >= 1;
    }
    if cols <= 1 {
        return rs >= 1;
    }
    (cs >= 1 && rs >= cols.saturating_mul(cs)) || (rs >= 1 && cs >= rows.saturating_mul(rs))
}

/// A read-only strided matrix: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major `rows × cols` matrix whose rows start `rs` elements apart.
    ///
    /// # Panics
    /// If the matrix does not lie inside `data` (a caller's bug, not an input error).
    pub(crate) fn rows(data: &'a [T], rows: usize, cols: usize, rs: usize) -> Self {
        assert!(
            fits(data.len(), rows, cols, rs, 1),
            "gemm: a {rows}×{cols} view (row stride {rs}) overruns {} elements",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose, as a view of the same data.
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// A writable row-major matrix: element `(i, j)` is `data[i·rs + j]`, `rs ≥ cols`.
#[derive(Debug)]
pub(crate) struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    rs: usize,
}

impl<'a, T> MatMut<'a, T> {
    /// A row-major `rows × cols` destination whose rows start `rs ≥ cols` elements apart.
    ///
    /// # Panics
    /// If the matrix does not lie inside `data` or its rows overlap (a caller's bug).
    pub(crate) fn rows(data: &'a mut [T], rows: usize, cols: usize, rs: usize) -> Self {
        assert!(
            fits(data.len(), rows, cols, rs, 1) && distinct(rows, cols, rs, 1),
            "gemm: a {rows}×{cols} destination (row stride {rs}) overruns {} elements or overlaps itself",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            rs,
        }
    }
}

/// `dst = a · b`, or `dst += a · b` when `accumulate`, on `threads` threads of the current
/// rayon pool (1: the calling thread alone).
///
/// # Panics
/// If the shapes do not chain (`a` is m×k, `b` k×n, `dst` m×n): a caller's bug.
pub(crate) fn matmul<T: Float>(
    dst: MatMut<'_, T>,
    accumulate: bool,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    threads: usize,
) {
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    assert!(
        a.rows == m && b.rows == k && b.cols == n,
        "gemm: {}×{} · {}×{} does not give {m}×{n}",
        a.rows,
        a.cols,
        b.rows,
        b.cols
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst.data[i * dst.rs..][..n].fill(T::zero());
            }
        }
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // Strides fit in isize: `fits` checked every offset, and slices never exceed isize::MAX
    // bytes.
    let s = |v: usize| v as isize;
    // SAFETY: `Mat::rows`/`MatMut::rows` checked that every element of each view lies inside
    // its slice and that the destination's elements are distinct; the shapes chain (asserted
    // above); `dst` is borrowed mutably, so it aliases neither operand; `T` is f32 or f64 (the
    // sealed `Float`), which `gemm` supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            s(dst.rs),
            accumulate,
            a.data.as_ptr(),
            s(a.cs),
            s(a.rs),
            b.data.as_ptr(),
            s(b.cs),
            s(b.rs),
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn products_and_transposes_match_a_naive_loop() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        for threads in [1, 2] {
            let mut c = vec![9.0; m * n];
            matmul(
                MatMut::rows(&mut c, m, n, n),
                false,
                Mat::rows(&a, m, k, k),
                Mat::rows(&b, k, n, n),
                threads,
            );
            let err = c
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-12);
            // Accumulate, with b given as the transpose of its transpose.
            let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            matmul(
                MatMut::rows(&mut c, m, n, n),
                true,
                Mat::rows(&a, m, k, k),
                Mat::rows(&bt, n, k, k).t(),
                threads,
            );
            let err = c
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - 2.0 * y).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-12);
        }
    }

    #[test]
    fn an_empty_inner_dimension_zeroes_or_keeps_the_destination() {
        let mut c = vec![3.0f32; 4];
        matmul(
            MatMut::rows(&mut c, 2, 2, 2),
            true,
            Mat::rows(&[], 2, 0, 0),
            Mat::rows(&[], 0, 2, 2),
            1,
        );
        assert_eq!(c, [3.0; 4]);
        matmul(
            MatMut::rows(&mut c, 2, 2, 2),
            false,
            Mat::rows(&[], 2, 0, 0),
            Mat::rows(&[], 0, 2, 2),
            1,
        );
        assert_eq!(c, [0.0; 4]);
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn views_past_the_end_are_refused() {
        let data = [0.0f32; 5];
        let _ = Mat::rows(&data, 2, 3, 3);
    }

    #[test]
    fn distinct_offsets() {
        assert!(distinct(3, 4, 4, 1));
        assert!(!distinct(3, 4, 3, 1));
        assert!(distinct(3, 4, 1, 3));
        assert!(distinct(1, 4, 0, 1));
        assert!(!distinct(2, 1, 0, 1));
    }
}
