//! Preparing samples for a network: the [`Prepare`] step that turns a [`Sample`] into a model
//! input and a regression target ([`Prepared`]), with the map from input pixels back to the
//! source photo, and the two plain steps ([`ResizeWhole`] for whole photos, [`CropFace`] for
//! face crops). Nothing here needs Candle: [`crate::batch`] (feature `candle`) stacks prepared
//! samples into tensors.

use crate::crop::Crop;
use crate::dataset::Sample;
use crate::img::{GrayImage, load_gray};
use crate::{DataError, Result};
use fkd_core::{Affine, ImageSize, NormPoint, PixelPoint};
use rand_chacha::ChaCha8Rng;

/// A sample made ready for a network: its input image and its target vector.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The network input, one channel, values in about `[-0.5, 0.5]`.
    pub image: GrayImage,
    /// The regression target (normalised `x, y` pairs for the regression parts, heatmaps
    /// flattened for Part 4).
    pub target: Vec<f32>,
    /// Maps a point in `image`'s pixels back to the source photo's pixels (the inverse of the
    /// resize, crop and geometric augmentation that made `image`), so that predictions are scored
    /// and drawn where the annotation lives. A flip is part of the map; the renumbering of points
    /// it implies is not (targets are already in layout order).
    pub to_source: Affine,
}

/// Turns one sample into a [`Prepared`] input/target pair. Implemented by closures, by the
/// plain steps of this module ([`ResizeWhole`], [`CropFace`]) and by augmentation pipelines.
pub trait Prepare: Send + Sync {
    /// Prepares `sample`; `rng` is private to this sample, epoch and seed.
    fn prepare(&self, sample: &Sample, rng: &mut ChaCha8Rng) -> Result<Prepared>;
}

impl<F> Prepare for F
where
    F: Fn(&Sample, &mut ChaCha8Rng) -> Result<Prepared> + Send + Sync,
{
    fn prepare(&self, sample: &Sample, rng: &mut ChaCha8Rng) -> Result<Prepared> {
        self(sample, rng)
    }
}

/// The targets as flat normalised `x0, y0, x1, y1, ...` for the chosen points (all when
/// `select` is `None`). Fails, naming the image, when the sample has no such point.
pub fn norm_target(
    sample: &Sample,
    points: &[NormPoint],
    select: Option<&[usize]>,
) -> Result<Vec<f32>> {
    let pick = |i: usize| {
        points.get(i).copied().ok_or_else(|| DataError::Dataset {
            path: sample.image.clone(),
            reason: format!(
                "face {} has no point {i} ({} points)",
                sample.id,
                points.len()
            ),
        })
    };
    let chosen: Vec<NormPoint> = match select {
        Some(idx) => idx.iter().map(|&i| pick(i)).collect::<Result<_>>()?,
        None => points.to_vec(),
    };
    Ok(chosen.iter().flat_map(|p| [p.x, p.y]).collect())
}

/// Parts 1 and 2 without augmentation: the whole image, resized to `size`; the target is the
/// chosen points in normalised coordinates (which a resize leaves unchanged).
#[derive(Clone, Debug)]
pub struct ResizeWhole {
    /// The network's input size.
    pub size: ImageSize,
    /// Which points to regress (`Some(vec![52])`: the IMM nose tip); `None` for all.
    pub select: Option<Vec<usize>>,
}

impl Prepare for ResizeWhole {
    fn prepare(&self, sample: &Sample, _rng: &mut ChaCha8Rng) -> Result<Prepared> {
        let image = load_gray(&sample.image)?.resize(self.size.width, self.size.height);
        let norm: Vec<NormPoint> = sample
            .points
            .iter()
            .map(|p| p.to_norm(sample.size))
            .collect();
        let target = norm_target(sample, &norm, self.select.as_deref())?;
        let to_source = Affine::scaling(
            f64::from(sample.size.width) / f64::from(self.size.width),
            f64::from(sample.size.height) / f64::from(self.size.height),
        );
        Ok(Prepared {
            image,
            target,
            to_source,
        })
    }
}

/// Part 3 without augmentation: the face box enlarged by `enlarge`, made square, cropped and
/// resized to `side × side`; the target is every point in the crop's normalised coordinates.
#[derive(Clone, Debug)]
pub struct CropFace {
    /// Factor applied to the longer side of the face box.
    pub enlarge: f32,
    /// Output side in pixels (224 for ResNet-18).
    pub side: u32,
}

impl CropFace {
    /// The crop this step takes of `sample` (its box, or the tight box of its points).
    pub fn crop_of(&self, sample: &Sample) -> Result<Crop> {
        let bbox = sample
            .bbox
            .or_else(|| fkd_core::FaceBox::around(&sample.points))
            .ok_or_else(|| DataError::Dataset {
                path: sample.image.clone(),
                reason: format!("face {} has neither a box nor points to crop to", sample.id),
            })?;
        Ok(Crop::around(bbox, self.enlarge, self.side))
    }
}

impl Prepare for CropFace {
    fn prepare(&self, sample: &Sample, _rng: &mut ChaCha8Rng) -> Result<Prepared> {
        let crop = self.crop_of(sample)?;
        let image = crop.apply(&load_gray(&sample.image)?, 0.0);
        let out = crop.out_size();
        let norm: Vec<NormPoint> = crop
            .points_to_crop(&sample.points)
            .into_iter()
            .map(|p: PixelPoint| p.to_norm(out))
            .collect();
        let target = norm_target(sample, &norm, None)?;
        Ok(Prepared {
            image,
            target,
            to_source: crop.to_source_map(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn selected_targets() {
        let s = Sample {
            image: "0.png".into(),
            size: ImageSize::new(4, 2),
            points: vec![PixelPoint::new(0.0, 1.0)],
            bbox: None,
            person: None,
            id: "0".into(),
            photo_scale: 1.0,
        };
        let pts = [NormPoint::new(0.1, 0.2), NormPoint::new(0.3, 0.4)];
        assert_eq!(norm_target(&s, &pts, Some(&[1])).unwrap(), vec![0.3, 0.4]);
        assert!(norm_target(&s, &pts, Some(&[5])).is_err());
    }
}
