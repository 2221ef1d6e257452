//! The one error type of fkd-data. Every variant names the file it is about, and the line (or
//! image index) where one is known, so a user can open the file and fix it.

use fkd_core::{FaceBox, ImageSize};
use std::path::PathBuf;

/// What can go wrong while reading, checking or batching face data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// An annotation file does not follow its format.
    #[error("{}:{line}: {reason}", path.display())]
    Malformed {
        /// The annotation file.
        path: PathBuf,
        /// 1-based line of the problem (0 when the problem is the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A face has a different number of points than expected or declared.
    #[error("{}:{line}: expected {expected} points, found {found}", path.display())]
    PointCount {
        /// The annotation file.
        path: PathBuf,
        /// 1-based line of the face (or of the declaration) in the file.
        line: usize,
        /// Points the layout or the file's own header asks for.
        expected: usize,
        /// Points actually read.
        found: usize,
    },
    /// A coordinate is not a finite number or lies outside its allowed range.
    #[error("{}:{line}: coordinate {value} {reason}", path.display())]
    Coordinate {
        /// The annotation file.
        path: PathBuf,
        /// 1-based line of the coordinate.
        line: usize,
        /// The offending value.
        value: f32,
        /// Why it is rejected ("is not finite", "is outside [0, 1]", ...).
        reason: String,
    },
    /// An image file is missing, truncated or in a format that cannot be decoded.
    #[error("{}: cannot decode image: {source}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// A face box does not overlap its image.
    #[error("{}: face box {bbox} lies outside the {size} image", path.display())]
    BoxOutside {
        /// The annotation (or image) file.
        path: PathBuf,
        /// The box.
        bbox: FaceBox,
        /// The image's size.
        size: ImageSize,
    },
    /// A data set as a whole is unusable (empty folder, missing split, duplicate entries, ...).
    #[error("{}: {reason}", path.display())]
    Dataset {
        /// The data set's folder or index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Downloading or unpacking an archive failed.
    #[error("{}: {reason}", target.display())]
    Fetch {
        /// Where the archive was being written or unpacked.
        target: PathBuf,
        /// What went wrong, with the URL where one is involved.
        reason: String,
    },
    /// Building a batch tensor failed.
    #[cfg(feature = "candle")]
    #[error("building a batch: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Result with [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// Shorthand for [`DataError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`DataError::Malformed`].
    pub fn malformed(path: impl Into<PathBuf>, line: usize, reason: impl Into<String>) -> Self {
        Self::Malformed {
            path: path.into(),
            line,
            reason: reason.into(),
        }
    }
}
