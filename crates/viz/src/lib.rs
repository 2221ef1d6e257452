//! fkd-viz: the figures of the reports, all written as PNG with no system fonts needed.
//!
//! ```
//! use fkd_core::PixelPoint;
//! use fkd_data::img::GrayImage;
//! use fkd_viz::{PREDICTION, draw_landmarks};
//!
//! // A mid-grey 64×48 image with two predicted points drawn in red, at twice the size.
//! let img = GrayImage::filled(64, 48, 0.0);
//! let points = [PixelPoint::new(20.5, 10.5), PixelPoint::new(40.5, 30.5)];
//! let drawn = draw_landmarks(&img, &[(&points[..], PREDICTION)], None, 2);
//! assert_eq!(drawn.dimensions(), (128, 96));
//! assert_eq!(*drawn.get_pixel(41, 21), PREDICTION);
//! ```
//!
//! - [`landmarks`]: faces with their landmarks and contours drawn on them ([`TRUTH`] blue,
//!   [`PREDICTION`] red, as in the write-up).
//! - [`grid`](mod@grid): sample grids (e.g. augmented samples from the loader), with captions.
//! - [`plot`]: loss curves (train/validation, the lr study) and cumulative error distributions.
//! - [`filters`]: the first convolution's filters as a grid of grey tiles.
//! - [`heat`]: heatmaps blended over a face (Part 4's true and predicted maps, and their sum).
//! - [`report`]: a small self-contained HTML write-up (`runs/partN/report.html`).
//!
//! Text is rendered with DejaVu Sans, embedded in the binary (the `dejavu` crate) and registered
//! with plotters on first use, so figures look the same on every machine. Every file is written
//! atomically (temporary file + rename), so a crash never leaves a half-written figure behind.

pub mod filters;
pub mod grid;
pub mod heat;
pub mod landmarks;
pub mod plot;
pub mod report;

pub use filters::filter_grid;
pub use grid::{captioned_grid, grid};
pub use heat::{heat_overlay, sum_maps};
pub use landmarks::{PREDICTION, TRUTH, draw_landmarks, draw_landmarks_rgb};
pub use plot::{Curve, PLOT_SIZE, ced_curve, epoch_curves, loss_curves};
pub use report::{Report, escape_html};

use image::codecs::png::PngEncoder;
use image::{ImageEncoder, RgbImage};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What can go wrong while making a figure or a report.
#[derive(Debug, thiserror::Error)]
pub enum VizError {
    /// The folder of an output file could not be created.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The output file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Creating, writing, flushing or renaming an output file failed.
    #[error(transparent)]
    Write(#[from] fkd_core::WriteError),
    /// Encoding a PNG failed.
    #[error("cannot encode {path}: {source}")]
    Encode {
        /// The output file.
        path: PathBuf,
        /// The underlying error.
        source: image::ImageError,
    },
    /// Plotters failed to draw a chart.
    #[error("cannot draw {path}: {message}")]
    Plot {
        /// The output file (empty for an in-memory figure).
        path: PathBuf,
        /// Plotters' description of the failure.
        message: String,
    },
    /// The embedded font could not be registered (a corrupt font would be a build problem).
    #[error("cannot register the embedded font")]
    Font,
    /// A weight buffer does not hold as many values as its shape says.
    #[error("weights of shape {shape:?} need {expected} values, got {actual}")]
    Shape {
        /// The shape given (`out, in, kh, kw`).
        shape: [usize; 4],
        /// The product of the shape.
        expected: usize,
        /// The length of the buffer.
        actual: usize,
    },
    /// The data for a figure does not fit it (e.g. heatmap values that are not whole maps).
    #[error("cannot draw: {0}")]
    Figure(String),
}

/// Result alias of this crate.
pub type Result<T, E = VizError> = std::result::Result<T, E>;

/// Writes `img` to `path` as PNG, atomically (see [`fkd_core::io::write_atomic`]). Missing
/// parent directories are created.
pub fn save_png(img: &RgbImage, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|source| VizError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    write_atomic(path, &bytes)
}

/// Creates the folder of `path` if needed and writes `bytes` to `path` atomically, so readers
/// see either the old file or the complete new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| VizError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(fkd_core::io::write_bytes_atomic(path, bytes)?)
}

/// Registers DejaVu Sans as plotters' "sans-serif" family, once per process.
pub(crate) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        use plotters::style::{FontStyle, register_font};
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok { Ok(()) } else { Err(VizError::Font) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use image::Rgb;

    #[test]
    fn save_png_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/fig.png");
        let mut img = RgbImage::from_pixel(5, 3, Rgb([1, 2, 3]));
        img.put_pixel(4, 2, Rgb([200, 100, 50]));
        save_png(&img, &path).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, img);
        let entries: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("fig.png")]);
    }

    #[test]
    fn save_png_names_the_file_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should go: the rename cannot replace it.
        let path = dir.path().join("taken.png");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), b"x").unwrap();
        let err = save_png(&RgbImage::new(1, 1), &path).unwrap_err();
        assert!(matches!(&err, VizError::Write(e) if e.path == path));
        assert!(err.to_string().contains("taken.png"));
        assert!(path.join("x").exists());
    }

    #[test]
    fn save_png_names_the_file_when_its_folder_cannot_be_made() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the folder should go.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let path = dir.path().join("file/sub/fig.png");
        let err = save_png(&RgbImage::new(1, 1), &path).unwrap_err();
        assert!(matches!(&err, VizError::Io { path: p, .. } if *p == path));
        assert!(err.to_string().contains("fig.png"), "{err}");
    }

    #[test]
    fn font_registers() {
        ensure_font().unwrap();
    }
}
