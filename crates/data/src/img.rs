//! Grayscale `f32` images: decoding JPEG, PNG (8- and 16-bit) and PPM files to one channel in
//! `[-0.5, 0.5]`, reading an image's size from its header, and an antialiased resampler.
//!
//! Colour is reduced to luma with the weights the `image` crate uses (Rec. 709 / sRGB:
//! `0.2126 R + 0.7152 G + 0.0722 B`), computed in `f32` so 16-bit files keep their precision.
//! An alpha channel is ignored (face photos are opaque).
//!
//! Sizes come from the file's header, which can lie: 68 bytes of PNG can claim 60000×60000
//! pixels. [`load_gray`] and [`image_size`] refuse a header with no pixels or more than
//! [`MAX_PIXELS`] before any pixel is allocated.
//!
//! [`GrayImage::resize`] follows fkd's continuous coordinate convention (see `fkd_core`): output
//! pixel `i` of a resize by `s` samples the input at `(i + 0.5) / s − 0.5` (in input pixel
//! indices), so a point maps by `x' = s·x` exactly.

use crate::{DataError, Result};
use fkd_core::ImageSize;
use image::{DynamicImage, ImageReader};
use std::io::Cursor;
use std::path::Path;

/// Rec. 709 luma weights, as `image`'s own RGB → luma conversion uses them.
const LUMA_WEIGHTS: [f32; 3] = [0.2126, 0.7152, 0.0722];

/// The most pixels an image may have: 100 megapixels (400 MB as `f32`), far above any face
/// photo. A header claiming more is taken for a corrupt or hostile file and refused unread.
pub const MAX_PIXELS: u64 = 100_000_000;

/// A one-channel image of `f32` values in `[-0.5, 0.5]` (black is `-0.5`), stored row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct GrayImage {
    width: u32,
    height: u32,
    data: Vec<f32>,
}

impl GrayImage {
    /// An image from row-major values, or `None` when `data.len() != width × height`.
    pub fn new(width: u32, height: u32, data: Vec<f32>) -> Option<Self> {
        (data.len() as u64 == u64::from(width) * u64::from(height)).then_some(Self {
            width,
            height,
            data,
        })
    }

    /// A `width × height` image with every pixel set to `value`.
    pub fn filled(width: u32, height: u32, value: f32) -> Self {
        Self {
            width,
            height,
            data: vec![value; width as usize * height as usize],
        }
    }

    /// Number of columns.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Number of rows.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Width and height.
    pub fn size(&self) -> ImageSize {
        ImageSize::new(self.width, self.height)
    }

    /// The pixel values, row by row.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The pixel values, row by row, for in-place edits (augmentation).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The pixel values, row by row, without copying.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The value of pixel column `x`, row `y`, or `None` outside the image.
    pub fn get(&self, x: u32, y: u32) -> Option<f32> {
        if x < self.width && y < self.height {
            self.data
                .get(y as usize * self.width as usize + x as usize)
                .copied()
        } else {
            None
        }
    }

    /// Row `y` of the image (empty outside it).
    pub fn row(&self, y: u32) -> &[f32] {
        let w = self.width as usize;
        let start = y as usize * w;
        self.data.get(start..start + w).unwrap_or(&[])
    }

    /// The `width × height` window whose top-left pixel is `(left, top)`, copied; `None` when
    /// the window does not lie inside the image.
    pub fn sub_image(&self, left: u32, top: u32, width: u32, height: u32) -> Option<GrayImage> {
        let inside =
            left.checked_add(width)? <= self.width && top.checked_add(height)? <= self.height;
        if !inside {
            return None;
        }
        let (l, w) = (left as usize, width as usize);
        let mut data = Vec::with_capacity(w * height as usize);
        for y in top..top + height {
            data.extend_from_slice(&self.row(y)[l..l + w]);
        }
        GrayImage::new(width, height, data)
    }

