//! Fuzz target `asf`: IMM `.asf` parsing ([`fkd_data::asf::parse_asf`]) on arbitrary bytes.
//!
//! The bytes become text the way `read_asf` turns a file into text (`asf::text_from_bytes`: a
//! leading UTF-8 BOM dropped, every other byte read as latin-1), so every input reaches the
//! parser. Any input must
//! give a shape or a `DataError`, never a panic; an accepted shape must keep the parser's
//! promises (points numbered in order, finite coordinates within 1 % of `[0, 1]`).

#![no_main]

use fkd_core::ImageSize;
use fkd_data::asf::{parse_asf, text_from_bytes};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.asf");
    let Ok(shape) = parse_asf(&text_from_bytes(data), path) else {
        return;
    };
    for (i, p) in shape.points.iter().enumerate() {
        assert_eq!(p.index, i, "point numbers out of order");
        for v in [p.rel.x, p.rel.y] {
            assert!(
                v.is_finite() && (-0.011..=1.011).contains(&v),
                "coordinate {v}"
            );
        }
    }
    let pixels = shape.pixel_points(ImageSize::new(640, 480));
    assert_eq!(pixels.len(), shape.points.len());
});
