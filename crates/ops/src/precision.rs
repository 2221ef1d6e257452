//! The float precision of the GPU's convolutions and matrix products: plain f32 (FMA), or TF32
//! on tensor cores (f32 storage, 10-bit mantissa products, f32 accumulation), as PyTorch runs
//! its convolutions by default (`torch.backends.cudnn.allow_tf32 = True`). A process-wide
//! setting: CPU code ignores it; on CUDA it sets the math of fkd's cuDNN convolutions and
//! Candle's f32 GEMMs (`candle_core::cuda::set_gemm_reduced_precision_f32`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// The precision of f32 products on a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 products with f32 multiply-adds only.
    F32,
    /// TF32 tensor-core products (cards from NVIDIA Ampere on; elsewhere the same as `F32`).
    #[default]
    Tf32,
}

static TF32: AtomicBool = AtomicBool::new(true);

/// Sets the precision of every later GPU convolution and f32 matrix product in the process.
pub fn set_precision(p: Precision) {
    TF32.store(p == Precision::Tf32, Ordering::Relaxed);
    #[cfg(feature = "cuda")]
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(p == Precision::Tf32);
}

/// The precision in force (TF32 unless [`set_precision`] said otherwise; Candle's own f32
/// GEMMs follow it only once [`set_precision`] has been called).
pub fn precision() -> Precision {
    if TF32.load(Ordering::Relaxed) {
        Precision::Tf32
    } else {
        Precision::F32
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            other => Err(format!(
                "unknown precision {other:?} (expected f32 or tf32)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_what_it_prints_and_names_bad_input() {
        for p in [Precision::F32, Precision::Tf32] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        let err = "bf16".parse::<Precision>().unwrap_err();
        assert!(err.contains("bf16") && err.contains("tf32"), "{err}");
    }
}
