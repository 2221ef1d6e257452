//! fkd-data and fkd-metrics used alone, as another project would: a throw-away crate outside
//! the workspace depends on them by path (fkd-data without its default `candle` feature),
//! builds with the workspace's locked versions, reads the fixture XML and scores points; its
//! dependency tree holds no Candle crate.

use std::path::{Path, PathBuf};
use std::process::Command;

const MAIN: &str = r#"
use fkd_core::{Layout, PixelPoint};
use fkd_data::dataset::{DataSet, LoadPolicy};

fn main() {
    let xml = std::env::args().nth(1).expect("an XML");
    let set = DataSet::dlib_xml(xml.as_ref(), Layout::IBUG68, LoadPolicy::Strict)
        .unwrap_or_else(|e| panic!("{e}"));
    let truth = &set.samples[0].points;
    let pred: Vec<PixelPoint> = truth.iter().map(|p| PixelPoint::new(p.x + 1.0, p.y)).collect();
    let nme = fkd_metrics::nme(&pred, truth, &Layout::IBUG68).unwrap_or_else(|e| panic!("{e}"));
    println!("{} faces; 1 px off: NME {:.4}", set.len(), nme);
}
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo(dir: &Path, args: &[&str]) -> String {
    let ws = workspace();
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        // Its own target folder: the workspace's is locked by the running `cargo test`.
        .env("CARGO_TARGET_DIR", ws.join("target/standalone"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_crate_outside_the_workspace_reads_xml_and_scores_without_candle() {
    let ws = workspace().canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |c: &str| ws.join("crates").join(c).display().to_string();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"standalone-user\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
             publish = false\n\n[dependencies]\n\
             fkd-core = {{ path = {:?} }}\n\
             fkd-data = {{ path = {:?}, default-features = false }}\n\
             fkd-metrics = {{ path = {:?} }}\n\n[workspace]\n",
            path("core"),
            path("data"),
            path("metrics")
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/main.rs"), MAIN).unwrap();
    // The workspace's versions, so the build needs nothing the workspace has not fetched.
    std::fs::copy(ws.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();

    let tree = cargo(
        dir.path(),
        &["tree", "--offline", "-e", "normal", "--prefix", "none"],
    );
    assert!(tree.contains("fkd-data"), "{tree}");
    assert!(!tree.lines().any(|l| l.starts_with("candle")), "{tree}");

    let xml = ws.join("fixtures/faces/faces.xml");
    let printed = cargo(
        dir.path(),
        &["run", "--offline", "--quiet", "--", xml.to_str().unwrap()],
    );
    assert!(
        printed.starts_with("14 faces; 1 px off: NME 0.0"),
        "{printed}"
    );
}