    /// This image resampled to `width × height`.
    ///
    /// Separable triangle filter: bilinear interpolation when enlarging, and when shrinking by
    /// `s < 1` a triangle whose support widens to `1/s` input pixels per side, so each output
    /// pixel averages the whole area it covers (no aliasing), like PIL's antialiased BILINEAR.
    /// Filter taps that fall outside the image are dropped and the rest renormalised, so edges
    /// are neither darkened nor brightened. An empty source gives an all-zero (mid-grey) result.
    pub fn resize(&self, width: u32, height: u32) -> GrayImage {
        if width == self.width && height == self.height {
            return self.clone();
        }
        if self.data.is_empty() || width == 0 || height == 0 {
            return GrayImage::filled(width, height, 0.0);
        }
        let (w_in, h_in) = (self.width as usize, self.height as usize);
        let (w_out, h_out) = (width as usize, height as usize);
        // Resample along the axis that shrinks most first, so the second pass has less to do.
        let horizontal_first = w_out * h_in <= w_in * h_out;
        let data = if horizontal_first {
            let tmp = resample_rows(&self.data, w_in, h_in, w_out);
            resample_columns(&tmp, w_out, h_in, h_out)
        } else {
            let tmp = resample_columns(&self.data, w_in, h_in, h_out);
            resample_rows(&tmp, w_in, h_out, w_out)
        };
        GrayImage {
            width,
            height,
            data,
        }
    }

    /// An 8-bit `image` buffer of this image (values rounded and clamped), for figures.
    pub fn to_luma8(&self) -> image::GrayImage {
        let raw = self
            .data
            .iter()
            .map(|&v| ((v + 0.5) * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        // The buffer has exactly width × height bytes by construction.
        image::GrayImage::from_raw(self.width, self.height, raw)
            .unwrap_or_else(|| image::GrayImage::new(self.width, self.height))
    }

    /// An image from an 8-bit `image` buffer (`luma / 255 − 0.5`).
    pub fn from_luma8(img: &image::GrayImage) -> GrayImage {
        GrayImage {
            width: img.width(),
            height: img.height(),
            data: img
                .as_raw()
                .iter()
                .map(|&v| f32::from(v) / 255.0 - 0.5)
                .collect(),
        }
    }
}

/// Decodes a JPEG, PNG (8- or 16-bit) or PNM file to a grayscale image in `[-0.5, 0.5]`.
///
/// The format is taken from the file's content, not its extension. A file that cannot be read
/// gives [`DataError::Io`]; one that is corrupt, truncated, of an unknown format, or whose
/// header gives no pixels or more than [`MAX_PIXELS`] gives [`DataError::Image`]. Both name
/// `path`.
pub fn load_gray(path: &Path) -> Result<GrayImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_gray(&bytes, path)
}

/// [`load_gray`] of a file's bytes already in memory: the same checks and the same errors,
/// naming `path`.
pub fn decode_gray(bytes: &[u8], path: &Path) -> Result<GrayImage> {
    let image_err = |source| DataError::Image {
        path: path.to_path_buf(),
        source,
    };
    let format = checked_header(bytes, path)?;
    let decoded = reader(bytes, path)?.decode().map_err(image_err)?;
    check_jpeg_end(bytes, path, format)?;
    Ok(to_gray(&decoded))
}

/// A reader of `bytes` with its format guessed from the content.
pub(crate) fn reader<'a>(bytes: &'a [u8], path: &Path) -> Result<ImageReader<Cursor<&'a [u8]>>> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))
}

/// Reads the header alone (the decoder would allocate whatever size it claims) and refuses a
/// size [`checked_size`] refuses; returns the format.
pub(crate) fn checked_header(bytes: &[u8], path: &Path) -> Result<Option<image::ImageFormat>> {
    let header = reader(bytes, path)?;
    let format = header.format();
    let dims = header
        .into_dimensions()
        .map_err(|source| DataError::Image {
            path: path.to_path_buf(),
            source,
        })?;
    checked_size(path, format, dims)?;
    Ok(format)
}

/// The JPEG decoder fills a cut-off scan with grey instead of failing; a file that lost its
/// end must not silently become a half-grey image.
pub(crate) fn check_jpeg_end(
    bytes: &[u8],
    path: &Path,
    format: Option<image::ImageFormat>,
) -> Result<()> {
    if format == Some(image::ImageFormat::Jpeg) && !jpeg_has_end(bytes) {
        return Err(decoding_error(
            path,
            format,
            "truncated JPEG: no end-of-image marker".into(),
        ));
    }
    Ok(())
}

/// The size a header gives, unless it has no pixels or more than [`MAX_PIXELS`].
fn checked_size(
    path: &Path,
    format: Option<image::ImageFormat>,
    (width, height): (u32, u32),
) -> Result<ImageSize> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(decoding_error(
            path,
            format,
            format!("the header gives a {width}x{height} image, which has no pixels"),
        ));
    }
    if pixels > MAX_PIXELS {
        return Err(decoding_error(
            path,
            format,
            format!(
                "the header gives a {width}x{height} image ({pixels} pixels), over the \
                 {MAX_PIXELS}-pixel limit"
            ),
        ));
    }
    Ok(ImageSize::new(width, height))
}

