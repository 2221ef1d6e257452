//! fkd-data: everything between files on disk and batches of tensors.
//!
//! ```
//! use fkd_core::Layout;
//! use fkd_data::dataset::{DataSet, LoadPolicy};
//! use std::path::Path;
//!
//! // A dlib/iBUG XML: every `<box>` with its 68 `<part>`s is one face.
//! let xml = Path::new("../../fixtures/faces/faces.xml");
//! let set = DataSet::dlib_xml(xml, Layout::IBUG68, LoadPolicy::Strict)?;
//! assert_eq!(set.len(), 14);
//! let face = &set.samples[0];
//! assert_eq!(face.points.len(), 68);
//! // The face's crop as Part 3's nets see it: the box enlarged 1.25×, square, 64×64 pixels.
//! let crop = fkd_data::crop::Crop::around(face.bbox.expect("a box"), 1.25, 64);
//! let pixels = crop.apply(&fkd_data::img::load_gray(&face.image)?, 0.0);
//! assert_eq!((pixels.width(), pixels.height()), (64, 64));
//! # Ok::<(), fkd_data::DataError>(())
//! ```
//!
//! The parsers, images, crops, data sets and [`prepare`] steps need no Candle; the default
//! feature `candle` adds [`batch`] (stacking prepared samples into tensors). With
//! `default-features = false` the crate builds without any Candle crate.
//!
//! - Annotation parsers, each strict and streaming where files are large: IMM `.asf`
//!   ([`asf`]), dlib/iBUG XML ([`dlib_xml`]), 300-W `.pts` and box lists ([`pts`], [`boxes`]).
//! - Images ([`img`]): JPEG, PNG (8- and 16-bit) and PPM to grayscale `f32` in `[-0.5, 0.5]`,
//!   resizing; face crops ([`crop`]) with the landmark mapping into crop space and back.
//! - Data sets ([`dataset`]): IMM with its person split, 300-W XML sets with a seeded split,
//!   a load policy (stop at the first bad sample or skip and count it); the [`prepare`] steps
//!   that turn a sample into a network input and target; and (feature `candle`) seeded,
//!   parallel batching into candle tensors (`batch`).
//! - [`inventory`]: what `cargo xtask data check` reports about a data folder.
//! - `fetch` (feature `fetch`): download, check and unpack the public archives.
//!
//! Every failure is a [`DataError`] that names the file (and line or image index); nothing here
//! panics on user data.

pub mod asf;
#[cfg(feature = "candle")]
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
pub mod photo;
pub mod prepare;
pub mod pts;

pub use error::{DataError, Result};
