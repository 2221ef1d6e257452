//! `cargo xtask bench`: training and inference throughput (images/s) and peak memory of
//! NoseNet, FaceNet and ResNet-18 at their default batch sizes, side by side with the PyTorch
//! peer on the same machine, plus the data pipeline alone.
//!
//! Each measurement runs in a fresh child process (so its peak RSS is its own): fkd's is this
//! binary's hidden `bench-child` command, the peer's is `xtask/bench/peer.py`, which builds the
//! peer's own nets from `shared/bench/`. Both time the same work: random data, a training step
//! = forward + MSE + backward + Adam, then forward in inference mode, after warm-up steps and for
//! at least `--seconds`. The two alternate (fkd first in even rounds, the peer first in odd
//! ones) for `--repeats` rounds; the table shows medians and their ratio fkd/peer, and each
//! side's spread (fastest over slowest round). Then single-face latency, the shape of
//! `predict`: batch 1 through Part 4's default net at 128 pixels and Part 3's ResNet-18 at 128
//! and 224, with and without the flip test, every call timed; median and p95 ms per face.

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use fkd_models::{ConvRegressor, ConvRegressorConfig, ResNet18, ResNet18Config};
use fkd_train::Model;
use fkd_train::optim::{Adam, AdamConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::latency::{
    Face, LatencyMode, LatencyRow, LatencySample, Rounds, child_latency, latency_rows,
    measure_latency, print_latency,
};
use crate::measure::{alternate, fkd_child, median, run_json, spread};

/// `xtask/bench/peer.py`: measures the peer's nets (from `--peer-dir`) as `bench-child` does.
const PEER_SCRIPT: &str = include_str!("../bench/peer.py");

/// The nets measured, with the batch size their part trains with. `deconv` is Part 4's Simple
/// Baselines net as Part 4 trains it by default: 128-pixel input, 68 maps of 32×32, transposed
/// convs of `part4::DECONV_CHANNELS` channels (the peer is told the same). `deconv-head` is
/// that net's upsampling head alone (three transposed convs with their norms and the 1×1
/// heatmap conv) on layer4's 512 × 4 × 4 features, the input's gradient included, as the
/// encoder would need it.
const MODELS: [(&str, usize); 5] = [
    ("nose", 4),
    ("face", 8),
    ("resnet18", 8),
    ("deconv", 16),
    ("deconv-head", 16),
];

/// Every name `--models` takes, for error messages (from [`MODELS`]).
fn model_names() -> String {
    MODELS.map(|(m, _)| m).join(", ")
}

/// `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Device for both sides: cpu, or cuda/metal in a build with that feature (the peer runs
    /// on the same device).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "metal"])]
    device: String,
    /// Also write every sample and the medians as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Rounds of (fkd, peer) measurements; the table shows medians.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Minimum timed seconds per measurement (training and inference each).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Threads for both sides (RAYON_NUM_THREADS for fkd, torch.set_num_threads for the peer).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Batch sizes to measure every net at (comma-separated) instead of each net's default
    /// (nose 4, face 8, resnet18 8, deconv 16, deconv-head 16); the GPU targets use 32,128.
    #[arg(long, value_delimiter = ',')]
    batches: Option<Vec<usize>>,
    /// Single-face latency (batch 1, inference, median and p95 ms per face, with and without
    /// the flip test) of Part 4's default net at 128 pixels and Part 3's at 128 and 224.
    #[arg(long, value_enum, default_value_t = LatencyMode::Also)]
    latency: LatencyMode,
    /// Nets to measure (comma-separated): nose, face, resnet18, deconv, deconv-head.
    #[arg(long, value_delimiter = ',', default_values_t = MODELS.map(|(m, _)| m.to_string()))]
    models: Vec<String>,
    /// Python with torch and torchvision for the peer, or `none` to measure fkd alone.
    #[arg(long, default_value = "/opt/torchpeer/bin/python")]
    peer_python: String,
    /// Folder with the peer's scripts (torch_imm.py).
    #[arg(long, default_value = "../shared/bench")]
    peer_dir: PathBuf,
    #[command(flatten)]
    root: crate::DataRoot,
}

impl BenchArgs {
    /// What the latency rounds need of the command line.
    fn rounds(&self) -> Rounds<'_> {
        Rounds {
            repeats: self.repeats,
            seconds: self.seconds,
            threads: self.threads,
            device: &self.device,
            peer_dir: &self.peer_dir,
        }
    }
}

