//! What `cargo xtask bench`'s throughput and latency rounds share: running a measuring child
//! process and reading its JSON line, and the statistics over rounds.

use anyhow::{Context, bail};
use std::path::Path;
use std::process::Command;

/// `exe bench-child` with the environment every fkd measurement runs under: `threads` rayon
/// threads, and what `.cargo/config.toml` sets for every `cargo xtask` run.
pub(crate) fn fkd_child(exe: &Path, threads: usize) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("bench-child")
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("MIMALLOC_PURGE_DELAY", "-1")
        .env("CANDLE_NUM_THREADS", "1")
        .env("RUST_LOG", "warn");
    cmd
}

/// One round's measurements: fkd's, and the peer's when there is one, the peer first in odd
/// rounds so that neither side always runs second.
pub(crate) fn alternate<T>(
    round: usize,
    fkd: impl FnOnce() -> anyhow::Result<T>,
    peer: Option<impl FnOnce() -> anyhow::Result<T>>,
) -> anyhow::Result<Vec<T>> {
    let mut pair = Vec::with_capacity(2);
    let (first, last) = if round % 2 == 1 {
        (peer, None)
    } else {
        (None, peer)
    };
    if let Some(p) = first {
        pair.push(p()?);
    }
    pair.push(fkd()?);
    if let Some(p) = last {
        pair.push(p()?);
    }
    Ok(pair)
}

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

/// Each profiled op's mean milliseconds and calls per step (or per face), longest first.
pub(crate) fn print_ops(table: Vec<fkd_models::ops::profile::Entry>, steps: usize) {
    for e in table {
        let ms = 1000.0 * e.seconds / steps as f64;
        eprintln!("{ms:8.2} ms {:3}× {}", e.calls / steps, e.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fkd runs first in even rounds, the peer first in odd ones; without a peer, fkd alone.
    #[test]
    fn rounds_alternate_which_side_goes_first() {
        let run = |round| alternate(round, || Ok("fkd"), Some(|| Ok("peer"))).ok();
        assert_eq!(run(0), Some(vec!["fkd", "peer"]));
        assert_eq!(run(1), Some(vec!["peer", "fkd"]));
        let alone = alternate(
            3,
            || Ok("fkd"),
            None::<fn() -> anyhow::Result<&'static str>>,
        );
        assert_eq!(alone.ok(), Some(vec!["fkd"]));
    }
}
