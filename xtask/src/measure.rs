//! What `cargo xtask bench`'s throughput and latency rounds share: running a measuring child
//! process and reading its JSON line, and the statistics over rounds.

use anyhow::{Context, bail};
use std::process::Command;

/// Runs one child and parses the JSON line it prints last as a `T`.
pub(crate) fn run_json<T: serde::de::DeserializeOwned>(
    mut cmd: Command,
    what: &str,
) -> anyhow::Result<T> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start the {what} benchmark ({cmd:?})"))?;
    if !out.status.success() {
        bail!(
            "the {what} benchmark failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("the {what} benchmark printed no JSON line:\n{stdout}"))?;
    serde_json::from_str(line)
        .with_context(|| format!("bad JSON from the {what} benchmark: {line}"))
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `q`-quantile (0–1) of `v` by the nearest rank; NaN for none.
pub(crate) fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The largest over the smallest of `v` (1 for one value, NaN for none).
pub(crate) fn spread(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::NAN, f64::max);
    let min = v.iter().copied().fold(f64::NAN, f64::min);
    max / min
}