/// The hidden per-measurement child: `cargo xtask bench-child --model face --batch 8`.
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    #[arg(long)]
    model: String,
    #[arg(long)]
    batch: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Skip the inference measurement (for profiling the training step alone).
    #[arg(long)]
    train_only: bool,
    /// Also print the mean milliseconds of a training step's forward, backward and optimiser
    /// phases (on stderr); with `--latency`, each fused op's milliseconds per face.
    #[arg(long)]
    phases: bool,
    /// Measure single-face latency instead: batch 1, inference, each call timed (`deconv` or
    /// `resnet18` at `--size`).
    #[arg(long)]
    latency: bool,
    /// The square input side for `--latency`.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// With `--latency`: the flip test, a second pass on the mirrored face.
    #[arg(long)]
    flip: bool,
}

/// One measurement, as both sides print it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    #[serde(rename = "impl")]
    implementation: String,
    model: String,
    batch: usize,
    train_images_per_s: f64,
    fwd_images_per_s: f64,
    peak_rss_mb: f64,
    /// The most GPU memory the tensors held at once (fkd: the CUDA memory pool's high-water
    /// mark; PyTorch: `max_memory_allocated`); absent on the CPU.
    #[serde(default)]
    peak_gpu_mb: Option<f64>,
    /// fkd's side on a GPU: the card, and whether its tensor cores run TF32.
    #[serde(default)]
    gpu: Option<(String, bool)>,
}

/// Medians of one net's samples.
#[derive(Debug, Serialize)]
struct Row {
    model: String,
    batch: usize,
    fkd_train: f64,
    peer_train: Option<f64>,
    train_ratio: Option<f64>,
    fkd_fwd: f64,
    peer_fwd: Option<f64>,
    fwd_ratio: Option<f64>,
    fkd_peak_mb: f64,
    peer_peak_mb: Option<f64>,
    fkd_gpu_mb: Option<f64>,
    peer_gpu_mb: Option<f64>,
    /// Fastest over slowest round's training images/s: how steady each side was.
    fkd_train_spread: f64,
    peer_train_spread: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    device: String,
    precision: String,
    threads: usize,
    repeats: usize,
    rows: Vec<Row>,
    latency: Vec<LatencyRow>,
    pipeline: Option<Pipeline>,
    samples: Vec<Sample>,
    latency_samples: Vec<LatencySample>,
}

#[derive(Debug, Serialize)]
struct Pipeline {
    what: String,
    images_per_s: f64,
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let peer = (args.peer_python != "none").then_some(&args.peer_python);
    // Fail before any measurement when the build cannot reach the device.
    crate::named_device(&args.device)?;
    let script = peer_script()?;
    if peer.is_some() && !args.peer_dir.join("torch_imm.py").exists() {
        bail!(
            "{} has no torch_imm.py: pass --peer-dir (or --peer-python none to measure fkd alone)",
            args.peer_dir.display()
        );
    }
    let cases = if args.latency == LatencyMode::Only {
        Vec::new()
    } else {
        cases(args)?
    };
    let samples = measure(args, &exe, &script, peer, &cases)?;
    let rows: Vec<Row> = cases
        .iter()
        .map(|(name, batch)| row(name, *batch, &samples))
        .collect();
    let latency_samples = if args.latency == LatencyMode::Off {
        Vec::new()
    } else {
        measure_latency(&args.rounds(), &exe, &script, peer)?
    };
    let latency = latency_rows(&latency_samples);

