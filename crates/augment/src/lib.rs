//! fkd-augment: data augmentation that moves an image and its landmarks together.
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
//!   loader's [`Prepare`](fkd_data::batch::Prepare) steps, which decode each image once per run.
//!
//! Everything follows fkd's continuous coordinate convention (see `fkd_core`): pixel `(c, r)`
//! covers `[c, c+1) × [r, r+1)`, so the same matrix is correct for points and for pixel centres,
//! and a landmark stays on the feature it marks to within a small fraction of a pixel.

pub mod augmenter;
pub mod config;
pub mod prepare;
pub mod transform;
pub mod warp;

pub use augmenter::{Augmenter, Params};
pub use config::{AugmentConfig, AugmentError, Interval};
pub use fkd_core::Affine;
pub use prepare::{AugmentedCrop, AugmentedResize};
pub use transform::Transform;
pub use warp::{Fill, warp};

#[cfg(test)]
pub(crate) mod testutil;
