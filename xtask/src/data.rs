//! `cargo xtask data check` (what is in the data folder, is every file readable) and
//! `cargo xtask data fetch imm|ibug|yunet` (download and unpack the public data sets, or the
//! detector's weights).

use crate::DataRoot;
use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use fkd_data::fetch::{self, Progress, Source};
use fkd_data::inventory;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Parse every annotation set under the data folder and report what is there.
    Check {
        #[command(flatten)]
        root: DataRoot,
        /// How many rejected files to list per set.
        #[arg(long, default_value_t = 10)]
        show: usize,
    },
    /// Download, check and unpack a public data set into the data folder.
    Fetch {
        /// Which data set.
        set: SetName,
        #[command(flatten)]
        root: DataRoot,
    },
}

/// The data sets `fetch` knows.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SetName {
    /// The IMM face database (240 images, 58 points; ~30 MB).
    Imm,
    /// dlib's iBUG 300-W large face landmark data set (68 points; ~1.7 GB).
    Ibug,
    /// The YuNet-n face detector's published weights (Apache-2.0; 0.7 MB).
    Yunet,
}

impl SetName {
    fn source(self) -> &'static Source {
        match self {
            SetName::Imm => &fetch::IMM,
            SetName::Ibug => &fetch::IBUG_300W,
            SetName::Yunet => &fetch::YUNET,
        }
    }
}

pub fn run(cmd: DataCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DataCommand::Check { root, show } => check(&root.path(), show),
        DataCommand::Fetch { set, root } => {
            let dir = ensure(set.source(), &root.path(), false)?;
            println!("{} is ready in {}", set.source().name, dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(root: &Path, show: usize) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let rows = inventory::scan(root).with_context(|| format!("checking {}", root.display()))?;
    if rows.is_empty() {
        println!(
            "no face data found under {}; run `cargo xtask data fetch imm` or pass --data DIR",
            root.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let width = rows
        .iter()
        .map(|r| r.path.display().to_string().len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<14} {:<width$} {:>7} {:>7} {:>7} {:>9}",
        "set", "path", "images", "faces", "points", "rejected"
    );
    let mut bad = 0;
    for r in &rows {
        println!(
            "{:<14} {:<width$} {:>7} {:>7} {:>7} {:>9}",
            r.kind,
            r.path.display(),
            r.images,
            r.faces,
            r.points_label(),
            r.rejected.len()
        );
        bad += r.rejected.len();
    }
    for r in rows.iter().filter(|r| !r.rejected.is_empty()) {
        println!("\nrejected in {}:", r.path.display());
        for e in r.rejected.iter().take(show) {
            println!("  {e}");
        }
        if r.rejected.len() > show {
            println!("  ... and {} more (--show N)", r.rejected.len() - show);
        }
    }
    println!(
        "\n{} sets, {} files rejected, checked in {:.1} s",
        rows.len(),
        bad,
        start.elapsed().as_secs_f32()
    );
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The folder of `source` under `root`, downloading it first when it is missing (unless
/// `offline`, which then explains where it looked and how to get the data).
pub fn ensure(source: &Source, root: &Path, offline: bool) -> anyhow::Result<PathBuf> {
    if fetch::is_installed(source, root) {
        return Ok(root.join(source.folder));
    }
    if offline {
        anyhow::bail!(
            "{} Or run `cargo xtask data fetch {}`, or pass --data DIR.",
            fetch::missing_data_message(source, root),
            source.name
        );
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let dir = fetch::fetch(source, root, &mut |p| match p {
        Progress::Started { url, total } => {
            bar.set_message(format!("downloading {url}"));
            bar.set_length(total.unwrap_or(0));
            bar.set_position(0);
        }
        Progress::Downloaded(n) => bar.set_position(n),
        Progress::MirrorFailed { url, reason } => {
            bar.println(format!("{url} failed: {reason}; trying the next mirror"))
        }
        Progress::Cached { archive } => bar.println(format!(
            "using the archive downloaded before: {}",
            archive.display()
        )),
        Progress::Unpacking { entries } => {
            bar.set_message(format!("unpacking ({entries} entries)"))
        }
        Progress::Done => bar.finish_and_clear(),
    });
    bar.finish_and_clear();
    Ok(dir?)
}
