//! Model cards in the format fkd runs have written since Part 4 (`model.json`, before the
//! `select` field) load, rebuild their nets and round-trip a checkpoint; whole-photo and crop
//! models predict in the photo's pixels; the flip test is the mean of the photo's and its
//! mirror image's predictions.

use fkd_core::{FaceBox, ImageSize, PixelPoint};
use fkd_data::img::GrayImage;
use fkd_landmarker::{Device, Face, Landmarker, LandmarkerError, ModelCard};
use std::path::Path;

/// `model.json` as `cargo xtask part1` … `part4` wrote it before the inference API moved into
/// this crate (serde_json's pretty output of that struct), one per net.
const CARDS: [(&str, &str); 6] = [
    (
        "part1",
        r#"{
  "part": "part1",
  "arch": "nose",
  "input": [80, 60],
  "points": 1,
  "enlarge": null,
  "flip_test": false,
  "heatmap": null
}"#,
    ),
    (
        "part2",
        r#"{
  "part": "part2",
  "arch": "face",
  "input": [160, 120],
  "points": 58,
  "enlarge": null,
  "flip_test": true,
  "heatmap": null
}"#,
    ),
    (
        "part3",
        r#"{
  "part": "part3",
  "arch": "resnet18",
  "input": [64, 64],
  "points": 68,
  "enlarge": 1.25,
  "flip_test": true,
  "heatmap": null
}"#,
    ),
    (
        "part4 resnet-deconv",
        r#"{
  "part": "part4",
  "arch": "resnet-deconv",
  "input": [64, 64],
  "points": 68,
  "enlarge": 1.25,
  "flip_test": false,
  "heatmap": {
    "map": [16, 16],
    "sigma": 1.5,
    "decoder": "dark",
    "dataset": "300w",
    "deconv_channels": 16
  }
}"#,
    ),
    (
        "part4 integral",
        r#"{
  "part": "part4",
  "arch": "resnet-deconv",
  "input": [64, 64],
  "points": 68,
  "enlarge": 1.25,
  "flip_test": false,
  "heatmap": {
    "map": [16, 16],
    "sigma": 1.5,
    "decoder": "dark",
    "dataset": "300w",
    "deconv_channels": 16,
    "head": "integral"
  }
}"#,
    ),
    (
        "part4 fcn-alexnet",
        r#"{
  "part": "part4",
  "arch": "fcn-alexnet",
  "input": [240, 180],
  "points": 58,
  "enlarge": null,
  "flip_test": false,
  "heatmap": {
    "map": [48, 32],
    "sigma": 1.5,
    "decoder": "dark",
    "dataset": "imm"
  }
}"#,
    ),
];

fn card(text: &str) -> ModelCard {
    serde_json::from_str(text).expect("a fixture card")
}

/// A photo with structure (a ramp and a bright square), `w`×`h`.
fn photo(w: u32, h: u32) -> GrayImage {
    let data = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| {
            let ramp = (x as f32 / w as f32 - 0.5) * 0.6 + (y as f32 / h as f32 - 0.5) * 0.2;
            let square = (x * 3 / w == 1 && y * 3 / h == 1) as u8 as f32 * 0.3;
            ramp + square
        })
        .collect();
    GrayImage::new(w, h, data).expect("pixels for the size")
}

fn mirrored(img: &GrayImage) -> GrayImage {
    let (w, h) = (img.width(), img.height());
    let data = (0..h)
        .flat_map(|y| (0..w).rev().map(move |x| (x, y)))
        .map(|(x, y)| img.get(x, y).expect("inside"))
        .collect();
    GrayImage::new(w, h, data).expect("pixels for the size")
}

#[test]
fn every_card_written_before_loads_and_round_trips_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    for (k, (name, text)) in CARDS.iter().enumerate() {
        let run = dir.path().join(format!("run{k}"));
        std::fs::create_dir(&run).unwrap();
        let checkpoint = run.join("best.safetensors");
        let written = card(text);
        let lm = Landmarker::seeded(written.clone(), k as u64, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        lm.save(&checkpoint).unwrap();
        // The card exactly as the run wrote it.
        std::fs::write(run.join("model.json"), text).unwrap();
        assert_eq!(ModelCard::beside(&checkpoint).unwrap(), written);
        let loaded =
            Landmarker::load(&checkpoint, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.card(), &written, "{name}");
        let img = photo(written.input[0] * 2, written.input[1] * 2);
        let bbox = FaceBox::new(20.0, 16.0, 60.0, 64.0);
        let a = lm.predict(&img, &[bbox]).unwrap();
        let b = loaded.predict(&img, &[bbox]).unwrap();
        assert_eq!(
            a, b,
            "{name}: the loaded checkpoint predicts as the saved net"
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].points.len(), written.points, "{name}");
        assert_eq!(a[0].bbox.is_some(), written.crops_faces(), "{name}");
    }
}