/// A [`DataError::Image`] for a file the decoder accepts but fkd does not.
fn decoding_error(path: &Path, format: Option<image::ImageFormat>, reason: String) -> DataError {
    let hint = format.map_or(image::error::ImageFormatHint::Unknown, |f| {
        image::error::ImageFormatHint::Exact(f)
    });
    DataError::Image {
        path: path.to_path_buf(),
        source: image::ImageError::Decoding(image::error::DecodingError::new(hint, reason)),
    }
}

/// Whether a JPEG stream has its end-of-image marker (`FF D9`), allowing for the padding some
/// writers append after it.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Width and height of an image file, read from its header only. A header that [`load_gray`]
/// would refuse (no pixels, more than [`MAX_PIXELS`]) is refused here too, so a data set never
/// takes in an image it cannot load.
pub fn image_size(path: &Path) -> Result<ImageSize> {
    let reader = ImageReader::open(path)
        .and_then(ImageReader::with_guessed_format)
        .map_err(|e| DataError::io(path, e))?;
    let format = reader.format();
    let dims = reader
        .into_dimensions()
        .map_err(|source| DataError::Image {
            path: path.to_path_buf(),
            source,
        })?;
    checked_size(path, format, dims)
}

/// Luma of a decoded image, at the full precision of its samples.
pub(crate) fn to_gray(img: &DynamicImage) -> GrayImage {
    let (width, height) = (img.width(), img.height());
    let data = match img {
        DynamicImage::ImageLuma8(b) => channels_to_luma(b.as_raw(), 1, 255.0),
        DynamicImage::ImageLumaA8(b) => channels_to_luma(b.as_raw(), 2, 255.0),
        DynamicImage::ImageRgb8(b) => channels_to_luma(b.as_raw(), 3, 255.0),
        DynamicImage::ImageRgba8(b) => channels_to_luma(b.as_raw(), 4, 255.0),
        DynamicImage::ImageLuma16(b) => channels_to_luma(b.as_raw(), 1, 65535.0),
        DynamicImage::ImageLumaA16(b) => channels_to_luma(b.as_raw(), 2, 65535.0),
        DynamicImage::ImageRgb16(b) => channels_to_luma(b.as_raw(), 3, 65535.0),
        DynamicImage::ImageRgba16(b) => channels_to_luma(b.as_raw(), 4, 65535.0),
        // Float and future formats: go through `image`'s own f32 conversion.
        other => channels_to_luma(other.to_rgb32f().as_raw(), 3, 1.0),
    };
    GrayImage {
        width,
        height,
        data,
    }
}

/// Luma in `[-0.5, 0.5]` of interleaved samples with `channels` per pixel (1–2: grey with
/// optional alpha; 3–4: RGB with optional alpha), where `max` is full intensity.
fn channels_to_luma<T: Copy + Into<f32>>(raw: &[T], channels: usize, max: f32) -> Vec<f32> {
    if channels < 3 {
        // Divide (not multiply by 1/max) so grey values are exactly `from_luma8`'s.
        raw.chunks_exact(channels)
            .map(|px| (px[0].into() / max - 0.5).clamp(-0.5, 0.5))
            .collect()
    } else {
        let [wr, wg, wb] = LUMA_WEIGHTS.map(|w| w / max);
        raw.chunks_exact(channels)
            .map(|px| {
                let l = wr * px[0].into() + wg * px[1].into() + wb * px[2].into();
                // Rounding can put pure white a hair above 1.0.
                (l - 0.5).clamp(-0.5, 0.5)
            })
            .collect()
    }
}

/// Precomputed filter taps of a 1-D resample from `n_in > 0` to `n_out > 0` samples: output `i` is
/// `Σ_k weights[i·taps + k] · input[start[i] + k]`, with unused taps set to zero.
struct Kernel {
    start: Vec<usize>,
    taps: usize,
    weights: Vec<f32>,
}

