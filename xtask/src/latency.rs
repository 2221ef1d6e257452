//! `cargo xtask bench`'s single-face latency, the shape of `predict`: batch 1 through Part 4's
//! default net at 128 pixels and Part 3's ResNet-18 at 128 and 224, with and without the flip
//! test, every call timed; the median and p95 ms per face of fkd's child (`bench-child
//! --latency`) and of the PyTorch peer (`peer.py --latency`), alternating as the throughput
//! rounds do.

use crate::measure::{alternate, fkd_child, median, quantile, run_json};
use anyhow::bail;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use fkd_models::{ResNet18, ResNet18Config};
use fkd_train::Model;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The single-face latency cases: (net, input side), each without and with the flip test.
/// `deconv` is Part 4's default net, `resnet18` Part 3's regression net.
pub(crate) const LATENCY: [(&str, usize); 3] =
    [("deconv", 128), ("resnet18", 128), ("resnet18", 224)];

/// `--latency`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyMode {
    /// Throughput, then single-face latency.
    Also,
    /// Throughput only.
    Off,
    /// Single-face latency only.
    Only,
}

/// One latency measurement, as both sides print it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencySample {
    #[serde(rename = "impl")]
    implementation: String,
    model: String,
    size: usize,
    flip: bool,
    median_ms: f64,
    p95_ms: f64,
    calls: usize,
}

/// Medians over rounds of one latency case.
#[derive(Debug, Serialize)]
pub(crate) struct LatencyRow {
    model: String,
    size: usize,
    flip: bool,
    fkd_median_ms: f64,
    fkd_p95_ms: f64,
    peer_median_ms: Option<f64>,
    peer_p95_ms: Option<f64>,
}

/// What the latency rounds share with `bench`'s throughput rounds.
pub(crate) struct Rounds<'a> {
    pub(crate) repeats: usize,
    /// Minimum timed seconds per measurement.
    pub(crate) seconds: f64,
    /// Threads for both sides.
    pub(crate) threads: usize,
    pub(crate) device: &'a str,
    /// The peer's scripts (`../shared/bench`).
    pub(crate) peer_dir: &'a Path,
}

/// One `bench-child --latency` measurement.
pub(crate) struct Face<'a> {
    pub(crate) model: &'a str,
    /// Square input side.
    pub(crate) size: usize,
    pub(crate) flip: bool,
    pub(crate) warmup: usize,
    pub(crate) seconds: f64,
    /// Afterwards, print each fused op's mean milliseconds per face (on stderr).
    pub(crate) phases: bool,
}

/// Every round of every latency case, fkd's child and the peer's alternating as in `bench`'s
/// throughput rounds.
pub(crate) fn measure_latency(
    args: &Rounds<'_>,
    exe: &Path,
    script: &Path,
    peer: Option<&String>,
) -> anyhow::Result<Vec<LatencySample>> {
    let precision = fkd_models::precision::precision().to_string();
    let mut samples = Vec::new();
    for round in 0..args.repeats {
        for (name, size) in LATENCY {
            for flip in [false, true] {
                let size_arg = size.to_string();
                let flip_arg: &[&str] = if flip { &["--flip"] } else { &[] };
                let fkd = || {
                    let mut cmd = fkd_child(exe, args.threads);
                    cmd.args(["--latency", "--model", name, "--batch", "1"])
                        .args(["--size", &size_arg, "--device", args.device])
                        .args(["--precision", &precision])
                        .args(["--seconds", &args.seconds.to_string()])
                        .args(flip_arg);
                    run_json::<LatencySample>(cmd, &format!("fkd {name} latency"))
                };
                let torch = |python: &String| {
                    let mut cmd = Command::new(python);
                    cmd.arg(script)
                        .arg("--peer-dir")
                        .arg(args.peer_dir)
                        .args(["--latency", "--model", name, "--batch", "1"])
                        .args(["--size", &size_arg])
                        .args(["--threads", &args.threads.to_string()])
                        .args(["--seconds", &args.seconds.to_string()])
                        .args(["--device", args.device, "--precision", &precision])
                        .args([
                            "--deconv-channels",
                            &crate::part4::DECONV_CHANNELS.to_string(),
                        ])
                        .args(flip_arg);
                    run_json::<LatencySample>(cmd, &format!("PyTorch {name} latency"))
                };
                let pair = alternate(round, fkd, peer.map(|p| move || torch(p)))?;
                for s in &pair {
                    tracing::info!(
                        round,
                        model = %s.model,
                        size = s.size,
                        flip = s.flip,
                        implementation = %s.implementation,
                        median_ms = format!("{:.2}", s.median_ms),
                        p95_ms = format!("{:.2}", s.p95_ms),
                    );
                }
                samples.extend(pair);
            }
        }
    }
    Ok(samples)
}