/// With the flip test, a whole-face model's points are the mean of its points for the photo
/// and, mapped back (x → W − x) and renumbered by the layout's mirror permutation, its points
/// for the mirror image: checked on the whole-photo Part 2 net and the Part 3 crop net.
#[test]
fn the_flip_test_averages_the_mirror_images_points() {
    for (text, bbox) in [
        (CARDS[1].1, None),
        // Centred on the photo's middle with an even crop side (80 px), so the mirror image's
        // crop is the mirror of the crop.
        (CARDS[2].1, Some(FaceBox::new(48.0, 30.0, 64.0, 64.0))),
    ] {
        let card = card(text);
        let img = photo(160, 120);
        let boxes: Vec<FaceBox> = bbox.into_iter().collect();
        let plain = Landmarker::seeded(card.clone(), 3, &Device::Cpu)
            .unwrap()
            .with_flip_test(false);
        let flip = Landmarker::seeded(card.clone(), 3, &Device::Cpu).unwrap();
        assert!(flip.flip_test() && !plain.flip_test());
        let p = &plain.predict(&img, &boxes).unwrap()[0].points;
        let q = &plain.predict(&mirrored(&img), &boxes).unwrap()[0].points;
        let f = &flip.predict(&img, &boxes).unwrap()[0].points;
        let mirror = card.layout().mirror;
        let w = img.width() as f32;
        for (i, got) in f.iter().enumerate() {
            let m = q[mirror[i]];
            let want = PixelPoint::new(0.5 * (p[i].x + w - m.x), 0.5 * (p[i].y + m.y));
            assert!(
                got.distance(want) < 2e-3,
                "{}: point {i}: {got:?} vs {want:?}",
                card.arch
            );
        }
    }
}

