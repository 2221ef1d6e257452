//! fkd-data: everything between files on disk and batches of tensors.
//!
//! - Annotation parsers, each strict and streaming where files are large: IMM `.asf`
//!   ([`asf`]), dlib/iBUG XML ([`dlib_xml`]), 300-W `.pts` and box lists ([`pts`], [`boxes`]).
//! - Images ([`img`]): JPEG, PNG (8- and 16-bit) and PPM to grayscale `f32` in `[-0.5, 0.5]`,
//!   resizing; face crops ([`crop`]) with the landmark mapping into crop space and back.
//! - Data sets ([`dataset`]): IMM with its person split, 300-W XML sets with a seeded split,
//!   a load policy (stop at the first bad sample or skip and count it), and seeded, parallel
//!   batching into candle tensors ([`batch`]).
//! - [`inventory`]: what `cargo xtask data check` reports about a data folder.
//! - `fetch` (feature `fetch`): download, check and unpack the public archives.
//!
//! Every failure is a [`DataError`] that names the file (and line or image index); nothing here
//! panics on user data.

pub mod asf;
pub mod batch;
pub mod boxes;
pub mod crop;
pub mod dataset;
pub mod dlib_xml;
pub mod error;
#[cfg(feature = "fetch")]
pub mod fetch;
pub mod img;
pub mod inventory;
pub mod pts;

pub use error::{DataError, Result};
