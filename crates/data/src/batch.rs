//! Batches: turning samples into candle tensors, in parallel and reproducibly.
//!
//! A [`Loader`] walks a list of [`Sample`]s in a seeded order (a fresh permutation each epoch,
//! or file order for validation), asks a [`Prepare`] step to turn each sample into a model
//! input and a regression target, and stacks them into a [`Batch`]. Samples of one batch are
//! prepared in parallel with rayon; each gets its own RNG derived from (seed, epoch, sample
//! index), so the result is the same whatever the thread scheduling and batch size.
//! [`Loader::prefetched`] prepares the next batches on a helper thread while the caller trains
//! on the current one; the helper hands its work to the same rayon pool that runs the matrix
//! products, so the two fill each other's idle time instead of competing for extra cores.
//!
//! candle-datasets has a `Batcher` that stacks tensors from an iterator; it does not shuffle,
//! seed, decode in parallel or carry sample indices, and pulls in parquet, tokenizers and
//! hf-hub, so fkd keeps this small loader instead (see docs/architecture.md).

use crate::dataset::Sample;
use crate::prepare::{Prepare, Prepared};
use crate::{DataError, Result};
use candle_core::{Device, Tensor};
use fkd_core::Affine;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// A batch of prepared samples as tensors.
#[derive(Debug)]
pub struct Batch {
    /// Inputs, `(B, 1, H, W)`, f32.
    pub images: Tensor,
    /// Targets, `(B, T)`, f32.
    pub targets: Tensor,
    /// Which samples (indices into the loader's list) the rows are.
    pub indices: Vec<usize>,
    /// Per row, the map from input pixels back to the source photo ([`Prepared::to_source`]).
    pub to_source: Vec<Affine>,
}

impl Batch {
    /// The batch with its tensors copied to `device` (one upload of each).
    pub fn to_device(self, device: &Device) -> Result<Batch> {
        Ok(Batch {
            images: self.images.to_device(device)?,
            targets: self.targets.to_device(device)?,
            ..self
        })
    }
}

/// Seeded, parallel batching of a list of samples.
pub struct Loader<P> {
    samples: Vec<Sample>,
    prepare: P,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    drop_last: bool,
    device: Device,
}

impl<P: Prepare> Loader<P> {
    /// A loader over `samples` in file order, batches of `batch_size` (at least 1), on the CPU.
    pub fn new(samples: Vec<Sample>, prepare: P, batch_size: usize) -> Self {
        Self {
            samples,
            prepare,
            batch_size: batch_size.max(1),
            shuffle_seed: None,
            drop_last: false,
            device: Device::Cpu,
        }
    }

    /// Visits the samples in a new seeded permutation every epoch (training).
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self
    }

    /// Leaves out a last batch smaller than the batch size.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }

    /// Puts the tensors on `device`.
    pub fn on(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The device the batches' tensors are put on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The samples, in file order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Batches per epoch.
    pub fn n_batches(&self) -> usize {
        let n = self.samples.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The order in which `epoch` visits the samples.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if let Some(seed) = self.shuffle_seed {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(seed, epoch, u64::MAX)));
        }
        order
    }

    /// Prepares the samples at `indices` (in parallel) and stacks them into a batch.
    pub fn batch(&self, indices: &[usize], epoch: u64) -> Result<Batch> {
        self.batch_on(indices, epoch, &self.device)
    }

    /// [`Loader::batch`] with its tensors on `device`.
    fn batch_on(&self, indices: &[usize], epoch: u64, device: &Device) -> Result<Batch> {
        let seed = self.shuffle_seed.unwrap_or(0);
        let prepared: Vec<Prepared> = indices
            .par_iter()
            .map(|&i| {
                let sample = self.samples.get(i).ok_or_else(|| DataError::Dataset {
                    path: std::path::PathBuf::new(),
                    reason: format!(
                        "sample index {i} is past the {} samples",
                        self.samples.len()
                    ),
                })?;
                let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, epoch, i as u64));
                self.prepare.prepare(sample, &mut rng)
            })
            .collect::<Result<_>>()?;
        stack(&prepared, indices, &self.samples, device)
    }

    /// The batches of one epoch, in order.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Result<Batch>> + '_ {
        self.epoch_on(epoch, &self.device)
    }

    /// [`Loader::epoch`] with the tensors on `device`.
    fn epoch_on<'a>(
        &'a self,
        epoch: u64,
        device: &'a Device,
    ) -> impl Iterator<Item = Result<Batch>> + 'a {
        let order = self.order(epoch);
        let n = self.n_batches();
        (0..n).map(move |b| {
            let end = ((b + 1) * self.batch_size).min(order.len());
            self.batch_on(&order[b * self.batch_size..end], epoch, device)
        })
    }
}

