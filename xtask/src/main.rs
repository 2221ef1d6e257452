//! xtask: fkd's one command line. It only wires the library crates together; every piece of
//! real work lives in a crate another project could import.
//!
//! `cargo xtask data check|fetch` (this file and `data.rs`); the parts and benchmarks join as
//! their issues land.

mod data;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// fkd: facial keypoint detection on Candle.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect or download the face data sets.
    #[command(subcommand)]
    Data(data::DataCommand),
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

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => data::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
