//! Photos as a viewer shows them: decoded with their EXIF orientation applied (a phone's
//! portrait shot stored sideways comes out upright), kept in colour for a face detector and for
//! drawing, and in fkd's grayscale for the landmark nets. Data sets' images go through
//! [`crate::img::load_gray`] instead, as stored, since their annotations are in stored pixels.

use crate::img::{GrayImage, check_jpeg_end, checked_header, reader, to_gray};
use crate::{DataError, Result};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, RgbImage};
use std::path::Path;

/// A photo, upright.
#[derive(Clone, Debug)]
pub struct Photo {
    /// 8 bits per channel, RGB.
    pub rgb: RgbImage,
    /// Luma in `[-0.5, 0.5]`, at the precision of the file's samples.
    pub gray: GrayImage,
    /// The EXIF orientation that was applied, as the tag numbers it (1: none; 6: the stored
    /// image was turned 90° clockwise to show it).
    pub orientation: u8,
}

/// Reads a photo (JPEG, PNG, PPM/PGM) with its EXIF orientation applied. The same checks and
/// errors as [`crate::img::load_gray`], naming `path`.
pub fn load_photo(path: &Path) -> Result<Photo> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_photo(&bytes, path)
}

/// [`load_photo`] of a file's bytes already in memory.
pub fn decode_photo(bytes: &[u8], path: &Path) -> Result<Photo> {
    let image_err = |source| DataError::Image {
        path: path.to_path_buf(),
        source,
    };
    let format = checked_header(bytes, path)?;
    let mut decoder = reader(bytes, path)?.into_decoder().map_err(image_err)?;
    // A missing or unreadable EXIF block means "as stored", as viewers take it.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(image_err)?;
    check_jpeg_end(bytes, path, format)?;
    img.apply_orientation(orientation);
    Ok(Photo {
        rgb: img.to_rgb8(),
        gray: to_gray(&img),
        orientation: exif_number(orientation),
    })
}

/// The EXIF tag value (1–8) of an orientation.
fn exif_number(o: Orientation) -> u8 {
    match o {
        Orientation::NoTransforms => 1,
        Orientation::FlipHorizontal => 2,
        Orientation::Rotate180 => 3,
        Orientation::FlipVertical => 4,
        Orientation::Rotate90FlipH => 5,
        Orientation::Rotate90 => 6,
        Orientation::Rotate270FlipH => 7,
        Orientation::Rotate270 => 8,
    }
}
