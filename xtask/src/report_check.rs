//! `cargo xtask check-report FILE`: opens a part's `report.html` the way a reader would, in
//! headless Chromium (Debian's `chromium` package), and checks what the reader sees: the
//! rendered page has the metrics table, and every image it references exists and decodes.
//! With `--screenshot PNG` it also saves what the page looks like.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `check-report`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The report to open (`runs/part1/report.html`), or its run folder (`runs/part1`).
    report: PathBuf,
    /// The Chromium binary.
    #[arg(long, default_value = "chromium")]
    chromium: String,
    /// Also save a full-page screenshot here.
    #[arg(long)]
    screenshot: Option<PathBuf>,
}

/// Flags that keep headless Chromium from reaching for the network or a GPU (this machine has
/// neither), and from touching the user's profile.
fn chromium(args: &CheckArgs, profile: &Path) -> Command {
    let mut c = Command::new(&args.chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let report = std::fs::canonicalize(&args.report)
        .with_context(|| format!("no report at {}", args.report.display()))?;
    // A run folder names its report.
    let report = if report.is_dir() {
        report.join("report.html")
    } else {
        report
    };
    if !report.is_file() {
        bail!("no report at {}", report.display());
    }
    let dir = report.parent().context("the report has no folder")?;
    let profile = tempfile_dir()?;
    let url = format!("file://{}", report.display());
    let out = chromium(args, &profile)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .with_context(|| format!("running {} (apt-get install chromium)", args.chromium))?;
    if !out.status.success() {
        bail!(
            "{} could not render {}: {}",
            args.chromium,
            url,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dom = String::from_utf8_lossy(&out.stdout);
    if !dom.contains("<table") || !dom.contains("mean error (px)") {
        bail!(
            "the rendered page of {} shows no metrics table",
            report.display()
        );
    }
    let mut images = 0;
    for src in dom
        .split("<img src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
    {
        let path = dir.join(src);
        image::ImageReader::open(&path)
            .with_context(|| format!("the report shows {src}, which does not exist"))?
            .decode()
            .with_context(|| format!("the report shows {src}, which does not decode"))?;
        images += 1;
    }
    if images == 0 {
        bail!("the rendered page of {} shows no images", report.display());
    }
    if let Some(png) = &args.screenshot {
        let png = std::path::absolute(png)?;
        let status = chromium(args, &profile)
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1000,4000")
            .arg(&url)
            .output()?;
        if !status.status.success() {
            bail!(
                "taking the screenshot failed: {}",
                String::from_utf8_lossy(&status.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&profile);
    println!(
        "{}: metrics table and {images} images, all present",
        report.display()
    );
    Ok(())
}

/// A fresh, empty Chromium profile folder.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("fkd-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