/// Medians over rounds of each latency case's median and p95, in [`LATENCY`] order.
pub(crate) fn latency_rows(samples: &[LatencySample]) -> Vec<LatencyRow> {
    let mut rows = Vec::new();
    for (name, size) in LATENCY {
        for flip in [false, true] {
            let of = |fkd: bool, f: fn(&LatencySample) -> f64| -> Option<f64> {
                let v: Vec<f64> = samples
                    .iter()
                    .filter(|s| {
                        s.model == name
                            && s.size == size
                            && s.flip == flip
                            && s.implementation.starts_with("fkd") == fkd
                    })
                    .map(f)
                    .collect();
                (!v.is_empty()).then(|| median(v))
            };
            let Some(fkd_median_ms) = of(true, |s| s.median_ms) else {
                continue;
            };
            rows.push(LatencyRow {
                model: name.to_string(),
                size,
                flip,
                fkd_median_ms,
                fkd_p95_ms: of(true, |s| s.p95_ms).unwrap_or(f64::NAN),
                peer_median_ms: of(false, |s| s.median_ms),
                peer_p95_ms: of(false, |s| s.p95_ms),
            });
        }
    }
    rows
}

pub(crate) fn print_latency(rows: &[LatencyRow], args: &Rounds<'_>) {
    let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    let ratio =
        |peer: Option<f64>, fkd: f64| peer.map_or("–".to_string(), |p| format!("{:.2}", p / fkd));
    println!(
        "single-face latency · batch 1 · {} threads · medians over {} rounds of each round's \
         median and p95 ms per face (ratio = PyTorch ms / fkd ms: above 1, fkd is faster)",
        args.threads, args.repeats
    );
    println!(
        "| net | input | flip test | fkd median | PyTorch median | ratio | fkd p95 | PyTorch p95 | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {s}×{s} | {} | {:.2} | {} | {} | {:.2} | {} | {} |",
            r.model,
            if r.flip { "on" } else { "off" },
            r.fkd_median_ms,
            opt(r.peer_median_ms),
            ratio(r.peer_median_ms, r.fkd_median_ms),
            r.fkd_p95_ms,
            opt(r.peer_p95_ms),
            ratio(r.peer_p95_ms, r.fkd_p95_ms),
            s = r.size,
        );
    }
}

