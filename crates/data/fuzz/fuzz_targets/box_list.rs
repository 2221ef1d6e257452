//! Fuzz target `box_list`: the 300-W list parsers of [`fkd_data::boxes`] on arbitrary bytes. The
//! same bytes are read as a box list, a name list and a crop manifest.
//!
//! The bytes become text with [`fkd_data::boxes::text_from_bytes`], the path the `read_*`
//! functions take (BOM dropped, not UTF-8 refused). Any input must give rows or a `DataError`,
//! never a panic; accepted rows must keep the parsers' promises (boxes finite with a positive
//! area, names unique and non-empty, manifest crops inside their source image).

#![no_main]

use fkd_core::PixelPoint;
use fkd_data::boxes::{parse_box_list, parse_manifest, parse_name_list, text_from_bytes};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.csv");
    let Ok(text) = text_from_bytes(data.to_vec(), path) else {
        return;
    };
    if let Ok(boxes) = parse_box_list(&text, path) {
        for b in &boxes {
            assert!(b.is_valid(), "box {b:?} is not finite with a positive area");
        }
    }
    if let Ok(names) = parse_name_list(&text, path) {
        let unique: HashSet<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(unique.len(), names.len(), "a name is listed twice");
        assert!(names.iter().all(|n| !n.is_empty()), "an empty name");
    }
    if let Ok(rows) = parse_manifest(&text, path) {
        for r in &rows {
            assert!(r.crop.is_valid(), "crop {:?}", r.crop);
            assert!(r.crop.right() <= r.source_size.width as f32);
            assert!(r.crop.bottom() <= r.source_size.height as f32);
            let p = r.to_source(PixelPoint::new(1.0, 1.0));
            assert!(p.is_finite(), "{p:?} from row {r:?}");
        }
    }
});
