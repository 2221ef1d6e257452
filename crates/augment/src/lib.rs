//! fkd-augment: data augmentation that moves an image and its landmarks together.
//!
//! ```
//! use fkd_augment::{AugmentConfig, Augmenter};
//! use fkd_core::{Layout, PixelPoint};
//! use fkd_data::img::GrayImage;
//! use rand::SeedableRng;
//!
//! // One face: a 160×120 image and its 58 IMM points.
//! let img = GrayImage::filled(160, 120, 0.0);
//! let points: Vec<PixelPoint> = (0..58).map(|i| PixelPoint::new(40.0 + i as f32, 60.0)).collect();
//! // The write-up's Part 2 augmentation plus its proposed stretch, seeded.
//! let aug = Augmenter::new(AugmentConfig::default().with_stretch(), Layout::IMM58)?;
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let (moved, moved_points) = aug.apply(&img, &points, &mut rng);
//! assert_eq!((moved.width(), moved.height(), moved_points.len()), (160, 120, 58));
//! # Ok::<(), fkd_augment::AugmentError>(())
//! ```
//!
//! - [`Affine`] (from `fkd_core`, re-exported): a 2×3 matrix on pixel points, with composition
//!   and inverse.
//! - [`transform`]: the individual geometric [`Transform`]s (flip, scale/stretch, rotation,
//!   shift), each a matrix about the image centre.
//! - [`warp`](mod@warp): resampling an image through an affine map ([`warp()`]), bilinear at pixel
//!   centres, with a [`Fill`] for pixels that come from outside the image.
//! - [`config`]: [`AugmentConfig`], the serde-able ranges (its `Default` is the write-up's Part 2).
//! - [`augmenter`]: [`Augmenter`], which draws one [`Params`] per sample from a seeded RNG and
//!   applies it: one affine matrix maps the points and (inverted) warps the pixels, then
//!   brightness and contrast jitter. A flip also permutes the points with the layout's mirror
//!   permutation, so index `i` is still the layout's point `i`.
//! - [`prepare`]: [`AugmentedResize`] (Parts 1–2) and [`AugmentedCrop`] (Part 3), the data
//!   loader's [`Prepare`](fkd_data::prepare::Prepare) steps, which decode each image once per run.
//!
//! Everything follows fkd's continuous coordinate convention (see `fkd_core`): pixel `(c, r)`
//! covers `[c, c+1) × [r, r+1)`, so the same matrix is correct for points and for pixel centres,
//! and a landmark stays on the feature it marks to within a small fraction of a pixel.

pub mod augmenter;
pub mod config;
pub mod prepare;
pub mod transform;
pub mod warp;

pub use augmenter::{Augmenter, Params, Patch};
pub use config::{AugmentConfig, AugmentError, Interval, Occlusion};
pub use fkd_core::Affine;
pub use prepare::{AugmentedCrop, AugmentedResize};
pub use transform::Transform;
pub use warp::{Fill, warp};

#[cfg(test)]
pub(crate) mod testutil;
