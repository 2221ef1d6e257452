//! Build script of fkd-ops: with the `cuda` feature, compiles the CUDA kernels of
//! `src/cuda/kernels.cu` to PTX with nvcc (as candle-kernels does for Candle's), so that
//! the `cuda` module can embed them; without it, does nothing.
//!
//! nvcc is taken from `NVCC`, else `$CUDA_HOME/bin/nvcc`, else `PATH`. The PTX targets
//! `compute_$CUDA_COMPUTE_CAP`, default 75 (Turing, the oldest that CUDA 13 builds for): the
//! driver compiles PTX for the card it runs on, so one PTX serves every newer GPU.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let src = "src/cuda/kernels.cu";
    println!("cargo:rerun-if-changed={src}");
    for var in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let nvcc = std::env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CUDA_HOME")
                .map(|home| PathBuf::from(home).join("bin").join("nvcc"))
                .filter(|p| p.exists())
        })
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "75".to_string());
    let cap = cap.trim().replace('.', "");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("fkd_kernels.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg(src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("fkd-models: `{} --ptx {src}` failed ({s})", nvcc.display()),
        Err(e) => panic!(
            "fkd-models: cannot run nvcc ({}: {e}); the `cuda` feature needs the CUDA toolkit \
             (set NVCC or CUDA_HOME; see docs/cuda.md)",
            nvcc.display()
        ),
    }
}
