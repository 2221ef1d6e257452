//! fkd-core: the vocabulary every other fkd crate speaks, with no heavy dependencies.
//!
//! ```
//! use fkd_core::{ImageSize, Layout, PixelPoint};
//!
//! // A point in the pixels of a 640×480 photo, as fractions of its size.
//! let nose = PixelPoint::new(320.0, 300.0).to_norm(ImageSize::new(640, 480));
//! assert_eq!((nose.x, nose.y), (0.5, 0.625));
//! // iBUG's outer eye corners swap places when a face is mirrored.
//! assert_eq!(Layout::IBUG68.mirror[36], 45);
//! ```
//!
//! - [`geometry`]: [`PixelPoint`] (pixels of some image) and [`NormPoint`] (fractions of that
//!   image's width and height) are distinct types, converted only through an [`ImageSize`];
//!   [`FaceBox`] is an axis-aligned face rectangle in pixels.
//! - [`affine`]: [`Affine`], a 2×3 matrix on pixel points (composition, inverse): how an
//!   augmentation moves points, and how a network input's pixels map back to the source photo.
//! - [`layout`]: the two landmark layouts fkd knows, [`Layout::IMM58`] and [`Layout::IBUG68`],
//!   with their paths (contours), connectivity, left/right mirror permutation and the named points
//!   the write-up and the metrics use (nose tip, eye corners).
//! - [`io`]: [`write_atomic`](io::write_atomic) and [`write_bytes_atomic`](io::write_bytes_atomic),
//!   the one atomic file writer (temporary file, fsync, rename) behind every file fkd writes,
//!   failing with a [`WriteError`] that names the file and the step.
//!
//! # Coordinate convention
//! All pixel coordinates in fkd are *continuous*: pixel `(c, r)` covers `[c, c+1) × [r, r+1)`,
//! so its centre is `(c + 0.5, r + 0.5)`. With this convention resizing an image by `s` maps a
//! point by `x' = s·x`, a horizontal flip of a `W`-wide image maps `x' = W − x`, and a normalised
//! coordinate is simply `x / W`. Annotations given in other conventions (IMM's relative
//! coordinates, dlib's integer pixels) are taken as they are: the half-pixel difference is far
//! below annotation noise, and the same convention is used everywhere after loading.

pub mod affine;
pub mod geometry;
pub mod io;
pub mod layout;

pub use affine::Affine;
pub use geometry::{FaceBox, ImageSize, NormPoint, PixelPoint};
pub use io::{WriteError, WriteStep};
pub use layout::{Layout, Ocular, Path};