/// Batching faces across photos, one photo at a time, and a data set's samples give the same
/// points; a crop model refuses a photo without a face box, naming why.
#[test]
fn batches_photos_and_samples_agree() {
    let card = card(CARDS[2].1);
    let lm = Landmarker::seeded(card, 5, &Device::Cpu).unwrap();
    let (a, b) = (photo(160, 120), mirrored(&photo(120, 160)));
    let boxes_a = [
        FaceBox::new(10.0, 10.0, 50.0, 60.0),
        FaceBox::new(70.0, 20.0, 40.0, 40.0),
    ];
    let boxes_b = [FaceBox::new(30.5, 40.25, 55.0, 50.0)];
    let batched = lm
        .predict_batch(&[(&a, &boxes_a[..]), (&b, &boxes_b[..])])
        .unwrap();
    // The batch's size changes the convs' float summation order, not the result.
    let near = |x: &[PixelPoint], y: &[PixelPoint]| {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            assert!(p.distance(*q) < 1e-3, "{p:?} vs {q:?}");
        }
    };
    let close = |x: &[Face], y: &[Face]| {
        assert_eq!(x.len(), y.len());
        for (f, g) in x.iter().zip(y) {
            assert_eq!(f.bbox, g.bbox);
            near(&f.points, &g.points);
        }
    };
    close(&batched[0], &lm.predict(&a, &boxes_a).unwrap());
    close(&batched[1], &lm.predict(&b, &boxes_b).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.png");
    b.to_luma8().save(&file).unwrap();
    // The PNG holds 8-bit pixels: predict on the decoded photo, as the sample path does.
    let decoded = fkd_landmarker::load_gray(&file).unwrap();
    let sample = fkd_data::dataset::Sample {
        image: file.clone(),
        size: ImageSize::new(120, 160),
        points: Vec::new(),
        bbox: Some(boxes_b[0]),
        person: None,
        id: "b#0".into(),
        photo_scale: 1.0,
    };
    let from_samples = lm
        .predict_samples(&[sample.clone(), sample.clone()])
        .unwrap();
    let direct = lm.predict(&decoded, &boxes_b).unwrap();
    near(&from_samples[0], &direct[0].points);
    near(&from_samples[1], &direct[0].points);

    // An annotation offset moves every point by itself on a photo, and by itself times the
    // photo scale on a face cut from a larger photo.
    let offset_card = ModelCard {
        annotation_offset: Some([1.5, -0.25]),
        ..self::card(CARDS[2].1)
    };
    let shifted = Landmarker::seeded(offset_card, 5, &Device::Cpu).unwrap();
    let moved = |pts: &[PixelPoint], s: f32| -> Vec<PixelPoint> {
        pts.iter()
            .map(|p| PixelPoint::new(p.x + 1.5 * s, p.y - 0.25 * s))
            .collect()
    };
    let photo_points = shifted.predict(&decoded, &boxes_b).unwrap();
    near(&photo_points[0].points, &moved(&direct[0].points, 1.0));
    let crop = fkd_data::dataset::Sample {
        photo_scale: 0.5,
        ..sample
    };
    let crop_points = shifted.predict_samples(&[crop]).unwrap();
    near(&crop_points[0], &moved(&direct[0].points, 0.5));

    match lm.predict(&a, &[]) {
        Err(LandmarkerError::Input { reason, .. }) => {
            assert!(reason.contains("needs at least one box"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let missing = Landmarker::load(Path::new("nowhere/best.safetensors"), &Device::Cpu);
    assert!(missing.err().is_some_and(|e| {
        e.to_string()
            .contains("no model.json beside the checkpoint")
    }),);
}

/// A phone-style JPEG stored sideways with EXIF orientation 6 gives the points of its upright
/// copy (to within JPEG's losses, 0.5 px), in the upright photo's pixels.
#[test]
fn an_exif_rotated_photo_gives_the_upright_photos_points() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/faces");
    let lm = Landmarker::seeded(card(CARDS[2].1), 9, &Device::Cpu).unwrap();
    let sideways = fkd_landmarker::load_photo(dir.join("face_00_exif6.jpg")).unwrap();
    let upright = fkd_landmarker::load_photo(dir.join("face_00_upright.jpg")).unwrap();
    let bbox = [FaceBox::new(30.0, 8.0, 93.0, 73.0)];
    let a = lm.predict(&sideways.gray, &bbox).unwrap();
    let b = lm.predict(&upright.gray, &bbox).unwrap();
    for (p, q) in a[0].points.iter().zip(&b[0].points) {
        assert!(p.distance(*q) < 0.5, "{p:?} vs {q:?}");
    }
}

/// Faces found elsewhere get the same landmarks as `predict` on the crops the box map places
/// (`detect_and_predict` is `detect` then this); a list per photo is required, and a
/// whole-photo model is refused.
#[test]
fn given_detections_are_placed_by_the_box_map() {
    let lm = Landmarker::seeded(card(CARDS[2].1), 3, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.png");
    photo(160, 120).to_luma8().save(&file).unwrap();
    let upright = fkd_landmarker::load_photo(&file).unwrap();
    let found = fkd_landmarker::Detection {
        bbox: FaceBox::new(40.0, 20.0, 60.0, 70.0),
        score: 0.95,
        points: [PixelPoint::new(60.0, 45.0); 5],
    };
    let faces = lm
        .predict_detections_batch(&[&upright], vec![vec![found.clone()]])
        .unwrap();
    let placed = fkd_landmarker::YUNET_TO_IBUG68.apply(found.bbox);
    assert_eq!(faces[0].len(), 1);
    assert_eq!(faces[0][0].crop_box, placed);
    assert_eq!(faces[0][0].detection.score, 0.95);
    let direct = lm.predict(&upright.gray, &[placed]).unwrap();
    assert_eq!(faces[0][0].points, direct[0].points);
    // A photo without detections has no faces; one list per photo.
    let none = lm
        .predict_detections_batch(&[&upright, &upright], vec![Vec::new(), vec![found.clone()]])
        .unwrap();
    assert!(none[0].is_empty() && none[1].len() == 1);
    assert!(matches!(
        lm.predict_detections_batch(&[&upright], Vec::new()),
        Err(LandmarkerError::Input { .. })
    ));
    let whole = Landmarker::seeded(card(CARDS[0].1), 3, &Device::Cpu).unwrap();
    assert!(matches!(
        whole.predict_detections_batch(&[&upright], vec![vec![found]]),
        Err(LandmarkerError::Input { .. })
    ));
}
