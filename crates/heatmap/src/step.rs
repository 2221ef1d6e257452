//! The loader step of the heatmap nets: any [`Prepare`] step whose target is normalised `(x, y)`
//! pairs (the regression parts' steps) becomes one whose target is a Gaussian map per point at
//! a chosen map size, with the same input image and the same map back to the source photo.

use crate::encode::encode;
use fkd_core::{ImageSize, NormPoint};
use fkd_data::dataset::Sample;
use fkd_data::prepare::{Prepare, Prepared};
use fkd_data::{DataError, Result};
use rand_chacha::ChaCha8Rng;

/// Wraps `inner`, replacing its coordinate targets by heatmaps of `map` size and `sigma` (in
/// map pixels). A point the augmentation moved out of the input gives an all-zero map.
#[derive(Clone, Debug)]
pub struct HeatmapTargets<P> {
    inner: P,
    map: ImageSize,
    sigma: f32,
}

impl<P: Prepare> HeatmapTargets<P> {
    /// Maps of `map` size (e.g. 64×64 for a 256-pixel input) with Gaussians of `sigma` pixels.
    pub fn new(inner: P, map: ImageSize, sigma: f32) -> Self {
        Self { inner, map, sigma }
    }

    /// The map size.
    pub fn map_size(&self) -> ImageSize {
        self.map
    }

    /// The Gaussians' σ in map pixels.
    pub fn sigma(&self) -> f32 {
        self.sigma
    }

    /// The wrapped step.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: Prepare> Prepare for HeatmapTargets<P> {
    fn prepare(&self, sample: &Sample, rng: &mut ChaCha8Rng) -> Result<Prepared> {
        let p = self.inner.prepare(sample, rng)?;
        let points: Vec<_> = p
            .target
            .chunks_exact(2)
            .map(|c| NormPoint::new(c[0], c[1]).to_pixel(self.map))
            .collect();
        let target = encode(&points, self.map, self.sigma).map_err(|e| DataError::Dataset {
            path: sample.image.clone(),
            reason: format!("face {}: {e}", sample.id),
        })?;
        Ok(Prepared { target, ..p })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Decoder, decode_all};
    use fkd_core::{Affine, PixelPoint};
    use fkd_data::img::GrayImage;
    use rand::SeedableRng;

    /// Decoding the maps of a prepared sample gives back its points (scaled from map to input
    /// pixels) and, through `to_source`, the annotation.
    #[test]
    fn maps_decode_back_to_the_targets_and_the_source() {
        let truth = [PixelPoint::new(30.3, 41.9), PixelPoint::new(100.6, 12.2)];
        let inner = move |_: &Sample, _: &mut ChaCha8Rng| -> Result<Prepared> {
            // A 128×96 input made by halving a 256×192 photo.
            let target = truth
                .iter()
                .flat_map(|p| [p.x / 2.0 / 128.0, p.y / 2.0 / 96.0])
                .collect();
            Ok(Prepared {
                image: GrayImage::filled(128, 96, 0.0),
                target,
                to_source: Affine::scaling(2.0, 2.0),
            })
        };
        let step = HeatmapTargets::new(inner, ImageSize::new(32, 24), 1.5);
        let sample = Sample {
            image: "face.png".into(),
            size: ImageSize::new(256, 192),
            points: truth.to_vec(),
            bbox: None,
            person: None,
            id: "face".into(),
            photo_scale: 1.0,
        };
        let p = step
            .prepare(&sample, &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap();
        assert_eq!(p.target.len(), 2 * 32 * 24);
        let maps = decode_all(&p.target, 2, step.map_size(), Decoder::Dark).unwrap();
        for (m, t) in maps.iter().zip(&truth) {
            // Map → input (×4), input → source (to_source).
            let back = p.to_source.apply(PixelPoint::new(m.x * 4.0, m.y * 4.0));
            assert!(back.distance(*t) < 0.05, "{back:?} vs {t:?}");
        }
    }
}
