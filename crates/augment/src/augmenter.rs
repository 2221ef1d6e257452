//! The augmenter: draws one set of [`Params`] per sample and applies it to an image and its
//! landmarks together.
//!
//! # Order of the geometric transforms
//! In the order they act on a point: flip, scale and stretch, rotation, shift; all but the shift
//! about the image centre. As one matrix, `M = Shift ∘ Rotate ∘ Scale ∘ Flip`.
//! - Stretch before rotation stretches along the face's own axes (a wider or longer face), not
//!   along the screen's.
//! - The shift comes last, so it is exactly the drawn number of pixels whatever the other draws.
//! - Where the flip goes does not change the distribution (every range is symmetric: a flip
//!   turns a rotation by θ into one by −θ and a shift dx into −dx); first is simplest.
//!
//! Points are mapped by `M`; the image is resampled with `M⁻¹` ([`warp`]), so both move
//! identically. Brightness and contrast come after the warp and never move anything; so does
//! the occluding patch, painted last.

use crate::config::{AugmentConfig, AugmentError};
use crate::transform::{Transform, compose};
use crate::warp::warp;
use fkd_core::Affine;
use fkd_core::{ImageSize, Layout, PixelPoint};
use fkd_data::img::GrayImage;
use rand::{Rng, RngExt};

/// One draw of every augmentation parameter, for one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Whether to mirror horizontally (and permute the points left ↔ right).
    pub flip: bool,
    /// Isotropic scale factor.
    pub scale: f32,
    /// Extra horizontal scale factor.
    pub stretch_x: f32,
    /// Extra vertical scale factor.
    pub stretch_y: f32,
    /// Rotation in degrees, clockwise on screen.
    pub rotation_deg: f32,
    /// Horizontal shift as a fraction of the image width.
    pub shift_x: f32,
    /// Vertical shift as a fraction of the image height.
    pub shift_y: f32,
    /// Added to every pixel.
    pub brightness: f32,
    /// Factor applied to each pixel's difference from the image mean.
    pub contrast: f32,
    /// The occluding rectangle, when one is drawn.
    pub occlusion: Option<Patch>,
}

/// A rectangle painted one gray over the augmented image: position and size as fractions of
/// the image's width and height, the gray in the pixel range `[-0.5, 0.5]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Patch {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub width: f32,
    /// Height.
    pub height: f32,
    /// The gray it is painted.
    pub value: f32,
}

impl Patch {
    /// The pixel columns and rows it covers in an image of `size` (edges rounded to the
    /// nearest pixel, clipped to the image).
    pub fn pixels(&self, size: ImageSize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let span = |lo: f32, len: f32, side: u32| {
            let side = side as f32;
            let a = (lo * side).round().clamp(0.0, side) as usize;
            let b = ((lo + len) * side).round().clamp(0.0, side) as usize;
            a..b.max(a)
        };
        (
            span(self.x, self.width, size.width),
            span(self.y, self.height, size.height),
        )
    }
}

impl Params {
    /// The parameters that change nothing.
    pub const IDENTITY: Params = Params {
        flip: false,
        scale: 1.0,
        stretch_x: 1.0,
        stretch_y: 1.0,
        rotation_deg: 0.0,
        shift_x: 0.0,
        shift_y: 0.0,
        brightness: 0.0,
        contrast: 1.0,
        occlusion: None,
    };

