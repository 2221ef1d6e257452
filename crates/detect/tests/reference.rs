//! The port against the ONNX export (`fixtures/yunet/reference.json`, written by
//! `make_reference.py` with onnxruntime): the same crops of real LFPW photos, rebuilt here from
//! `$FKD_DATA` (PNGs, decoded losslessly; each crop's bytes checked by sha256), through the
//! published `yunet_n.pth`, give every raw output within 1e-4 and the same detections.

use candle_core::{Device, Tensor};
use fkd_detect::decode::{candidates, nms};
use fkd_detect::{Detector, LevelOutput, bgr_input};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The real data folder, or `None` (with a note) when `FKD_DATA` is unset outside CI.
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

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn outputs_and_detections_match_the_onnx_export() {
    let Some(root) = data_root() else { return };
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/yunet");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("reference.json")).unwrap())
            .unwrap();
    let detector = Detector::load(root.join("models/yunet/yunet_n.pth"), &Device::Cpu).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let photo = image::open(root.join(case["source"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let c: Vec<u32> = case["crop_xywh"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let crop = image::imageops::crop_imm(&photo, c[0], c[1], c[2], c[3]).to_image();
        let digest: String = Sha256::digest(crop.as_raw())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest,
            case["input_rgb_sha256"].as_str().unwrap(),
            "{name}: input"
        );

        let x = bgr_input(&crop, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), [1, 3, c[3] as usize, c[2] as usize], "{name}");
        let levels = detector.net().forward(&x).unwrap();
        let mut worst = 0f32;
        for out in case["outputs"].as_array().unwrap() {
            let (kind, stride) = out["name"].as_str().unwrap().split_once('_').unwrap();
            let level = levels
                .iter()
                .find(|l| l.stride.to_string() == stride)
                .unwrap();
            let t: &Tensor = match kind {
                "cls" => &level.cls,
                "obj" => &level.obj,
                "bbox" => &level.bbox,
                "kps" => &level.kps,
                other => panic!("unknown output {other}"),
            };
            let ours = LevelOutput::cells(t).unwrap();
            let shape: Vec<usize> = out["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(ours.dims(), shape.as_slice(), "{name} {kind}_{stride}");
            let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in ours.iter().zip(floats(&out["values"])) {
                // Relative to the value: the reference keeps 7 significant digits.
                worst = worst.max((a - b).abs() / b.abs().max(1.0));
            }
        }
        eprintln!("{name}: worst output difference {worst:e}");
        assert!(worst < 1e-4, "{name}: worst output difference {worst}");

        let threshold = reference["decode"]["score_threshold"].as_f64().unwrap() as f32;
        let iou = reference["decode"]["nms_threshold"].as_f64().unwrap() as f32;
        let found = nms(
            candidates(&levels, 0, threshold).unwrap(),
            threshold,
            iou,
            5000,
        );
        let want = case["detections"].as_array().unwrap();
        assert_eq!(found.len(), want.len(), "{name}: detections");
        for (f, w) in found.iter().zip(want) {
            let b = floats(&w["box_xywh"]);
            let ours = [f.bbox.left, f.bbox.top, f.bbox.width, f.bbox.height];
            for (a, b) in ours.iter().zip(&b) {
                assert!((a - b).abs() < 1e-3, "{name}: box {ours:?} vs {b:?}");
            }
            assert!((f.score - w["score"].as_f64().unwrap() as f32).abs() < 1e-4);
            for (p, q) in f.points.iter().zip(w["landmarks"].as_array().unwrap()) {
                let q = floats(q);
                assert!(
                    (p.x - q[0]).abs() < 1e-3 && (p.y - q[1]).abs() < 1e-3,
                    "{name}"
                );
            }
        }
    }
}

/// A whole photo through `Detector::detect`: scaled to at most 640 pixels, every annotated
/// face of an LFPW test photo is found, its box around the annotation.
#[test]
fn detect_finds_the_annotated_face_of_a_photo() {
    let Some(root) = data_root() else { return };
    let detector = Detector::load(root.join("models/yunet/yunet_n.pth"), &Device::Cpu).unwrap();
    let dir = root.join("photos_300w/lfpw_testset");
    for name in ["image_0001", "image_0005", "image_0009"] {
        let photo = image::open(dir.join(format!("{name}.png")))
            .unwrap()
            .to_rgb8();
        let pts = fkd_core_points(&dir.join(format!("{name}.pts")));
        let (cx, cy) = (
            pts.iter().map(|p| p.0).sum::<f32>() / pts.len() as f32,
            pts.iter().map(|p| p.1).sum::<f32>() / pts.len() as f32,
        );
        let faces = detector.detect(&photo).unwrap();
        assert!(
            faces.iter().any(|f| f.bbox.left < cx
                && cx < f.bbox.left + f.bbox.width
                && f.bbox.top < cy
                && cy < f.bbox.top + f.bbox.height),
            "{name}: no face around the annotation's centre ({cx}, {cy}): {faces:?}"
        );
    }
}

/// The points of a 300-W `.pts` file.
fn fkd_core_points(path: &std::path::Path) -> Vec<(f32, f32)> {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find('{').unwrap() + 1;
    let end = text.rfind('}').unwrap();
    text[start..end]
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|v| v.parse::<f32>().unwrap());
            Some((it.next()?, it.next()?))
        })
        .collect()
}
