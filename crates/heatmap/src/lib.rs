//! fkd-heatmap: keypoints as Gaussian heatmaps, for the fully convolutional nets of Part 4.
//!
//! ```
//! use fkd_core::{ImageSize, PixelPoint};
//! use fkd_heatmap::{Decoder, decode, encode};
//!
//! // A point at sub-pixel precision becomes a 32×32 Gaussian map (σ 1.5 map pixels)…
//! let size = ImageSize::new(32, 32);
//! let map = encode(&[PixelPoint::new(12.3, 20.7)], size, 1.5)?;
//! // …and DARK decoding finds it again within a thousandth of a pixel.
//! let back = decode(&map, size, Decoder::Dark)?;
//! assert!(back.distance(PixelPoint::new(12.3, 20.7)) < 1e-3);
//! # Ok::<(), fkd_heatmap::HeatmapError>(())
//! ```
//!
//! A keypoint becomes a map that peaks at it ([`encode`]), and a predicted map becomes a point
//! again ([`decode`]). Both work on plain `f32` slices in row-major `(point, row, column)` order,
//! so any crate can use them without tensors. [`HeatmapTargets`] turns any loader step of the
//! regression parts into one whose targets are maps.
//!
//! Coordinates follow fkd's continuous convention (see `fkd_core`): map pixel `(c, r)` covers
//! `[c, c+1) × [r, r+1)` and its centre is `(c + 0.5, r + 0.5)`. A map of `w × h` pixels over an
//! input of `W × H` relates to it by `x_input = x_map · W / w`, so a point drawn at a map pixel's
//! centre decodes to that centre, and resizing between map and input is a pure scale.
//!
//! Decoding methods ([`Decoder`]):
//! - `Argmax`: the centre of the hottest pixel (what the write-up did); error up to half a map
//!   pixel.
//! - `Shift`: argmax moved a quarter pixel towards the hotter neighbour on each axis (the
//!   Hourglass/HRNet practice); halves the typical error.
//! - `Dark`: the peak of the second-order Taylor expansion of the log map around the argmax
//!   (Zhang et al., "Distribution-Aware Coordinate Representation", CVPR 2020); exact for a
//!   Gaussian, a few hundredths of a pixel on real maps.

pub mod decode;
pub mod encode;
pub mod error;
pub mod step;

pub use decode::{Decoder, decode, decode_all};
pub use encode::{encode, gaussian};
pub use error::{HeatmapError, Result};
pub use step::HeatmapTargets;
