//! Fuzz target `dlib_xml`: the streaming dlib/iBUG XML reader
//! ([`fkd_data::dlib_xml::DlibXmlReader`]) on arbitrary bytes.
//!
//! Every input is streamed to its end (or first error) twice: with 68 points per box (300-W),
//! and with 0, 3 or 5 points as the first byte picks (the byte is not consumed, so seed files
//! stay whole). Any input must give images or a `DataError`, never a panic, a hang or an
//! entity expansion; accepted boxes must have all their points or none, all finite.

#![no_main]

use fkd_data::dlib_xml::DlibXmlReader;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// Streams every image of `data` read with `n_points` points per box.
fn stream(data: &[u8], n_points: usize) {
    let path = Path::new("fuzz.xml");
    for (expected_index, image) in DlibXmlReader::new(data, path, n_points).enumerate() {
        let Ok(image) = image else {
            return;
        };
        assert_eq!(image.index, expected_index, "image indices out of order");
        assert!(!image.file.is_empty(), "an image without a file name");
        for b in &image.boxes {
            assert!(b.bbox.left.is_finite() && b.bbox.top.is_finite());
            assert!(b.bbox.width.is_finite() && b.bbox.height.is_finite());
            if let Some(points) = &b.points {
                assert_eq!(points.len(), n_points, "a box with some of its points");
                assert!(points.iter().all(|p| p.is_finite()), "{points:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    stream(data, 68);
    let n_points = match data.first().map(|b| b % 3) {
        Some(0) => 0,
        Some(1) => 3,
        _ => 5,
    };
    stream(data, n_points);
});