    let pipeline = if args.latency == LatencyMode::Only {
        None
    } else {
        pipeline(args)?
    };
    let gpu = samples.iter().find_map(|s| s.gpu.clone());
    if let Some((name, tf32)) = &gpu {
        let cores = if *tf32 {
            "has TF32 tensor cores"
        } else {
            "has no TF32: tf32 runs as f32"
        };
        println!("GPU: {name}, {cores}");
    }
    if !rows.is_empty() {
        print_table(&rows, args, pipeline.as_ref());
    }
    if !latency.is_empty() {
        print_latency(&latency, &args.rounds());
    }
    if let Some(path) = &args.json {
        let report = Report {
            machine: format!("{} ({} threads used)", cpu_name(), args.threads),
            device: match &gpu {
                Some((name, _)) => format!("{} ({name})", args.device),
                None => args.device.clone(),
            },
            precision: gpu_precision(args),
            threads: args.threads,
            repeats: args.repeats,
            rows,
            latency,
            pipeline,
            samples,
            latency_samples,
        };
        let json = serde_json::to_string_pretty(&report)? + "\n";
        fkd_core::io::write_bytes_atomic(path, json.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The peer's driver script, written to a temporary file: it travels inside the binary, so
/// `bench` runs from any folder and on machines without the source tree.
fn peer_script() -> anyhow::Result<tempfile::TempPath> {
    let mut script = tempfile::Builder::new()
        .prefix("fkd-peer-")
        .suffix(".py")
        .tempfile()
        .context("cannot write the peer's script to the temporary folder")?;
    std::io::Write::write_all(&mut script, PEER_SCRIPT.as_bytes())
        .context("cannot write the peer's script to the temporary folder")?;
    Ok(script.into_temp_path())
}

/// The (net, batch) pairs to measure, in table order: each `--models` net at its part's batch
/// or at every `--batches` size.
fn cases(args: &BenchArgs) -> anyhow::Result<Vec<(String, usize)>> {
    let mut cases = Vec::new();
    for name in &args.models {
        let default = MODELS
            .iter()
            .find(|(m, _)| m == name)
            .map(|&(_, b)| b)
            .with_context(|| format!("unknown model {name:?}: {}", model_names()))?;
        match &args.batches {
            Some(batches) => cases.extend(batches.iter().map(|&b| (name.clone(), b))),
            None => cases.push((name.clone(), default)),
        }
    }
    if let Some(b) = cases.iter().find(|c| c.1 == 0) {
        bail!("--batches: {} needs a batch of at least 1", b.0);
    }
    Ok(cases)
}

/// Every round of every case: fkd's child and the peer's, alternating which goes first.
fn measure(
    args: &BenchArgs,
    exe: &Path,
    script: &Path,
    peer: Option<&String>,
    cases: &[(String, usize)],
) -> anyhow::Result<Vec<Sample>> {
    // `--precision` (a global flag, already in force here) goes to both sides.
    let precision = fkd_models::precision::precision().to_string();
    let mut samples = Vec::new();
    for round in 0..args.repeats {
        for (name, batch) in cases {
            let (name, batch) = (name.as_str(), *batch);
            let fkd = || {
                let mut cmd = fkd_child(exe, args.threads);
                cmd.args(["--model", name, "--device", &args.device])
                    .args(["--batch", &batch.to_string(), "--precision", &precision])
                    .args(["--seconds", &args.seconds.to_string()]);
                run_json::<Sample>(cmd, &format!("fkd {name}"))
            };
            let torch = |python: &String| {
                let mut cmd = Command::new(python);
                cmd.arg(script)
                    .arg("--peer-dir")
                    .arg(&args.peer_dir)
                    .args(["--model", name, "--batch", &batch.to_string()])
                    .args(["--threads", &args.threads.to_string()])
                    .args(["--seconds", &args.seconds.to_string()])
                    .args(["--device", &args.device, "--precision", &precision])
                    .args([
                        "--deconv-channels",
                        &crate::part4::DECONV_CHANNELS.to_string(),
                    ]);
                run_json::<Sample>(cmd, &format!("PyTorch {name}"))
            };
            let pair = alternate(round, fkd, peer.map(|p| move || torch(p)))?;
            for s in &pair {
                tracing::info!(
                    round,
                    model = %s.model,
                    implementation = %s.implementation,
                    train = format!("{:.1}", s.train_images_per_s),
                    fwd = format!("{:.1}", s.fwd_images_per_s),
                    peak_mb = format!("{:.0}", s.peak_rss_mb),
                );
            }
            samples.extend(pair);
        }
    }
    Ok(samples)
}

/// One table row: the medians over rounds of both sides for (`name`, `batch`), and ratios.
fn row(name: &str, batch: usize, samples: &[Sample]) -> Row {
    let side = |fkd: bool| {
        samples.iter().filter(move |s| {
            s.model == name && s.batch == batch && s.implementation.starts_with("fkd") == fkd
        })
    };
    let of = |fkd: bool, f: fn(&Sample) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = side(fkd).filter_map(f).collect();
        (!v.is_empty()).then(|| median(v))
    };
    let trains = |fkd: bool| -> Vec<f64> { side(fkd).map(|s| s.train_images_per_s).collect() };
    let fkd_train = of(true, |s| Some(s.train_images_per_s)).unwrap_or(f64::NAN);
    let fkd_fwd = of(true, |s| Some(s.fwd_images_per_s)).unwrap_or(f64::NAN);
    let peer_train = of(false, |s| Some(s.train_images_per_s));
    let peer_fwd = of(false, |s| Some(s.fwd_images_per_s));
    Row {
        model: name.to_string(),
        batch,
        fkd_train,
        peer_train,
        train_ratio: peer_train.map(|p| fkd_train / p),
        fkd_fwd,
        peer_fwd,
        fwd_ratio: peer_fwd.map(|p| fkd_fwd / p),
        fkd_peak_mb: of(true, |s| Some(s.peak_rss_mb)).unwrap_or(f64::NAN),
        peer_peak_mb: of(false, |s| Some(s.peak_rss_mb)),
        fkd_gpu_mb: of(true, |s| s.peak_gpu_mb),
        peer_gpu_mb: of(false, |s| s.peak_gpu_mb),
        fkd_train_spread: spread(&trains(true)),
        peer_train_spread: Some(spread(&trains(false))).filter(|s| s.is_finite()),
    }
}

/// What the table says of the precision: on a GPU, the products' precision on both sides.
fn gpu_precision(args: &BenchArgs) -> String {
    match (args.device.as_str(), fkd_models::precision::precision()) {
        ("cpu", _) => "f32 (CPU)".into(),
        (_, fkd_models::precision::Precision::Tf32) => {
            "tf32 (TF32 tensor-core convolutions and matrix products on both sides; f32 on cards without TF32)".into()
        }
        (_, fkd_models::precision::Precision::F32) => "f32 (no TF32 on either side)".into(),
    }
}

fn print_table(rows: &[Row], args: &BenchArgs, pipeline: Option<&Pipeline>) {
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("–".to_string(), |v| format!("{v:.digits$}"));
    println!(
        "{} · device {} · precision {} · {} threads · median of {} · images/s (ratio = fkd / PyTorch)",
        cpu_name(),
        args.device,
        gpu_precision(args),
        args.threads,
        args.repeats
    );
    let gpu = args.device != "cpu";
    let (gpu_head, gpu_rule) = if gpu {
        (" fkd GPU MB | PyTorch GPU MB |", "---|---|")
    } else {
        ("", "")
    };
    println!(
        "| net | batch | fkd train | PyTorch train | ratio | fkd infer | PyTorch infer | ratio | fkd peak MB | PyTorch peak MB | fkd / PyTorch train spread |{gpu_head}"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|{gpu_rule}");
    for r in rows {
        let gpu_cells = if gpu {
            format!(" {} | {} |", opt(r.fkd_gpu_mb, 0), opt(r.peer_gpu_mb, 0))
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {:.1} | {} | {} | {:.1} | {} | {} | {:.0} | {} | {:.2} / {} |{gpu_cells}",
            r.model,
            r.batch,
            r.fkd_train,
            opt(r.peer_train, 1),
            opt(r.train_ratio, 2),
            r.fkd_fwd,
            opt(r.peer_fwd, 1),
            opt(r.fwd_ratio, 2),
            r.fkd_peak_mb,
            opt(r.peer_peak_mb, 0),
            r.fkd_train_spread,
            opt(r.peer_train_spread, 2),
        );
    }
    if let Some(p) = pipeline {
        println!("data pipeline: {} — {:.0} images/s", p.what, p.images_per_s);
    }
    println!("(spread: the fastest round's training images/s over the slowest's)");
}

/// The data pipeline alone: Part 2's training loader (decode, augment with the default recipe,
/// resize to 160×120, batch of 8) over the IMM training persons, two epochs. Skipped, with a
/// note, when the IMM data is not installed.
fn pipeline(args: &BenchArgs) -> anyhow::Result<Option<Pipeline>> {
    use fkd_augment::{AugmentedResize, Augmenter};
    use fkd_data::batch::Loader;
    use fkd_data::dataset::{DataSet, LoadPolicy};

    let dir = args.root.path().join(fkd_data::fetch::IMM.folder);
    if !fkd_data::fetch::is_installed(&fkd_data::fetch::IMM, &args.root.path()) {
        tracing::warn!(
            "no IMM data under {}: data pipeline not measured",
            dir.display()
        );
        return Ok(None);
    }
    use crate::runner::Part;
    let part = crate::part2::part();
    let recipe = part.defaults();
    let imm = DataSet::imm(&dir, LoadPolicy::Strict)?;
    let (train, _) = imm.split_imm_persons();
    let augmenter = recipe
        .augment
        .map(|cfg| Augmenter::new(cfg, fkd_core::Layout::IMM58))
        .transpose()?;
    let step: AugmentedResize = part.step(augmenter);
    let loader = Loader::new(train.samples.clone(), step, recipe.batch).shuffled(0);
    // Epoch 0 warms the page cache (and any image cache); epochs 1–2 are timed.
    for b in loader.epoch(0) {
        b?;
    }
    let started = Instant::now();
    let mut n = 0;
    for epoch in 1..3 {
        for b in loader.epoch(epoch) {
            n += b?.indices.len();
        }
    }
    Ok(Some(Pipeline {
        what: format!(
            "Part 2 training loader, IMM, decode + augment + resize to 160×120 + batch, {} threads",
            rayon::current_num_threads()
        ),
        images_per_s: n as f64 / started.elapsed().as_secs_f64(),
    }))
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Times `step` after `warmup` calls until `seconds` have passed (and at least 3 calls):
/// images per second.
fn timed(
    batch: usize,
    warmup: usize,
    seconds: f64,
    mut step: impl FnMut() -> candle_core::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..warmup {
        step()?;
    }
    let (started, mut n) = (Instant::now(), 0usize);
    loop {
        step()?;
        n += 1;
        let dt = started.elapsed().as_secs_f64();
        if dt >= seconds && n >= 3 {
            return Ok((n * batch) as f64 / dt);
        }
    }
}

/// The op profile of `steps` training steps (on stderr), per step: each fused op's time, and
/// what of the backward's `backward_s` the ops do not account for (Candle's autograd: its
/// gradient sums, and the ops Candle runs itself, such as the loss).
fn print_profile(table: Vec<fkd_models::ops::profile::Entry>, steps: usize, backward_s: f64) {
    let per_step = |s: f64| 1000.0 * s / steps as f64;
    let ops_bwd: f64 = table
        .iter()
        .filter(|e| e.name.contains(" bwd"))
        .map(|e| e.seconds)
        .sum();
    eprintln!(
        "backward {:.1} ms per step: fused ops {:.1} ms, the rest (Candle) {:.1} ms",
        per_step(backward_s),
        per_step(ops_bwd),
        per_step(backward_s - ops_bwd)
    );
    crate::measure::print_ops(table, steps);
}

/// `bench-child`: measures one net in this process and prints one JSON line.
pub fn child(args: &ChildArgs) -> anyhow::Result<()> {
    let device = crate::named_device(&args.device)?;
    if args.latency {
        return child_latency(
            &Face {
                model: &args.model,
                size: args.size,
                flip: args.flip,
                warmup: args.warmup,
                seconds: args.seconds,
                phases: args.phases,
            },
            &device,
        );
    }
    let varmap = VarMap::new();
    let vb = fkd_models::seeded_var_builder(&varmap, 0, DType::F32, &device);
    // Input channels and (height, width) of `x`.
    let mut channels = 1;
    let (net, (h, w), out): (Box<dyn Model + Sync>, _, Vec<usize>) = match args.model.as_str() {
        "nose" | "face" => {
            let cfg = if args.model == "nose" {
                ConvRegressorConfig::nose()
            } else {
                ConvRegressorConfig::face()
            };
            let (input, out) = (cfg.input, cfg.out);
            (Box::new(ConvRegressor::new(&cfg, vb)?), input, vec![out])
        }
        "resnet18" => {
            let cfg = ResNet18Config::part3();
            (
                Box::new(ResNet18::new(&cfg, vb)?),
                (224, 224),
                vec![cfg.out],
            )
        }
        "deconv" => {
            let cfg = fkd_models::ResNetDeconvConfig {
                deconv_channels: crate::part4::DECONV_CHANNELS,
                ..fkd_models::ResNetDeconvConfig::new(68, (128, 128))
            };
            let (mh, mw) = cfg.map_hw(cfg.input).context("the deconv net's map size")?;
            (
                Box::new(fkd_models::ResNetDeconv::new(&cfg, vb)?),
                cfg.input,
                vec![cfg.points, mh, mw],
            )
        }
        "deconv-head" => {
            let cfg = fkd_models::ResNetDeconvConfig {
                deconv_channels: crate::part4::DECONV_CHANNELS,
                ..fkd_models::ResNetDeconvConfig::new(68, (128, 128))
            };
            let (mh, mw) = cfg.map_hw(cfg.input).context("the deconv net's map size")?;
            let head = fkd_models::DeconvHead::new(
                fkd_models::resnet::TRUNK_CHANNELS,
                cfg.deconv_channels,
                cfg.deconv_layers,
                cfg.points,
                vb,
            )?;
            channels = fkd_models::resnet::TRUNK_CHANNELS;
            let k = 1 << cfg.deconv_layers;
            (Box::new(head), (mh / k, mw / k), vec![cfg.points, mh, mw])
        }
        other => bail!("unknown model {other:?}: {}", model_names()),
    };
    let x = (Tensor::rand(0f32, 1f32, (args.batch, channels, h, w), &device)? - 0.5)?;
    // The head's input stands for the encoder's output: a variable, so that training computes
    // its gradient as the whole net would (the peer sets `requires_grad`).
    let x = if channels > 1 {
        candle_core::Var::from_tensor(&x)?.as_tensor().clone()
    } else {
        x
    };
    let y_shape: Vec<usize> = std::iter::once(args.batch).chain(out).collect();
    let y = Tensor::rand(0f32, 1f32, y_shape, &device)?;
    let mut opt = Adam::new(
        &varmap,
        AdamConfig {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        },
    )?;
    let sync = |t: &Tensor| -> candle_core::Result<()> {
        if !matches!(device, Device::Cpu) {
            t.device().synchronize()?;
        }
        Ok(())
    };
    // On a worker of rayon's pool, as `fkd_train::fit` runs its steps.
    let train = timed(args.batch, args.warmup, args.seconds, || {
        fkd_train::on_pool(|| {
            let loss = fkd_train::loss::mse(&net.forward_t(&x, true)?, &y)?;
            opt.backward_step(&loss)?;
            sync(&loss)
        })
    })?;
    if args.phases {
        let (mut fwd_s, mut bwd_s, mut opt_s, n) = (0.0, 0.0, 0.0, 20);
        fkd_models::ops::profile::enable(true);
        fkd_models::ops::profile::take();
        for _ in 0..n {
            let t = Instant::now();
            let loss = fkd_train::loss::mse(&net.forward_t(&x, true)?, &y)?;
            sync(&loss)?;
            fwd_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let grads = loss.backward()?;
            bwd_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            opt.step(&grads)?;
            opt_s += t.elapsed().as_secs_f64();
        }
        let ms = |s: f64| 1000.0 * s / n as f64;
        eprintln!(
            "{}: forward {:.1} ms, backward {:.1} ms, optimiser {:.1} ms per step of {}",
            args.model,
            ms(fwd_s),
            ms(bwd_s),
            ms(opt_s),
            args.batch
        );
        fkd_models::ops::profile::enable(false);
        print_profile(fkd_models::ops::profile::take(), n, bwd_s);
    }
    let fwd = if args.train_only {
        f64::NAN
    } else {
        timed(args.batch, args.warmup, args.seconds, || {
            fkd_train::on_pool(|| {
                let p = net.forward_t(&x, false)?;
                sync(&p)
            })
        })?
    };
    let sample = Sample {
        implementation: format!("fkd-{}", env!("CARGO_PKG_VERSION")),
        model: args.model.clone(),
        batch: args.batch,
        train_images_per_s: train,
        fwd_images_per_s: fwd,
        peak_rss_mb: peak_rss_mb(),
        peak_gpu_mb: fkd_models::ops::gpu_peak_bytes(&device)?.map(|b| b as f64 / (1 << 20) as f64),
        gpu: fkd_models::ops::gpu_description(&device)?,
    };
    println!("{}", serde_json::to_string(&sample)?);
    Ok(())
}
