//! `cargo xtask fuzz`: runs each cargo-fuzz target of fkd-data (`crates/data/fuzz`) for a fixed
//! time and sums up what it found. A developer's tool, not part of CI: it needs the nightly
//! toolchain and cargo-fuzz, and minutes per target.
//!
//! Each target's corpus lives in `target/fuzz-corpus/<target>/` and is seeded on every run
//! from `fixtures/` and the data folder: at most [`MAX_SEEDS`] files of the target's kinds,
//! text files cut at a line end to [`MAX_SEED_BYTES`], larger binary files skipped. What
//! libFuzzer adds stays there for the next run. The fuzz build goes to `target/fuzz/`, each
//! run's output to `target/fuzz-logs/<target>.log`. A target with a libFuzzer dictionary
//! (`crates/data/fuzz/dicts/<target>.dict`) runs with it. Inputs that crash, leak, run out of
//! memory or time out are saved to `crates/data/fuzz/artifacts/<target>/` (gitignored); any
//! new one there makes the command fail.

use crate::DataRoot;
use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The most seed files copied into a target's corpus per run.
const MAX_SEEDS: usize = 200;
/// The most bytes of one seed file.
const MAX_SEED_BYTES: usize = 64 * 1024;
/// libFuzzer's limits: one input may use at most this much memory (RSS, and any one malloc).
const MEMORY_LIMIT_MB: u32 = 1024;
/// libFuzzer's limit on one input's running time, in seconds.
const INPUT_TIMEOUT_S: u32 = 10;

/// A fuzz target and the files that seed its corpus.
struct Target {
    /// The target's name in `crates/data/fuzz/fuzz_targets/`.
    name: &'static str,
    /// File extensions (lower case) of its seeds.
    extensions: &'static [&'static str],
    /// Whether the seeds are text (cut at a line end when too long) or binary (skipped).
    text: bool,
}

/// Every target, in the order they run.
const TARGETS: &[Target] = &[
    Target {
        name: "asf",
        extensions: &["asf"],
        text: true,
    },
    Target {
        name: "pts",
        extensions: &["pts"],
        text: true,
    },
    Target {
        name: "box_list",
        extensions: &["csv", "txt"],
        text: true,
    },
    Target {
        name: "dlib_xml",
        extensions: &["xml"],
        text: true,
    },
    Target {
        name: "image",
        extensions: &["jpg", "jpeg", "png", "pgm", "ppm", "pnm", "pbm", "pam"],
        text: false,
    },
];

/// The prefixes libFuzzer gives the inputs it saves as findings.
const FINDING_PREFIXES: [&str; 5] = ["crash-", "leak-", "oom-", "timeout-", "slow-unit-"];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds of fuzzing per target (the build comes on top, once).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Run only this target (repeatable) [default: all].
    #[arg(
        long = "target",
        value_name = "NAME",
        value_parser = clap::builder::PossibleValuesParser::new(TARGETS.iter().map(|t| t.name))
    )]
    targets: Vec<String>,
    /// Data folder the corpora are seeded from, besides `fixtures/` [default: $FKD_DATA, else
    /// ./data]; a missing folder seeds from the fixtures alone.
    #[command(flatten)]
    root: DataRoot,
}

