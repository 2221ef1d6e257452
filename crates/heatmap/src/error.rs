//! What can go wrong between points and maps.

use thiserror::Error;

/// A heatmap error; each says which point or map, and what was expected.
#[derive(Debug, Error, PartialEq)]
pub enum HeatmapError {
    /// The buffer does not hold `maps × height × width` values.
    #[error("heatmaps: {found} values for {maps} maps of {width}×{height}")]
    Shape {
        /// Values given.
        found: usize,
        /// Maps expected.
        maps: usize,
        /// Map width.
        width: u32,
        /// Map height.
        height: u32,
    },
    /// A setting is out of range (zero-size map, non-positive sigma).
    #[error("heatmaps: {0}")]
    Config(String),
    /// A map holds a NaN or infinite value, so it has no peak.
    #[error("heatmaps: map {map} is not finite")]
    NotFinite {
        /// The map's index.
        map: usize,
    },
}

/// Results of this crate.
pub type Result<T, E = HeatmapError> = std::result::Result<T, E>;
