//! xtask: fkd's one command line. It only wires the library crates together; every piece of
//! real work lives in a crate another project could import.
//!
//! `cargo xtask data check|fetch` (`data.rs`); `cargo xtask part1` … `part4` (`part1.rs` …,
//! recipes over the one runner in `runner.rs`; Parts 1–2 share `imm.rs`); `cargo xtask predict`
//! (`predict.rs`); `cargo xtask check-report` (`report_check.rs`); `cargo xtask bench`
//! (`bench.rs`); `cargo xtask fuzz` (`fuzz.rs`, fkd-data's cargo-fuzz targets).

mod bench;
mod calibrate;
mod data;
mod eval_photos;
mod fuzz;
mod imm;
mod latency;
mod measure;
mod part1;
mod part2;
mod part3;
mod part4;
mod predict;
mod progress;
mod report_check;
mod runner;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed memory for reuse: a training step allocates the same large buffers
/// every time, and glibc's malloc would hand them back to the kernel and fault them in again
/// (a third of a FaceNet step, measured with perf).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;

/// fkd: facial keypoint detection on Candle.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Precision of GPU convolutions and f32 matrix products: tf32 (TF32 tensor cores, as
    /// PyTorch's convolutions by default, on cards that have them) or f32. The CPU ignores it.
    #[arg(long, global = true, default_value = "tf32")]
    precision: fkd_models::precision::Precision,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect or download the face data sets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Part 1: nose-tip detection on IMM (4 conv + 2 FC, 80×60, 20 epochs).
    Part1(runner::RunArgs),
    /// Part 2: all 58 IMM points (6 conv + 2 FC, 160×120, 100 epochs, augmentation).
    Part2(runner::RunArgs),
    /// Part 3: 68 points on iBUG 300-W (ResNet-18 on 128×128 face crops; `--size 224` is the
    /// write-up's); `part3 eval` scores a
    /// checkpoint, `part3 predict` writes a Kaggle-style CSV.
    Part3(part3::Part3Args),
    /// Part 4: fully convolutional heatmap nets (`--model fcn-alexnet --dataset imm`, the
    /// write-up's; `--model resnet-deconv --dataset 300w`, Simple Baselines).
    Part4(part4::Part4Args),
    /// Run a trained checkpoint on photos: points drawn (PNG) and written as JSON.
    Predict(predict::PredictArgs),
    /// Measure where YuNet's face boxes sit relative to the 68 points' tight boxes (the map
    /// that places the landmark crops of detected faces).
    CalibrateDetector(calibrate::CalibrateArgs),
    /// Score a 68-point checkpoint photo in, points out on folders of photos with `.pts`
    /// files: detection recall, NME, FR@0.08, AUC@0.08, photos/s.
    EvalPhotos(eval_photos::EvalPhotosArgs),
    /// Training and inference speed and memory of the nets against the PyTorch peer.
    Bench(bench::BenchArgs),
    /// One benchmark measurement in a fresh process (run by `bench`).
    #[command(hide = true)]
    BenchChild(bench::ChildArgs),
    /// Open a part's report.html in headless Chromium and check its table and images.
    CheckReport(report_check::CheckArgs),
    /// Fuzz fkd-data's parsers and image decoding for a fixed time per target (nightly and
    /// cargo-fuzz; not part of CI) and sum up what was found.
    Fuzz(fuzz::FuzzArgs),
}

/// Where the data sets live: `--data DIR`, else `$FKD_DATA`, else `./data`.
#[derive(clap::Args, Clone, Debug)]
pub struct DataRoot {
    /// Data folder [default: $FKD_DATA, else ./data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

impl DataRoot {
    /// The folder to use.
    pub fn path(&self) -> PathBuf {
        self.data
            .clone()
            .or_else(|| std::env::var_os("FKD_DATA").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("data"))
    }
}

/// The device the parts train on by default (`--device auto`): the first GPU when fkd was built
/// with `cuda` or `metal` and the machine has one, else the CPU (with a warning when a GPU build
/// finds no GPU).
pub fn device() -> anyhow::Result<candle_core::Device> {
    let gpu = if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "metal") {
        "metal"
    } else {
        return Ok(candle_core::Device::Cpu);
    };
    match named_device(gpu) {
        Ok(device) => Ok(device),
        Err(e) => {
            tracing::warn!("--device auto: {e:#}; running on the CPU");
            Ok(candle_core::Device::Cpu)
        }
    }
}

/// The device a command's `--device` names: `cpu`, `cuda` / `metal` in a build with that
/// feature, or `auto` (also when the flag is absent): the build's GPU if the machine has one,
/// else the CPU ([`device`]).
pub fn device_arg(name: Option<&str>) -> anyhow::Result<candle_core::Device> {
    match name {
        None | Some("auto") => device(),
        Some(name) => named_device(name),
    }
}

/// How logs name a device: `cpu`, or the GPU with the precision of its products.
pub fn device_label(device: &candle_core::Device) -> String {
    match device {
        candle_core::Device::Cpu => "cpu".into(),
        candle_core::Device::Cuda(_) => format!(
            "cuda ({} convolutions and matrix products)",
            fkd_models::precision::precision()
        ),
        candle_core::Device::Metal(_) => "metal".into(),
    }
}

/// The device a command names: `cpu`, or `cuda` / `metal` in a build with that feature.
pub fn named_device(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "auto" => device(),
        "cuda" if cfg!(feature = "cuda") => candle_core::Device::new_cuda(0).map_err(|e| {
            anyhow::anyhow!("built with --features cuda, but no CUDA device found: {e}")
        }),
        "metal" if cfg!(feature = "metal") => candle_core::Device::new_metal(0).map_err(|e| {
            anyhow::anyhow!("built with --features metal, but no Metal device found: {e}")
        }),
        "cuda" | "metal" => {
            anyhow::bail!("--device {name} needs a build with `--features {name}`")
        }
        other => anyhow::bail!("unknown device {other:?}: cpu, cuda, metal or auto"),
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    fkd_models::precision::set_precision(cli.precision);
    let result = match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Part1(args) => part1::run(&args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Part2(args) => part2::run(&args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Part3(args) => part3::run(&args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Part4(args) => part4::run(&args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Predict(args) => predict::run(&args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(&args).map(|()| std::process::ExitCode::SUCCESS),
        Command::EvalPhotos(args) => {
            eval_photos::run(&args).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::CalibrateDetector(args) => {
            calibrate::run(&args).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::BenchChild(args) => bench::child(&args).map(|()| std::process::ExitCode::SUCCESS),
        Command::CheckReport(args) => {
            report_check::run(&args).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Fuzz(args) => fuzz::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The real data folder for tests (`FKD_DATA`), or `None` when it is unset outside CI (the
/// test then passes after saying so; under `CI=true` it fails).
#[cfg(test)]
pub fn test_data_root() -> Option<PathBuf> {
    match std::env::var_os("FKD_DATA").map(PathBuf::from) {
        Some(root) if root.is_dir() => Some(root),
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "real data not found (FKD_DATA={other:?})"
            );
            eprintln!("note: FKD_DATA not set; skipping");
            None
        }
    }
}