/// What one target's run gave.
struct Outcome {
    name: &'static str,
    executions: Option<u64>,
    exec_per_s: Option<u64>,
    coverage: Option<u64>,
    features: Option<u64>,
    corpus_files: usize,
    peak_rss_mb: Option<u64>,
    /// New finding files, as paths relative to the repository.
    findings: Vec<PathBuf>,
    /// Set when cargo-fuzz failed without saving a finding (the log says why).
    failed: Option<String>,
    log: PathBuf,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<ExitCode> {
    let repo = repo_root();
    let targets: Vec<&Target> = if args.targets.is_empty() {
        TARGETS.iter().collect()
    } else {
        TARGETS
            .iter()
            .filter(|t| args.targets.iter().any(|n| n == t.name))
            .collect()
    };
    check_tools()?;

    let data = args.root.path();
    let data = if data.is_dir() {
        println!("seeding corpora from {} and fixtures/", data.display());
        Some(data)
    } else {
        println!(
            "no data folder at {}: seeding corpora from fixtures/ only (pass --data DIR)",
            data.display()
        );
        None
    };

    let fuzz_dir = repo.join("crates/data/fuzz");
    let build_dir = repo.join("target/fuzz");
    let start = Instant::now();
    println!("building the fuzz targets (nightly, AddressSanitizer) into target/fuzz/ ...");
    let status = fuzz_command(&fuzz_dir, &build_dir, "build")
        .status()
        .context("running cargo +nightly fuzz build")?;
    if !status.success() {
        bail!("cargo +nightly fuzz build failed ({status})");
    }
    println!("built in {:.0} s", start.elapsed().as_secs_f64());

    let mut outcomes = Vec::new();
    for target in targets {
        let seeds = seed_corpus(&repo, data.as_deref(), target)?;
        println!(
            "fuzzing {} for {} s ({seeds} seed files; log: target/fuzz-logs/{}.log)",
            target.name, args.seconds, target.name
        );
        outcomes.push(fuzz_one(
            &repo,
            &fuzz_dir,
            &build_dir,
            target,
            args.seconds,
        )?);
    }
    print_summary(&outcomes);

    let bad = outcomes
        .iter()
        .filter(|o| !o.findings.is_empty() || o.failed.is_some())
        .count();
    if bad == 0 {
        println!(
            "no findings: no panic, no input over {INPUT_TIMEOUT_S} s, none over {MEMORY_LIMIT_MB} MiB"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{bad} target(s) found something or failed; see above and their logs");
        Ok(ExitCode::FAILURE)
    }
}

/// The workspace root (xtask's parent folder), wherever the command is started from.
fn repo_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// `cargo +nightly fuzz <sub>` for fkd-data's fuzz crate, with what this process got from its
/// own `cargo run` (toolchain pin, cargo path) removed so the nightly toolchain is used.
fn fuzz_command(fuzz_dir: &Path, build_dir: &Path, sub: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", sub, "--fuzz-dir"])
        .arg(fuzz_dir)
        .arg("--target-dir")
        .arg(build_dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    cmd
}

/// Fails with how to install them when the nightly toolchain or cargo-fuzz is missing.
fn check_tools() -> anyhow::Result<()> {
    let works = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .env_remove("RUSTUP_TOOLCHAIN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&["+nightly", "--version"]) {
        bail!(
            "`cargo xtask fuzz` needs the nightly toolchain (libFuzzer and sanitizers are \
             nightly-only): install it with `rustup toolchain install nightly`"
        );
    }
    if !works(&["+nightly", "fuzz", "--version"]) {
        bail!("`cargo xtask fuzz` needs cargo-fuzz: install it with `cargo install cargo-fuzz`");
    }
    Ok(())
}

/// Copies the target's seeds into its corpus folder; returns how many.
fn seed_corpus(repo: &Path, data: Option<&Path>, target: &Target) -> anyhow::Result<usize> {
    let corpus = repo.join("target/fuzz-corpus").join(target.name);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let fixtures = matching_files(&repo.join("fixtures"), target)?;
    let data_files = match data {
        Some(dir) => matching_files(dir, target)?,
        None => Vec::new(),
    };
    // Every fixture (small, each a case of its own), then data files spread over the folder.
    let room = MAX_SEEDS.saturating_sub(fixtures.len());
    let step = data_files.len().div_ceil(room.max(1)).max(1);
    let picked = fixtures
        .iter()
        .map(|p| ("fixtures", repo.join("fixtures"), p))
        .chain(
            data_files
                .iter()
                .step_by(step)
                .map(|p| ("data", data.map(Path::to_path_buf).unwrap_or_default(), p)),
        )
        .take(MAX_SEEDS);
    let mut copied = 0;
    for (origin, base, path) in picked {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let Some(seed) = seed_bytes(bytes, target.text) else {
            continue;
        };
        let rel = path.strip_prefix(&base).unwrap_or(path);
        let name: String = format!("seed-{origin}-{}", rel.display())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dest = corpus.join(name);
        std::fs::write(&dest, seed).with_context(|| format!("writing {}", dest.display()))?;
        copied += 1;
    }
    Ok(copied)
}

/// The bytes a file seeds a corpus with: text cut at the last line end within
/// [`MAX_SEED_BYTES`]; a larger binary file (or an empty one) is no seed.
fn seed_bytes(mut bytes: Vec<u8>, text: bool) -> Option<Vec<u8>> {
    if bytes.is_empty() {
        return None;
    }
    if bytes.len() > MAX_SEED_BYTES {
        if !text {
            return None;
        }
        let cut = bytes[..MAX_SEED_BYTES]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(MAX_SEED_BYTES, |i| i + 1);
        bytes.truncate(cut);
    }
    Some(bytes)
}

/// The files under `dir` (recursively, sorted) with one of the target's extensions.
fn matching_files(dir: &Path, target: &Target) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| target.extensions.contains(&e.to_ascii_lowercase().as_str()))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Names of the finding files in an artifacts folder.
fn findings_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| FINDING_PREFIXES.iter().any(|p| n.starts_with(p)))
        .collect()
}

