//! The flip test's merge: a face's points predicted from the image and from its mirror image,
//! combined into one estimate.
//!
//! A net trained with flips sees a mirrored face as an ordinary one, so its prediction for
//! the mirror image, mapped back (x → W − x) and renumbered (the mirror's left eye is the
//! face's right eye), is a second estimate of the same points; averaging the two cancels
//! whatever left/right bias the net has. Decoding the raw outputs into points is the caller's
//! (regression pairs and heatmaps decode differently), so this works on points.

use crate::{Result, TrainError};
use fkd_core::PixelPoint;

/// The mean of `points` and `flipped` mapped back: point `i` of the result averages `points[i]`
/// with `(width − flipped[mirror[i]].x, flipped[mirror[i]].y)`. All points are in the pixels
/// of the same `width`-wide input (the mirror image was made by reversing its columns).
pub fn merge_flipped(
    points: &[PixelPoint],
    flipped: &[PixelPoint],
    width: f32,
    mirror: &[usize],
) -> Result<Vec<PixelPoint>> {
    if points.len() != mirror.len() || flipped.len() != mirror.len() {
        return Err(TrainError::Config(format!(
            "flip test: {} points and {} mirrored points for a mirror permutation of {} points",
            points.len(),
            flipped.len(),
            mirror.len()
        )));
    }
    points
        .iter()
        .zip(mirror)
        .map(|(p, &m)| {
            let f = flipped.get(m).ok_or_else(|| {
                TrainError::Config(format!(
                    "flip test: the mirror permutation names point {m} of {}",
                    flipped.len()
                ))
            })?;
            Ok(PixelPoint::new(
                0.5 * (p.x + width - f.x),
                0.5 * (p.y + f.y),
            ))
        })
        .collect()
}