impl Kernel {
    fn new(n_in: usize, n_out: usize) -> Kernel {
        let scale = n_out as f64 / n_in as f64;
        // Filter radius in input pixels: 1 (bilinear) when enlarging, 1/s when shrinking.
        let radius = (1.0 / scale).max(1.0);
        let taps = (2.0 * radius).ceil() as usize + 1;
        let mut start = Vec::with_capacity(n_out);
        let mut weights = vec![0.0f32; n_out * taps];
        let last = n_in as i64 - 1;
        let mut raw = vec![0.0f64; taps];
        for (i, row) in weights.chunks_exact_mut(taps).enumerate() {
            let centre = (i as f64 + 0.5) / scale - 0.5;
            let lo = ((centre - radius).floor() as i64 + 1).clamp(0, last);
            let hi = ((centre + radius).ceil() as i64 - 1).clamp(lo, last);
            let mut sum = 0.0f64;
            raw.fill(0.0);
            for (k, j) in (lo..=hi).enumerate().take(taps) {
                let w = (1.0 - (j as f64 - centre).abs() / radius).max(0.0);
                raw[k] = w;
                sum += w;
            }
            if sum <= 0.0 {
                // Cannot happen for lo..=hi around the centre, but never divide by zero.
                raw[0] = 1.0;
                sum = 1.0;
            }
            for (dst, w) in row.iter_mut().zip(&raw) {
                *dst = (w / sum) as f32;
            }
            start.push(lo as usize);
        }
        Kernel {
            start,
            taps,
            weights,
        }
    }

    /// Number of taps of output `i` that stay inside an input of `n_in` samples.
    fn len(&self, i: usize, n_in: usize) -> usize {
        self.taps.min(n_in - self.start[i])
    }
}

/// Resamples each of `h` rows of width `w_in` to width `w_out`.
fn resample_rows(src: &[f32], w_in: usize, h: usize, w_out: usize) -> Vec<f32> {
    let kernel = Kernel::new(w_in, w_out);
    let mut out = vec![0.0f32; w_out * h];
    for (src_row, out_row) in src.chunks_exact(w_in).zip(out.chunks_exact_mut(w_out)) {
        for (i, dst) in out_row.iter_mut().enumerate() {
            let s = kernel.start[i];
            let n = kernel.len(i, w_in);
            let w = &kernel.weights[i * kernel.taps..i * kernel.taps + n];
            *dst = src_row[s..s + n].iter().zip(w).map(|(a, b)| a * b).sum();
        }
    }
    out
}

