//! Fuzz target `image`: image decoding ([`fkd_data::img::decode_gray`], what `load_gray` runs
//! on a file's bytes) and, for an image that decodes, a face crop ([`fkd_data::crop::Crop`]).
//!
//! The crop's box comes from the input's last 8 bytes (decoders ignore what follows the image):
//! anywhere from 256 pixels before the image to 256 past it, 1 to 256 pixels wide and high,
//! enlarged 1 to 2 times, resized to 1 to 64 pixels square, sometimes with a NaN corner. Boxes
//! stay small on purpose: refusing boxes that are not finite or miss the image is the data
//! set's job, and a huge box would only allocate a huge window.
//!
//! Any input must give an image or a `DataError`, never a panic, a hang or an allocation
//! beyond what [`fkd_data::img::MAX_PIXELS`] allows; a decoded image must have pixels, no more
//! than that limit, and values in `[-0.5, 0.5]`.

#![no_main]

use fkd_core::FaceBox;
use fkd_data::crop::Crop;
use fkd_data::img::{MAX_PIXELS, decode_gray};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(img) = decode_gray(data, Path::new("fuzz.img")) else {
        return;
    };
    let pixels = u64::from(img.width()) * u64::from(img.height());
    assert!(pixels > 0 && pixels <= MAX_PIXELS, "{}", img.size());
    assert_eq!(img.data().len() as u64, pixels);
    assert!(
        img.data().iter().all(|v| (-0.5..=0.5).contains(v)),
        "a value outside [-0.5, 0.5]"
    );

    let Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) = data.last_chunk::<8>() else {
        return;
    };
    let (w, h) = (img.width() as f32, img.height() as f32);
    let place = |b: u8, extent: f32| -256.0 + f32::from(b) / 255.0 * (extent + 512.0);
    let mut left = place(b0, w);
    let mut top = place(b1, h);
    if b7 & 1 == 1 {
        left = f32::NAN;
    }
    if b7 & 2 == 2 {
        top = f32::NAN;
    }
    let bbox = FaceBox::new(left, top, 1.0 + f32::from(b2), 1.0 + f32::from(b3));
    let enlarge = 1.0 + f32::from(b4) / 255.0;
    let out_side = 1 + u32::from(b5 % 64);
    let pad = f32::from(b6) / 255.0 - 0.5;
    let crop = Crop::around(bbox, enlarge, out_side);
    let out = crop.apply(&img, pad);
    assert_eq!((out.width(), out.height()), (out_side, out_side));
    assert!(
        out.data()
            .iter()
            .all(|v| v.is_finite() && v.abs() <= 0.5 + 1e-3),
        "crop values out of range"
    );
});