/// Runs one target for `seconds` and reads libFuzzer's statistics from its output.
fn fuzz_one(
    repo: &Path,
    fuzz_dir: &Path,
    build_dir: &Path,
    target: &Target,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let corpus = repo.join("target/fuzz-corpus").join(target.name);
    let artifacts = fuzz_dir.join("artifacts").join(target.name);
    let before = findings_in(&artifacts);
    let logs = repo.join("target/fuzz-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let log_path = logs.join(format!("{}.log", target.name));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let log_err = log.try_clone().context("duplicating the log file handle")?;

    let mut cmd = fuzz_command(fuzz_dir, build_dir, "run");
    cmd.arg(target.name).arg(&corpus).arg("--");
    // Tokens random mutation rarely makes (f32::MAX, "nan", XML tags), where a target has them.
    let dict = fuzz_dir.join("dicts").join(format!("{}.dict", target.name));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let status = cmd
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-rss_limit_mb={MEMORY_LIMIT_MB}"))
        .arg(format!("-malloc_limit_mb={MEMORY_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg("-print_final_stats=1")
        .stdout(log)
        .stderr(log_err)
        .status()
        .with_context(|| format!("running cargo +nightly fuzz run {}", target.name))?;

    let output =
        std::fs::read(&log_path).with_context(|| format!("reading {}", log_path.display()))?;
    let output = String::from_utf8_lossy(&output);
    let findings: Vec<PathBuf> = findings_in(&artifacts)
        .difference(&before)
        .map(|n| {
            artifacts
                .join(n)
                .strip_prefix(repo)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| artifacts.join(n))
        })
        .collect();
    let failed = (!status.success() && findings.is_empty())
        .then(|| format!("cargo fuzz run exited with {status} and saved no finding"));
    if !status.success() {
        // The panic message, sanitizer report or build error is at the end of the log.
        let lines: Vec<&str> = output.lines().collect();
        eprintln!("--- last lines of {} ---", log_path.display());
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("{line}");
        }
        eprintln!("---");
    }
    let corpus_files = std::fs::read_dir(&corpus)
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    Ok(Outcome {
        name: target.name,
        executions: stat(&output, "stat::number_of_executed_units:"),
        exec_per_s: stat(&output, "stat::average_exec_per_sec:"),
        coverage: last_field(&output, "cov:"),
        features: last_field(&output, "ft:"),
        corpus_files,
        peak_rss_mb: stat(&output, "stat::peak_rss_mb:"),
        findings,
        failed,
        log: log_path
            .strip_prefix(repo)
            .unwrap_or(&log_path)
            .to_path_buf(),
    })
}

/// The value of one of libFuzzer's final `stat::` lines.
fn stat(output: &str, key: &str) -> Option<u64> {
    output
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// The number after the last `key` in libFuzzer's status lines (`cov: 1234 ft: 5678 ...`).
fn last_field(output: &str, key: &str) -> Option<u64> {
    output.lines().rev().find_map(|l| {
        let mut words = l.split_whitespace();
        words.find(|w| *w == key)?;
        words.next()?.parse().ok()
    })
}

fn print_summary(outcomes: &[Outcome]) {
    let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    println!();
    println!(
        "{:<10} {:>12} {:>8} {:>7} {:>8} {:>8} {:>8}  findings",
        "target", "executions", "exec/s", "cov", "ft", "corpus", "peak MB"
    );
    for o in outcomes {
        let findings = match (&o.failed, o.findings.len()) {
            (Some(why), _) => format!("FAILED: {why} (see {})", o.log.display()),
            (None, 0) => "0".to_owned(),
            (None, n) => format!(
                "{n}: {}",
                o.findings
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        println!(
            "{:<10} {:>12} {:>8} {:>7} {:>8} {:>8} {:>8}  {findings}",
            o.name,
            show(o.executions),
            show(o.exec_per_s),
            show(o.coverage),
            show(o.features),
            o.corpus_files,
            show(o.peak_rss_mb),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_libfuzzer_statistics() {
        let out = "#2\tINITED cov: 10 ft: 12 corp: 3/30b exec/s: 0 rss: 40Mb\n\
                   #4096\tpulse  cov: 120 ft: 300 corp: 9/1Kb lim: 4096 exec/s: 2048 rss: 50Mb\n\
                   #8000\tDONE   cov: 130 ft: 320 corp: 11/2Kb lim: 4096 exec/s: 4000 rss: 51Mb\n\
                   Done 8000 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 8000\n\
                   stat::average_exec_per_sec:     4000\n\
                   stat::peak_rss_mb:              51\n";
        assert_eq!(stat(out, "stat::number_of_executed_units:"), Some(8000));
        assert_eq!(stat(out, "stat::peak_rss_mb:"), Some(51));
        assert_eq!(stat(out, "stat::new_units_added:"), None);
        assert_eq!(last_field(out, "cov:"), Some(130));
        assert_eq!(last_field(out, "ft:"), Some(320));
        assert_eq!(last_field("nothing here", "cov:"), None);
    }

    #[test]
    fn seeds_are_bounded() {
        assert_eq!(seed_bytes(Vec::new(), true), None);
        assert_eq!(seed_bytes(b"a\nb".to_vec(), false), Some(b"a\nb".to_vec()));
        let mut long = b"line\n".repeat(MAX_SEED_BYTES / 5 + 10);
        long.push(b'x');
        let cut = seed_bytes(long.clone(), true).unwrap();
        assert!(cut.len() <= MAX_SEED_BYTES && cut.ends_with(b"\n"));
        assert_eq!(seed_bytes(long, false), None);
    }
}
