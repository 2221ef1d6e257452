//! Fuzz target `pts`: 300-W / menpo `.pts` parsing ([`fkd_data::pts::parse_pts`]) on arbitrary
//! bytes.
//!
//! The bytes go through the same text check as `read_pts` (UTF-8 or refused, naming the line).
//! Any input must give points or a `DataError`, never a panic; accepted points must be finite.

#![no_main]

use fkd_data::pts::parse_pts;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.pts");
    // As `read_pts`: the bytes must be UTF-8; a BOM is the parser's to drop.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(points) = parse_pts(text, path) else {
        return;
    };
    for p in &points {
        assert!(p.is_finite(), "point {p:?} is not finite");
    }
});