    /// The geometric transforms for an image of `size`, in the order they act (flip only when
    /// drawn; identities left out).
    pub fn transforms(&self, size: ImageSize) -> Vec<Transform> {
        let (sx, sy) = (self.scale * self.stretch_x, self.scale * self.stretch_y);
        let shift = Transform::Shift {
            dx: self.shift_x * size.width as f32,
            dy: self.shift_y * size.height as f32,
        };
        [
            self.flip.then_some(Transform::FlipHorizontal),
            (sx != 1.0 || sy != 1.0).then_some(Transform::Scale { x: sx, y: sy }),
            (self.rotation_deg != 0.0).then_some(Transform::Rotate {
                degrees: self.rotation_deg,
            }),
            (self.shift_x != 0.0 || self.shift_y != 0.0).then_some(shift),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The one matrix that maps a point of an image of `size` (see the module docs for the
    /// order).
    pub fn matrix(&self, size: ImageSize) -> Affine {
        compose(&self.transforms(size), size)
    }

    /// Whether brightness and contrast leave pixels as they are.
    pub fn is_photometric_identity(&self) -> bool {
        self.brightness == 0.0 && self.contrast == 1.0
    }
}

/// Seeded augmentation of images with their landmarks in one layout.
#[derive(Clone, Debug)]
pub struct Augmenter {
    cfg: AugmentConfig,
    layout: Layout,
}

impl Augmenter {
    /// An augmenter for faces in `layout`, after checking the config's ranges and that the
    /// layout's mirror permutation is usable.
    pub fn new(cfg: AugmentConfig, layout: Layout) -> Result<Self, AugmentError> {
        cfg.validate()?;
        if layout.mirror.len() != layout.n_points
            || layout.mirror.iter().any(|&m| m >= layout.n_points)
        {
            return Err(AugmentError::InvalidLayout {
                layout: layout.name,
                reason: format!(
                    "the mirror permutation must map each of the {} points to one of them",
                    layout.n_points
                ),
            });
        }
        Ok(Self { cfg, layout })
    }

    /// The config.
    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }

    /// The landmark layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Draws one set of parameters. Consumes the same number of values from `rng` in a fixed
    /// order whatever the ranges, so a seed gives the same draw whatever the config; with
    /// occlusion on (probability above 0), six more come last, so the other parameters are
    /// drawn as with it off.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> Params {
        let c = &self.cfg;
        let mut u = || rng.random::<f32>();
        let symmetric = |m: f32, u: f32| m * (2.0 * u - 1.0);
        let flip = u() < c.flip_prob;
        let scale = c.scale.at(u());
        let stretch_x = c.stretch_x.at(u());
        let stretch_y = c.stretch_y.at(u());
        let rotation_deg = symmetric(c.rotation_deg, u());
        let shift_x = symmetric(c.shift_x, u());
        let shift_y = symmetric(c.shift_y, u());
        let brightness = symmetric(c.brightness, u());
        let contrast = c.contrast.at(u());
        let occ = c.occlusion;
        let occlusion = if occ.prob > 0.0 {
            let hit = u() < occ.prob;
            let (width, height) = (occ.size.at(u()), occ.size.at(u()));
            let (x, y) = (u() * (1.0 - width), u() * (1.0 - height));
            let value = u() - 0.5;
            hit.then_some(Patch {
                x,
                y,
                width,
                height,
                value,
            })
        } else {
            None
        };
        Params {
            flip,
            scale,
            stretch_x,
            stretch_y,
            rotation_deg,
            shift_x,
            shift_y,
            brightness,
            contrast,
            occlusion,
        }
    }

    /// Augments `img` and its `points` (pixel coordinates of `img`) with a fresh draw from `rng`.
    /// See [`Augmenter::apply_params`].
    pub fn apply<R: Rng + ?Sized>(
        &self,
        img: &GrayImage,
        points: &[PixelPoint],
        rng: &mut R,
    ) -> (GrayImage, Vec<PixelPoint>) {
        let params = self.draw(rng);
        self.apply_params(img, points, &params)
    }

    /// Warps `img` and maps `points` with the geometry of `params`, then applies brightness and
    /// contrast and clamps the pixels to `[-0.5, 0.5]`.
    ///
    /// A flip renumbers the points with the layout's mirror permutation, so point `i` of the
    /// result is the layout's point `i` again. It needs all the layout's points: a point list
    /// of another (non-zero) length cannot be renumbered, so such a sample is not flipped.
    /// When nothing changes (e.g. [`AugmentConfig::none`]), image and points come back exactly.
    /// Geometry that cannot be inverted (a zero or non-finite factor in hand-made `params`;
    /// never drawn from a validated config) is skipped for pixels and points alike.
    pub fn apply_params(
        &self,
        img: &GrayImage,
        points: &[PixelPoint],
        params: &Params,
    ) -> (GrayImage, Vec<PixelPoint>) {
        let (out, out_points, _) = self.apply_params_mapped(img, points, params);
        (out, out_points)
    }

    /// [`Augmenter::apply`], also returning the geometry that was applied: the matrix from
    /// `img`'s pixels to the result's (flip included; the identity when nothing moved).
    pub fn apply_mapped<R: Rng + ?Sized>(
        &self,
        img: &GrayImage,
        points: &[PixelPoint],
        rng: &mut R,
    ) -> (GrayImage, Vec<PixelPoint>, Affine) {
        let params = self.draw(rng);
        self.apply_params_mapped(img, points, &params)
    }

    /// [`Augmenter::apply_params`], also returning the matrix from `img`'s pixels to the
    /// result's.
    pub fn apply_params_mapped(
        &self,
        img: &GrayImage,
        points: &[PixelPoint],
        params: &Params,
    ) -> (GrayImage, Vec<PixelPoint>, Affine) {
        let size = img.size();
        let can_flip = points.is_empty() || points.len() == self.layout.n_points;
        let mut flip = params.flip && can_flip;
        let mut rest = Params {
            flip: false,
            ..*params
        }
        .matrix(size);
        let mut full = if flip {
            rest.compose(&Transform::FlipHorizontal.matrix(size))
        } else {
            rest
        };
        let inverse = full.inverse();
        if inverse.is_none() {
            // Only hand-made params (a zero or non-finite factor) get here: skip the geometry
            // for pixels and points alike rather than let them disagree.
            (flip, rest, full) = (false, Affine::IDENTITY, Affine::IDENTITY);
        }
        let mut out_points = if flip && !points.is_empty() {
            self.layout.flip_horizontal(points, size.width as f32)
        } else {
            points.to_vec()
        };
        if !rest.is_identity() {
            for p in &mut out_points {
                *p = rest.apply(*p);
            }
        }
        let geometric = !full.is_identity();
        let mut out = match inverse {
            Some(inv) if geometric => warp(img, &inv, self.cfg.fill),
            _ => img.clone(),
        };
        let photometric = !params.is_photometric_identity();
        if photometric {
            adjust(&mut out, params.brightness, params.contrast);
        }
        if geometric || photometric {
            for v in out.data_mut() {
                *v = v.clamp(-0.5, 0.5);
            }
        }
        if let Some(patch) = params.occlusion {
            occlude(&mut out, &patch);
        }
        (out, out_points, full)
    }
}

/// Paints `patch` over `img`.
fn occlude(img: &mut GrayImage, patch: &Patch) {
    let size = img.size();
    let (cols, rows) = patch.pixels(size);
    let (w, value) = (size.width as usize, patch.value.clamp(-0.5, 0.5));
    let data = img.data_mut();
    for y in rows {
        data[y * w + cols.start..y * w + cols.end].fill(value);
    }
}

/// `v ← (v − mean)·contrast + mean + brightness` over the whole image.
fn adjust(img: &mut GrayImage, brightness: f32, contrast: f32) {
    let n = img.data().len();
    if n == 0 {
        return;
    }
    let mean = (img.data().iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64) as f32;
    let offset = mean * (1.0 - contrast) + brightness;
    for v in img.data_mut() {
        *v = *v * contrast + offset;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Interval;
    use crate::testutil::{assert_dots_at, dots_image, random_points};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const SIZE: ImageSize = ImageSize::new(160, 120);

    fn augmenter(cfg: AugmentConfig) -> Augmenter {
        Augmenter::new(cfg, Layout::IMM58).unwrap()
    }

    /// A config that does only what `edit` turns on.
    fn only(edit: impl FnOnce(&mut AugmentConfig)) -> Augmenter {
        let mut cfg = AugmentConfig::none();
        edit(&mut cfg);
        augmenter(cfg)
    }

    /// Augments a dot image with `aug` for `seeds` and checks every dot is where its
    /// augmented landmark says; returns the largest distance seen.
    fn check_dots(aug: &Augmenter, seeds: std::ops::Range<u64>) -> f32 {
        let mut worst = 0.0f32;
        for seed in seeds {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let points = random_points(&mut rng, SIZE, Layout::IMM58.n_points);
            let img = dots_image(SIZE, &points);
            let (out, moved) = aug.apply(&img, &points, &mut rng);
            assert_eq!(out.size(), SIZE);
            worst = worst.max(assert_dots_at(&out, &moved, &format!("seed {seed}")));
        }
        worst
    }

    #[test]
    fn none_is_exactly_the_identity() {
        let aug = augmenter(AugmentConfig::none());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let points = random_points(&mut rng, SIZE, 58);
        // Values outside [-0.5, 0.5] too: not even the clamp may touch them.
        let mut img = dots_image(SIZE, &points);
        img.data_mut()[5] = 0.75;
        for _ in 0..5 {
            let (out, moved) = aug.apply(&img, &points, &mut rng);
            assert_eq!(out, img);
            assert_eq!(moved, points);
        }
    }

    #[test]
    fn each_transform_alone_keeps_dots_on_landmarks() {
        let cases: [(&str, Augmenter); 6] = [
            ("rotation", only(|c| c.rotation_deg = 15.0)),
            (
                "shift",
                only(|c| {
                    c.shift_x = 0.1;
                    c.shift_y = 0.1;
                }),
            ),
            ("scale", only(|c| c.scale = Interval::new(0.9, 1.1))),
            (
                "stretch",
                only(|c| {
                    c.stretch_x = Interval::new(0.9, 1.1);
                    c.stretch_y = Interval::new(0.9, 1.1);
                }),
            ),
            ("flip", only(|c| c.flip_prob = 1.0)),
            (
                "constant fill",
                only(|c| {
                    c.rotation_deg = 15.0;
                    c.fill = crate::Fill::Constant(-0.5);
                }),
            ),
        ];
        for (name, aug) in &cases {
            let worst = check_dots(aug, 0..8);
            // Measured: at most 0.09 px; the issue asks for 1 px.
            assert!(worst < 0.15, "{name}: worst error {worst} px");
        }
    }

    #[test]
    fn flip_renumbers_points_with_the_mirror_permutation() {
        let aug = only(|c| c.flip_prob = 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let points = random_points(&mut rng, SIZE, 58);
        let img = dots_image(SIZE, &points);
        let (out, moved) = aug.apply(&img, &points, &mut rng);
        for (i, p) in moved.iter().enumerate() {
            // Point i is now the mirror image of the point that was i's partner: the subject's
            // left eye is still the left eye.
            let src = points[Layout::IMM58.mirror[i]];
            assert_eq!(*p, PixelPoint::new(160.0 - src.x, src.y), "point {i}");
        }
        assert_dots_at(&out, &moved, "flip");
        // Twice is the identity, pixels included.
        let (back, back_pts) = aug.apply(&out, &moved, &mut rng);
        assert_eq!(back, img);
        assert_eq!(back_pts, points);
    }

    #[test]
    fn random_chains_keep_dots_on_landmarks() {
        let aug = augmenter(AugmentConfig::default().with_stretch());
        let worst = check_dots(&aug, 100..160);
        assert!(worst < 0.2, "worst error {worst} px");
    }

    #[test]
    fn brightness_and_contrast_do_not_move_points() {
        let aug = only(|c| {
            c.brightness = 0.1;
            c.contrast = Interval::new(0.8, 1.2);
        });
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let points = random_points(&mut rng, SIZE, 58);
        // Dots of ±0.25, so the jitter is not hidden by the clamp to [-0.5, 0.5].
        let mut img = dots_image(SIZE, &points);
        img.data_mut().iter_mut().for_each(|v| *v *= 0.5);
        for _ in 0..5 {
            let params = aug.draw(&mut rng.clone());
            let (out, moved) = aug.apply(&img, &points, &mut rng);
            assert_eq!(moved, points);
            assert!(out != img, "the image did not change");
            // Every pixel follows the same affine intensity map, clamped.
            let mean =
                img.data().iter().map(|&v| f64::from(v)).sum::<f64>() / img.data().len() as f64;
            for (a, b) in img.data().iter().zip(out.data()) {
                let want = ((f64::from(*a) - mean) * f64::from(params.contrast)
                    + mean
                    + f64::from(params.brightness))
                .clamp(-0.5, 0.5);
                assert!((f64::from(*b) - want).abs() < 1e-5);
            }
            assert_dots_at(&out, &moved, "photometric");
        }
    }

    #[test]
    fn same_seed_same_output_and_different_seeds_differ() {
        let aug = augmenter(AugmentConfig::default());
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let points = random_points(&mut rng, SIZE, 58);
        let img = dots_image(SIZE, &points);
        let run = |seed| aug.apply(&img, &points, &mut ChaCha8Rng::seed_from_u64(seed));
        assert_eq!(run(1), run(1));
        assert_ne!(run(1).1, run(2).1);
        assert!(run(1).0 != run(2).0, "images of seeds 1 and 2 are equal");
    }

    #[test]
    fn draws_stay_in_their_ranges_and_flip_rate_follows_the_probability() {
        let aug = augmenter(AugmentConfig::default().with_stretch());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut flips = 0;
        for _ in 0..2000 {
            let p = aug.draw(&mut rng);
            flips += usize::from(p.flip);
            assert!(p.rotation_deg.abs() <= 15.0);
            assert!(p.shift_x.abs() <= 10.0 / 640.0 && p.shift_y.abs() <= 10.0 / 480.0);
            assert!((0.95..=1.05).contains(&p.scale));
            assert!((0.9..=1.1).contains(&p.stretch_x) && (0.9..=1.1).contains(&p.stretch_y));
            assert!(p.brightness.abs() <= 0.1 && (0.8..=1.2).contains(&p.contrast));
        }
        // Binomial(2000, 0.5): ±5 standard deviations is 888–1112.
        assert!((888..=1112).contains(&flips), "{flips} flips");
    }

    #[test]
    fn params_compose_in_the_documented_order() {
        let p = Params {
            flip: true,
            scale: 2.0,
            rotation_deg: 90.0,
            shift_x: 0.1,
            ..Params::IDENTITY
        };
        let ts = p.transforms(SIZE);
        assert_eq!(
            ts,
            vec![
                Transform::FlipHorizontal,
                Transform::scale(2.0),
                Transform::Rotate { degrees: 90.0 },
                Transform::Shift { dx: 16.0, dy: 0.0 }
            ]
        );
        // (90, 60): flip → (70, 60); ×2 about (80, 60) → (60, 60); 90° clockwise → (80, 40);
        // shift 16 px → (96, 40).
        let q = p.matrix(SIZE).apply(PixelPoint::new(90.0, 60.0));
        assert!(q.distance(PixelPoint::new(96.0, 40.0)) < 1e-4, "{q:?}");
        assert!(Params::IDENTITY.matrix(SIZE).is_identity());
        assert!(Params::IDENTITY.transforms(SIZE).is_empty());
    }

    #[test]
    fn odd_point_counts_are_not_flipped_and_bad_layouts_are_rejected() {
        let aug = only(|c| c.flip_prob = 1.0);
        let img = GrayImage::filled(8, 4, 0.0);
        let three = [PixelPoint::new(1.0, 1.0); 3];
        let (out, pts) = aug.apply(&img, &three, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!((out, pts.as_slice()), (img.clone(), &three[..]));
        // No points at all: the image still flips.
        let mut ramp = img.clone();
        ramp.data_mut()[0] = 0.5;
        let (out, pts) = aug.apply(&ramp, &[], &mut ChaCha8Rng::seed_from_u64(0));
        assert!(pts.is_empty());
        assert_eq!(out.get(7, 0), Some(0.5));
        // A collapsing hand-made draw moves neither pixels nor points.
        let collapse = Params {
            scale: 0.0,
            brightness: 0.1,
            ..Params::IDENTITY
        };
        let (out, pts) = aug.apply_params(&ramp, &three, &collapse);
        assert_eq!(pts, three);
        assert_eq!(out.get(0, 0), Some(0.5));
        assert!((out.get(1, 0).unwrap() - 0.1).abs() < 1e-6);
        let bad = Layout {
            mirror: &[1, 2],
            ..Layout::IMM58
        };
        assert!(matches!(
            Augmenter::new(AugmentConfig::default(), bad),
            Err(AugmentError::InvalidLayout {
                layout: "imm58",
                ..
            })
        ));
        assert!(matches!(
            Augmenter::new(
                AugmentConfig {
                    flip_prob: -1.0,
                    ..AugmentConfig::default()
                },
                Layout::IMM58
            ),
            Err(AugmentError::InvalidConfig {
                field: "flip_prob",
                ..
            })
        ));
    }

    /// Occlusion on draws every other parameter as with it off (its draws come last); at
    /// probability 1 each sample gets one rectangle of the configured size, inside the image,
    /// painted one gray over exactly its pixels, with the points and every other pixel as
    /// without it.
    #[test]
    fn occlusion_paints_a_drawn_rectangle_and_moves_nothing() {
        use crate::config::Occlusion;
        let size = ImageSize::new(160, 120);
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let points = random_points(&mut rng, size, 58);
        let img = dots_image(size, &points);
        let plain = Augmenter::new(AugmentConfig::default(), Layout::IMM58).unwrap();
        let occluding = Augmenter::new(
            AugmentConfig {
                occlusion: Occlusion {
                    prob: 1.0,
                    size: Interval::new(0.2, 0.5),
                },
                ..AugmentConfig::default()
            },
            Layout::IMM58,
        )
        .unwrap();
        for seed in 0..20 {
            let p = plain.draw(&mut ChaCha8Rng::seed_from_u64(seed));
            let q = occluding.draw(&mut ChaCha8Rng::seed_from_u64(seed));
            let patch = q.occlusion.unwrap();
            assert_eq!(
                Params {
                    occlusion: None,
                    ..q
                },
                p,
                "seed {seed}"
            );
            assert!((0.2..=0.5).contains(&patch.width) && (0.2..=0.5).contains(&patch.height));
            assert!(patch.x >= 0.0 && patch.x + patch.width <= 1.0 + 1e-6);
            assert!(patch.y >= 0.0 && patch.y + patch.height <= 1.0 + 1e-6);
            assert!((-0.5..0.5).contains(&patch.value));
            let (want, want_pts) = plain.apply_params(&img, &points, &p);
            let (got, got_pts) = occluding.apply_params(&img, &points, &q);
            assert_eq!(got_pts, want_pts);
            let (cols, rows) = patch.pixels(size);
            assert!(
                cols.len() >= 31 && rows.len() >= 23,
                "seed {seed}: {cols:?} {rows:?}"
            );
            for y in 0..size.height as usize {
                for x in 0..size.width as usize {
                    let (a, b) = (got.get(x as u32, y as u32), want.get(x as u32, y as u32));
                    if cols.contains(&x) && rows.contains(&y) {
                        assert_eq!(a, Some(patch.value), "seed {seed} ({x}, {y})");
                    } else {
                        assert_eq!(a, b, "seed {seed} ({x}, {y})");
                    }
                }
            }
        }
        // At probability ½ about half the samples are hit.
        let half = Augmenter::new(
            AugmentConfig {
                occlusion: Occlusion {
                    prob: 0.5,
                    ..Occlusion::default()
                },
                ..AugmentConfig::default()
            },
            Layout::IMM58,
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let hits = (0..1000)
            .filter(|_| half.draw(&mut rng).occlusion.is_some())
            .count();
        assert!((430..570).contains(&hits), "{hits}");
    }
}