impl<P: Prepare> Loader<P> {
    /// Runs `f` over the batches of `epoch`, in the same order and with the same contents as
    /// [`Loader::epoch`], while a helper thread prepares up to `depth` batches ahead. The helper
    /// stops at the first error (which `f` receives) or as soon as `f` returns, and is joined
    /// before this returns. For a GPU the helper makes the batches in host memory and each is
    /// uploaded once, on the calling thread (the device's stream), as `f` takes it: the copy is
    /// queued behind the previous step's kernels, so preparing, uploading and computing overlap
    /// as long as `f` does not wait for the GPU.
    pub fn prefetched<R>(
        &self,
        epoch: u64,
        depth: usize,
        f: impl FnOnce(&mut dyn Iterator<Item = Result<Batch>>) -> R,
    ) -> R {
        if depth == 0 {
            return f(&mut self.epoch(epoch));
        }
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(depth);
            scope.spawn(move || {
                for batch in self.epoch_on(epoch, &Device::Cpu) {
                    let failed = batch.is_err();
                    // A send fails once `f` has returned and dropped the receiver.
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            });
            let device = &self.device;
            let mut batches = rx.into_iter().map(|batch| match batch {
                Ok(b) if !device.is_cpu() => b.to_device(device),
                other => other,
            });
            f(&mut batches)
        })
    }
}

/// Stacks prepared samples into `(B,1,H,W)` and `(B,T)` tensors; every input must have the
/// same size and every target the same length.
fn stack(
    prepared: &[Prepared],
    indices: &[usize],
    samples: &[Sample],
    device: &Device,
) -> Result<Batch> {
    let Some(first) = prepared.first() else {
        return Err(DataError::Dataset {
            path: std::path::PathBuf::new(),
            reason: "an empty batch was asked for".into(),
        });
    };
    let (w, h, t) = (
        first.image.width(),
        first.image.height(),
        first.target.len(),
    );
    let mut pixels = Vec::with_capacity(prepared.len() * (w * h) as usize);
    let mut targets = Vec::with_capacity(prepared.len() * t);
    for (p, &i) in prepared.iter().zip(indices) {
        if p.image.width() != w || p.image.height() != h || p.target.len() != t {
            return Err(DataError::Dataset {
                path: samples.get(i).map(|s| s.image.clone()).unwrap_or_default(),
                reason: format!(
                    "prepared as {}x{} with {} targets, but the batch is {w}x{h} with {t}",
                    p.image.width(),
                    p.image.height(),
                    p.target.len()
                ),
            });
        }
        pixels.extend_from_slice(p.image.data());
        targets.extend_from_slice(&p.target);
    }
    let b = prepared.len();
    Ok(Batch {
        images: Tensor::from_vec(pixels, (b, 1, h as usize, w as usize), device)?,
        targets: Tensor::from_vec(targets, (b, t), device)?,
        indices: indices.to_vec(),
        to_source: prepared.iter().map(|p| p.to_source).collect(),
    })
}