/// Resamples each of `w` columns of height `h_in` to height `h_out`.
fn resample_columns(src: &[f32], w: usize, h_in: usize, h_out: usize) -> Vec<f32> {
    let kernel = Kernel::new(h_in, h_out);
    let mut out = vec![0.0f32; w * h_out];
    // Whole rows are accumulated at a time: contiguous, and the compiler vectorises it.
    for (i, out_row) in out.chunks_exact_mut(w).enumerate() {
        let s = kernel.start[i];
        let n = kernel.len(i, h_in);
        let weights = &kernel.weights[i * kernel.taps..i * kernel.taps + n];
        for (k, &wk) in weights.iter().enumerate() {
            let src_row = &src[(s + k) * w..(s + k + 1) * w];
            for (dst, &v) in out_row.iter_mut().zip(src_row) {
                *dst += wk * v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ramp_x(width: u32, height: u32) -> GrayImage {
        let data = (0..height)
            .flat_map(|_| (0..width).map(|x| x as f32))
            .collect();
        GrayImage::new(width, height, data).unwrap()
    }

    #[test]
    fn new_checks_length_and_accessors_index_row_major() {
        assert!(GrayImage::new(3, 2, vec![0.0; 5]).is_none());
        let img = GrayImage::new(3, 2, vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5]).unwrap();
        assert_eq!(img.size(), ImageSize::new(3, 2));
        assert_eq!(img.get(2, 0), Some(0.2));
        assert_eq!(img.get(0, 1), Some(0.3));
        assert_eq!(img.get(3, 0), None);
        assert_eq!(img.get(0, 2), None);
        assert_eq!(img.row(1), &[0.3, 0.4, 0.5]);
        assert!(img.row(2).is_empty());
        assert_eq!(GrayImage::filled(2, 2, -0.5).data(), &[-0.5; 4]);
        let sub = img.sub_image(1, 0, 2, 2).unwrap();
        assert_eq!(sub.data(), &[0.1, 0.2, 0.4, 0.5]);
        assert_eq!(img.sub_image(0, 0, 3, 2).unwrap(), img);
        assert!(img.sub_image(2, 0, 2, 1).is_none());
        assert!(img.sub_image(0, 1, 1, 2).is_none());
        assert!(img.sub_image(u32::MAX, 0, 2, 1).is_none());
    }

    #[test]
    fn luma8_round_trip_is_exact() {
        let raw: Vec<u8> = (0..=255).collect();
        let buf = image::GrayImage::from_raw(16, 16, raw.clone()).unwrap();
        let img = GrayImage::from_luma8(&buf);
        assert_eq!(img.get(0, 0), Some(-0.5));
        assert_eq!(img.get(15, 15), Some(0.5));
        assert_eq!(img.to_luma8().as_raw(), &raw);
    }

    #[test]
    fn colour_luma_uses_rec709_weights_and_stays_in_range() {
        let px: [u8; 12] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        let l = channels_to_luma(&px, 3, 255.0);
        let want = [0.2126 - 0.5, 0.7152 - 0.5, 0.0722 - 0.5, 0.5];
        for (got, want) in l.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        let px16: [u16; 2] = [1, 65535];
        let l16 = channels_to_luma(&px16, 1, 65535.0);
        assert_eq!(l16[0], 1.0 / 65535.0 - 0.5);
        assert_eq!(l16[1], 0.5);
        // Alpha is ignored.
        assert_eq!(channels_to_luma(&[0u8, 255, 255, 0], 2, 255.0), [-0.5, 0.5]);
    }

    #[test]
    fn resize_to_same_size_is_identity_and_constant_stays_constant() {
        let img = ramp_x(7, 5);
        assert_eq!(img.resize(7, 5), img);
        let c = GrayImage::filled(37, 23, 0.25).resize(11, 61);
        assert_eq!(c.size(), ImageSize::new(11, 61));
        assert!(c.data().iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn downscale_by_two_samples_at_mapped_centres() {
        // Output pixel i covers input [2i, 2i+2): its centre is input position 2i + 0.5 in
        // pixel indices. A linear ramp is reproduced exactly away from the edges.
        let out = ramp_x(32, 4).resize(16, 4);
        for i in 1..15 {
            assert!((out.get(i, 2).unwrap() - (2.0 * i as f32 + 0.5)).abs() < 1e-4);
        }
        // PIL's antialiased bilinear weights for a halving: 1/8, 3/8, 3/8, 1/8.
        let mut data = vec![0.0; 16];
        data[4] = 1.0;
        let out = GrayImage::new(16, 1, data).unwrap().resize(8, 1);
        let want = [0.0, 0.125, 0.375, 0.0, 0.0, 0.0, 0.0, 0.0];
        for (got, want) in out.data().iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{:?}", out.data());
        }
    }

    #[test]
    fn upscale_by_two_is_bilinear_at_mapped_centres() {
        // Output pixel i samples input position i/2 − 0.25; edges clamp to the border pixel.
        let out = ramp_x(8, 3).resize(16, 6);
        assert_eq!(out.get(0, 0), Some(0.0));
        assert_eq!(out.get(15, 5), Some(7.0));
        for i in 1..15 {
            let want = i as f32 / 2.0 - 0.25;
            assert!((out.get(i, 3).unwrap() - want).abs() < 1e-5);
        }
    }

    #[test]
    fn downscale_antialiases_fine_stripes() {
        // Alternating ±0.5 columns carry no energy below Nyquist of the small image: a
        // point-sampling resizer would keep ±0.5, an area-correct one gives the mean 0.
        let data = (0..64 * 8)
            .map(|i| if i % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        let out = GrayImage::new(64, 8, data).unwrap().resize(16, 2);
        assert!(
            out.data().iter().all(|v| v.abs() < 0.07),
            "{:?}",
            out.data()
        );
        let interior = &out.row(1)[1..15];
        assert!(interior.iter().all(|v| v.abs() < 1e-5), "{interior:?}");
    }

    #[test]
    fn resize_preserves_mean_of_a_random_image() {
        let mut state = 12345u32;
        let data = (0..96 * 72)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        let img = GrayImage::new(96, 72, data).unwrap();
        let mean = |g: &GrayImage| g.data().iter().sum::<f32>() / g.data().len() as f32;
        let small = img.resize(24, 18);
        assert!((mean(&small) - mean(&img)).abs() < 2e-3);
        assert!(small.data().iter().all(|v| (-0.5..=0.5).contains(v)));
        // Non-integer factors, different per axis.
        let odd = img.resize(37, 101);
        assert_eq!(odd.size(), ImageSize::new(37, 101));
        assert!((mean(&odd) - mean(&img)).abs() < 5e-3);
    }

    #[test]
    fn resize_handles_empty_images() {
        assert_eq!(GrayImage::filled(0, 0, 0.0).resize(3, 2).data(), &[0.0; 6]);
        assert_eq!(GrayImage::filled(4, 4, 0.3).resize(0, 5).data().len(), 0);
        assert_eq!(GrayImage::filled(4, 4, 0.3).resize(5, 0).size().width, 5);
    }
}