/// `bench-child --latency`: one face at a time through `args.model` at `args.size`, in
/// inference mode as `predict` runs it (the input's mirror image through a second pass for the
/// flip test, each output read back to the host); prints one JSON line of median and p95 ms.
pub(crate) fn child_latency(args: &Face<'_>, device: &Device) -> anyhow::Result<()> {
    let varmap = VarMap::new();
    let vb = fkd_models::seeded_var_builder(&varmap, 0, DType::F32, device);
    let s = args.size;
    let net: Box<dyn Model + Sync> = match args.model {
        "resnet18" => Box::new(ResNet18::new(
            &ResNet18Config::resnet18(1, 136, (s, s)),
            vb,
        )?),
        "deconv" => Box::new(fkd_models::ResNetDeconv::new(
            &fkd_models::ResNetDeconvConfig {
                deconv_channels: crate::part4::DECONV_CHANNELS,
                ..fkd_models::ResNetDeconvConfig::new(68, (s, s))
            },
            vb,
        )?),
        other => bail!("--latency measures resnet18 or deconv, not {other:?}"),
    };
    let x = (Tensor::rand(0f32, 1f32, (1, 1, s, s), device)? - 0.5)?;
    let reversed: Vec<u32> = (0..s as u32).rev().collect();
    let reversed = Tensor::new(reversed.as_slice(), device)?;
    // As the landmarker runs it: each pass on rayon's pool.
    let face = || -> candle_core::Result<()> {
        let out = fkd_train::on_pool(|| net.forward_t(&x, false))?;
        std::hint::black_box(out.flatten_all()?.to_vec1::<f32>()?);
        if args.flip {
            let mirrored = x.index_select(&reversed, 3)?;
            let m = fkd_train::on_pool(|| net.forward_t(&mirrored, false))?;
            std::hint::black_box(m.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(())
    };
    for _ in 0..args.warmup.max(5) {
        face()?;
    }
    let started = Instant::now();
    let mut ms = Vec::new();
    while ms.len() < 20 || started.elapsed().as_secs_f64() < args.seconds {
        let t = Instant::now();
        face()?;
        ms.push(1000.0 * t.elapsed().as_secs_f64());
    }
    let sample = LatencySample {
        implementation: format!("fkd-{}", env!("CARGO_PKG_VERSION")),
        model: args.model.to_string(),
        size: s,
        flip: args.flip,
        median_ms: quantile(ms.clone(), 0.5),
        p95_ms: quantile(ms.clone(), 0.95),
        calls: ms.len(),
    };
    println!("{}", serde_json::to_string(&sample)?);
    if args.phases {
        let n = 20;
        fkd_models::ops::profile::enable(true);
        fkd_models::ops::profile::take();
        let t = Instant::now();
        for _ in 0..n {
            face()?;
        }
        let ms = 1000.0 * t.elapsed().as_secs_f64() / n as f64;
        fkd_models::ops::profile::enable(false);
        let table = fkd_models::ops::profile::take();
        let ops: f64 = table.iter().map(|e| e.seconds).sum::<f64>() * 1000.0 / n as f64;
        eprintln!(
            "{ms:.2} ms per face: fused ops {ops:.2} ms, the rest (Candle) {:.2} ms",
            ms - ops
        );
        crate::measure::print_ops(table, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::spread;

    fn sample(fkd: bool, model: &str, size: usize, flip: bool, ms: f64) -> LatencySample {
        LatencySample {
            implementation: if fkd { "fkd-0" } else { "pytorch-2" }.into(),
            model: model.into(),
            size,
            flip,
            median_ms: ms,
            p95_ms: 2.0 * ms,
            calls: 20,
        }
    }

    /// Nearest-rank quantiles and the max/min spread.
    #[test]
    fn quantiles_and_spread() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(quantile(v.clone(), 0.5), 10.0);
        assert_eq!(quantile(v.clone(), 0.95), 19.0);
        assert_eq!(quantile(v, 1.0), 20.0);
        assert!(quantile(Vec::new(), 0.5).is_nan());
        assert_eq!(spread(&[2.0, 3.0, 4.0]), 2.0);
        assert!(spread(&[]).is_nan());
    }

    /// Latency rows take the median over rounds per (net, size, flip), in the table's order,
    /// each side on its own; a case fkd did not measure has no row.
    #[test]
    fn latency_rows_are_medians_per_case() {
        let samples = vec![
            sample(true, "resnet18", 224, true, 30.0),
            sample(true, "deconv", 128, false, 10.0),
            sample(true, "deconv", 128, false, 12.0),
            sample(true, "deconv", 128, false, 50.0),
            sample(false, "deconv", 128, false, 11.0),
        ];
        let rows = latency_rows(&samples);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].model.as_str(), rows[0].size, rows[0].flip),
            ("deconv", 128, false)
        );
        assert_eq!(rows[0].fkd_median_ms, 12.0);
        assert_eq!(rows[0].fkd_p95_ms, 24.0);
        assert_eq!(rows[0].peer_median_ms, Some(11.0));
        assert_eq!(
            (rows[1].model.as_str(), rows[1].size, rows[1].flip),
            ("resnet18", 224, true)
        );
        assert_eq!(rows[1].peer_median_ms, None);
    }
}