/// SplitMix64 finaliser: decorrelates the per-sample seeds built from (seed, epoch, index).
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn mix(seed: u64, epoch: u64, index: u64) -> u64 {
    splitmix(seed ^ splitmix(epoch ^ splitmix(index)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::img::GrayImage;
    use crate::prepare::norm_target;
    use fkd_core::{ImageSize, NormPoint, PixelPoint};
    use rand::RngExt;

    fn samples(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                image: format!("{i}.png").into(),
                size: ImageSize::new(4, 2),
                points: vec![PixelPoint::new(i as f32, 1.0)],
                bbox: None,
                person: None,
                id: i.to_string(),
                photo_scale: 1.0,
            })
            .collect()
    }

    /// A synthetic step: the image holds the sample index and one random draw.
    fn synthetic(sample: &Sample, rng: &mut ChaCha8Rng) -> Result<Prepared> {
        let i: f32 = sample.id.parse().unwrap();
        let r: f32 = rng.random();
        let image = GrayImage::new(4, 2, vec![i, r, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
        let norm: Vec<NormPoint> = sample
            .points
            .iter()
            .map(|p| p.to_norm(sample.size))
            .collect();
        Ok(Prepared {
            image,
            target: norm_target(sample, &norm, None)?,
            to_source: Affine::IDENTITY,
        })
    }

    #[test]
    fn epochs_cover_every_sample_once_in_a_seeded_order() {
        let loader = Loader::new(samples(10), synthetic, 4).shuffled(7);
        assert_eq!(loader.n_batches(), 3);
        let mut seen = vec![];
        for batch in loader.epoch(0) {
            let batch = batch.unwrap();
            let imgs = batch
                .images
                .flatten_from(1)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (row, &i) in imgs.iter().zip(&batch.indices) {
                assert_eq!(row[0] as usize, i);
            }
            assert_eq!(batch.images.dims()[1..], [1, 2, 4]);
            seen.extend(batch.indices);
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(seen, (0..10).collect::<Vec<_>>(), "shuffled");
        assert_eq!(loader.order(0), seen);
        assert_ne!(loader.order(1), loader.order(0));
        assert_eq!(
            Loader::new(samples(10), synthetic, 4).order(3),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn random_draws_do_not_depend_on_batching() {
        let a = Loader::new(samples(6), synthetic, 6).shuffled(1);
        let b = Loader::new(samples(6), synthetic, 1).shuffled(1);
        fn draw<P: Prepare>(l: &Loader<P>, i: usize) -> f32 {
            let batch = l.batch(&[i], 2).unwrap();
            batch
                .images
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[1]
        }
        for i in 0..6 {
            assert_eq!(draw(&a, i), draw(&b, i));
        }
        let full = a.batch(&[0, 1, 2, 3, 4, 5], 2).unwrap();
        let v = full
            .images
            .flatten_from(1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(v[3][1], draw(&b, 3));
        let t = full.targets.to_vec2::<f32>().unwrap();
        assert_eq!(t[3], vec![0.75, 0.5]);
    }

    #[test]
    fn drop_last_and_mismatched_sizes() {
        let loader = Loader::new(samples(10), synthetic, 4).drop_last(true);
        assert_eq!(loader.epoch(0).count(), 2);
        let odd = |s: &Sample, _r: &mut ChaCha8Rng| -> Result<Prepared> {
            let w = if s.id == "1" { 3 } else { 4 };
            Ok(Prepared {
                to_source: Affine::IDENTITY,
                image: GrayImage::filled(w, 2, 0.0),
                target: vec![0.0],
            })
        };
        let l = Loader::new(samples(3), odd, 3);
        let err = l.batch(&[0, 1, 2], 0).unwrap_err();
        assert!(err.to_string().contains("1.png"), "{err}");
    }

    /// Prefetched batches equal the plain epoch's, in order; an error ends the stream; and `f`
    /// may stop early without waiting for the rest of the epoch.
    #[test]
    fn prefetched_batches_equal_the_epoch() {
        let loader = Loader::new(samples(10), synthetic, 3).shuffled(4);
        let rows = |b: Batch| b.images.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
        let plain: Vec<_> = loader.epoch(2).map(|b| rows(b.unwrap())).collect();
        for depth in [0, 1, 3] {
            let ahead: Vec<_> =
                loader.prefetched(2, depth, |it| it.map(|b| rows(b.unwrap())).collect());
            assert_eq!(ahead, plain, "depth {depth}");
        }
        let first = loader.prefetched(2, 2, |it| it.next().map(|b| rows(b.unwrap())));
        assert_eq!(first.as_ref(), plain.first());

        let failing = |s: &Sample, r: &mut ChaCha8Rng| -> Result<Prepared> {
            if s.id == "4" {
                return Err(DataError::Dataset {
                    path: s.image.clone(),
                    reason: "broken".into(),
                });
            }
            synthetic(s, r)
        };
        let loader = Loader::new(samples(10), failing, 3);
        let results: Vec<bool> = loader.prefetched(0, 2, |it| it.map(|b| b.is_ok()).collect());
        // Batches 0..3 and 3..6 (which holds sample 4): one good batch, then the error, then
        // nothing more.
        assert_eq!(results, vec![true, false]);
    }
}
