//! Part 4 of the write-up: fully convolutional heatmap nets. Each point becomes a Gaussian map
//! (fkd-heatmap), a net without fully connected layers predicts the maps, and the points are
//! decoded from them (DARK by default) and mapped back to the source photo like every other
//! part's. `--model fcn-alexnet --dataset imm` is the write-up's experiment (an AlexNet whose
//! fully connected layers are 1×1 convs, upsampled by transposed convs, IMM at 240×180);
//! `--model resnet-deconv --dataset 300w` is what the field uses today (Simple Baselines).

use crate::runner::{self, Defaults, ExtraFigures, Part, RunArgs, SelectBy, Split};
use anyhow::{Context, bail};
use candle_core::Tensor;
use candle_nn::VarMap;
use fkd_augment::{AugmentedCrop, AugmentedResize, Augmenter};
use fkd_core::{ImageSize, Layout};
use fkd_data::dataset::Sample;
use fkd_data::prepare::{Prepare, Prepared};
use fkd_heatmap::{Decoder, HeatmapTargets};
use fkd_landmarker::{HeatmapCard, ModelCard, Net};
use fkd_train::{Loss, Schedule};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// `cargo xtask part4`.
#[derive(clap::Args, Clone, Debug)]
pub struct Part4Args {
    #[command(flatten)]
    pub run: RunArgs,
    /// The net.
    #[arg(long, value_enum, default_value_t = NetName::ResnetDeconv)]
    pub model: NetName,
    /// The data [default: 300w for resnet-deconv, imm for fcn-alexnet].
    #[arg(long, value_enum)]
    pub dataset: Option<DataName>,
    /// Part 3's face options (`--size` is for 300-W; IMM runs at the write-up's 240×180).
    #[command(flatten)]
    pub faces: crate::part3::FaceArgs,
    /// Gaussian σ of the training maps, in map pixels [default: 1.5].
    #[arg(long)]
    pub sigma: Option<f32>,
    /// How maps become points.
    #[arg(long, value_enum, default_value_t = DecoderArg::Dark)]
    pub decoder: DecoderArg,
    /// Channels of resnet-deconv's three transposed convs (Simple Baselines: 256).
    #[arg(long, default_value_t = DECONV_CHANNELS)]
    pub deconv_channels: usize,
    /// Transposed convs of resnet-deconv, each doubling the maps: 3 gives maps at a quarter of
    /// the input (32×32 at 128 pixels, Simple Baselines'), 4 at half (64×64).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=6))]
    pub deconv_layers: u8,
    /// What the net is trained on: its maps against Gaussian targets (`heatmap`, MSE with
    /// `--fg-weight`), or the points a soft-argmax reads from them (`integral`, L1 as Part 3).
    #[arg(long, value_enum, default_value_t = Head::Heatmap)]
    pub head: Head,
    /// Train the maps with MSE whose foreground is weighted: the squared error of every target
    /// pixel above 0.2 of the peak counts 1 + W times (Adaptive Wing's weight map uses
    /// W = 10); 0 is plain MSE [default: the whole Adaptive Wing loss for resnet-deconv's maps
    /// on 300-W (`--loss awing`), plain MSE on IMM].
    #[arg(long, value_name = "W")]
    pub fg_weight: Option<f64>,
}

/// `--head`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Maps trained against Gaussian targets; points decoded by `--decoder`.
    Heatmap,
    /// Integral regression (Sun et al. 2018): the soft-argmax of each map trained on the point.
    Integral,
}

/// Default channels of resnet-deconv's transposed convs. Simple Baselines uses 256; at a
/// 128-pixel input its head (≈370 M multiply-adds per face, most of it in the last 256→256
/// layer at 32×32) costs more than the ResNet-18 trunk (≈600 M), and 128 channels cut it to
/// ≈100 M: about 28 % less per epoch, which the 2-hour budget spends on epochs instead.
pub const DECONV_CHANNELS: usize = 128;

/// `--model`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetName {
    /// The write-up's fully convolutional AlexNet.
    FcnAlexnet,
    /// ResNet-18 and three transposed convs (Simple Baselines).
    ResnetDeconv,
}

impl NetName {
    fn name(self) -> &'static str {
        match self {
            NetName::FcnAlexnet => "fcn-alexnet",
            NetName::ResnetDeconv => "resnet-deconv",
        }
    }
}

/// `--dataset`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataName {
    /// IMM, persons 1–32 train, 33–40 validate, whole photos.
    Imm,
    /// iBUG 300-W in dlib XML, face crops.
    #[value(name = "300w")]
    W300,
}

impl DataName {
    fn name(self) -> &'static str {
        match self {
            DataName::Imm => "imm",
            DataName::W300 => "300w",
        }
    }
}

/// `--decoder`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderArg {
    /// The hottest pixel.
    Argmax,
    /// Argmax moved ¼ pixel towards the hotter neighbour.
    Shift,
    /// A Newton step on the log map (DARK).
    Dark,
}

impl From<DecoderArg> for Decoder {
    fn from(d: DecoderArg) -> Decoder {
        match d {
            DecoderArg::Argmax => Decoder::Argmax,
            DecoderArg::Shift => Decoder::Shift,
            DecoderArg::Dark => Decoder::Dark,
        }
    }
}

/// Part 4's loader step: Gaussian maps as targets, or the points themselves (integral head).
pub enum Part4Step {
    Maps(HeatmapTargets<BaseStep>),
    Points(BaseStep),
}

impl Prepare for Part4Step {
    fn prepare(&self, sample: &Sample, rng: &mut ChaCha8Rng) -> fkd_data::Result<Prepared> {
        match self {
            Part4Step::Maps(s) => s.prepare(sample, rng),
            Part4Step::Points(s) => s.prepare(sample, rng),
        }
    }
}

/// The loader step under the maps: the whole photo resized (IMM) or the face crop (300-W).
pub enum BaseStep {
    Resize(AugmentedResize),
    Crop(AugmentedCrop),
}

impl Prepare for BaseStep {
    fn prepare(&self, sample: &Sample, rng: &mut ChaCha8Rng) -> fkd_data::Result<Prepared> {
        match self {
            BaseStep::Resize(s) => s.prepare(sample, rng),
            BaseStep::Crop(s) => s.prepare(sample, rng),
        }
    }
}

/// Part 4 as a [`Part`] of the runner.
pub struct Part4 {
    pub net: NetName,
    pub data: DataName,
    /// Network input, width × height.
    pub input: ImageSize,
    /// Map size, width × height (what the net outputs for `input`).
    pub map: ImageSize,
    pub sigma: f32,
    pub decoder: Decoder,
    /// resnet-deconv's transposed-conv channels.
    pub deconv_channels: usize,
    /// resnet-deconv's transposed convs (each doubles the maps).
    pub deconv_layers: usize,
    /// Train on the soft-argmax points instead of the maps.
    pub integral: bool,
    /// Extra weight of the maps' foreground in the MSE (0: plain MSE).
    pub fg_weight: f64,
    /// Train the maps with the whole Adaptive Wing loss (300-W's default, picked on held-out
    /// training photos: docs/experiments.md), unless a loss or a foreground weight is given.
    pub awing: bool,
    /// Probability of an occluding rectangle per training face (`--occlusion`).
    pub occlusion: f32,
    pub train_xml: Option<PathBuf>,
    pub valid_xml: Option<PathBuf>,
    pub init: Option<PathBuf>,
}

/// Default 300-W input side: as Part 3's, for the same reason (two CPU cores).
pub const SIZE: u32 = 128;

/// Default σ of the training maps in map pixels (HRNet uses 2 at 64×64 maps; 1.5 at the
/// 32×32 maps of a 128-pixel input keeps the same share of the face).
pub const SIGMA: f32 = 1.5;

impl Part4 {
    pub fn new(
        net: NetName,
        data: DataName,
        size: Option<u32>,
        sigma: f32,
        decoder: Decoder,
        deconv_channels: usize,
    ) -> anyhow::Result<Part4> {
        let input = match data {
            DataName::Imm => ImageSize::new(240, 180),
            DataName::W300 => {
                let s = size.unwrap_or(SIZE);
                ImageSize::new(s, s)
            }
        };
        let points = layout_of(data).n_points;
        let deconv_layers = fkd_landmarker::DEFAULT_DECONV_LAYERS;
        let map =
            fkd_landmarker::heatmap_size(net.name(), input, points, deconv_channels, deconv_layers)
                .with_context(|| format!("{input} is too small an input for {}", net.name()))?;
        if !(sigma.is_finite() && sigma > 0.0) {
            bail!("--sigma must be a positive number of map pixels, not {sigma}");
        }
        if deconv_channels == 0 {
            bail!("--deconv-channels must be at least 1");
        }
        Ok(Part4 {
            net,
            data,
            input,
            map,
            sigma,
            decoder,
            deconv_channels,
            deconv_layers,
            integral: false,
            fg_weight: 0.0,
            awing: false,
            occlusion: 0.0,
            train_xml: None,
            valid_xml: None,
            init: None,
        })
    }

    fn from_args(a: &Part4Args) -> anyhow::Result<Part4> {
        let data = a.dataset.unwrap_or(match a.model {
            NetName::FcnAlexnet => DataName::Imm,
            NetName::ResnetDeconv => DataName::W300,
        });
        if data == DataName::Imm && a.faces.size.is_some() {
            bail!("--size applies to 300-W crops; IMM runs at the write-up's 240×180");
        }
        let mut p = Part4::new(
            a.model,
            data,
            a.faces.size,
            a.sigma.unwrap_or(SIGMA),
            a.decoder.into(),
            a.deconv_channels,
        )?;
        p.integral = a.head == Head::Integral;
        if usize::from(a.deconv_layers) != p.deconv_layers {
            if a.model != NetName::ResnetDeconv {
                bail!("--deconv-layers is resnet-deconv's head; fcn-alexnet's is fixed");
            }
            p.deconv_layers = usize::from(a.deconv_layers);
            p.map = fkd_landmarker::heatmap_size(
                a.model.name(),
                p.input,
                p.points(),
                p.deconv_channels,
                p.deconv_layers,
            )
            .with_context(|| format!("{} deconv layers do not fit {}", p.deconv_layers, p.input))?;
        }
        p.fg_weight = match a.fg_weight {
            Some(w) => {
                if !(w.is_finite() && w >= 0.0) {
                    bail!("--fg-weight must be a number ≥ 0, not {w}");
                }
                if w > 0.0 && p.integral {
                    bail!("--fg-weight weighs heatmap targets; the integral head trains on points");
                }
                if w > 0.0 && a.run.loss.is_some() {
                    bail!(
                        "--fg-weight chooses the foreground-weighted MSE; it cannot be combined \
                         with --loss"
                    );
                }
                w
            }
            None => 0.0,
        };
        p.awing =
            data == DataName::W300 && !p.integral && a.run.loss.is_none() && a.fg_weight.is_none();
        p.occlusion = a.faces.occlusion()?;
        p.train_xml = a.faces.train.clone();
        p.valid_xml = a.faces.valid.clone();
        p.init = a.faces.init.clone();
        Ok(p)
    }

    fn points(&self) -> usize {
        layout_of(self.data).n_points
    }

    /// 300-W's maps are fitted by the Adaptive Wing loss by default; others by MSE (Simple
    /// Baselines, the write-up), foreground-weighted by `--fg-weight`; the integral head's
    /// points by L1, as Part 3's regression. (`--loss` replaces this in the run's settings.)
    fn loss(&self) -> Loss {
        if self.integral {
            Loss::L1
        } else if self.awing {
            Loss::adaptive_wing()
        } else if self.fg_weight > 0.0 {
            Loss::ForegroundMse {
                weight: self.fg_weight,
                threshold: fkd_train::FOREGROUND_THRESHOLD,
            }
        } else {
            Loss::Mse
        }
    }

    /// The input and point targets: the whole photo resized (IMM) or the face crop (300-W).
    fn base_step(&self, augmenter: Option<Augmenter>) -> BaseStep {
        match self.data {
            DataName::Imm => BaseStep::Resize(AugmentedResize::new(self.input, None, augmenter)),
            DataName::W300 => BaseStep::Crop(self.part3().step(augmenter)),
        }
    }

    /// Part 3's data handling, for 300-W.
    fn part3(&self) -> crate::part3::Part3 {
        crate::part3::Part3::data_only(
            self.train_xml.clone(),
            self.valid_xml.clone(),
            self.input.width,
        )
    }
}

fn layout_of(data: DataName) -> Layout {
    match data {
        DataName::Imm => Layout::IMM58,
        DataName::W300 => Layout::IBUG68,
    }
}

impl Part for Part4 {
    type Step = Part4Step;

    fn name(&self) -> &'static str {
        "part4"
    }

    fn title(&self) -> &'static str {
        "Part 4: fully convolutional heatmap nets"
    }

    fn intro(&self) -> String {
        format!(
            "Each of the {} points becomes a Gaussian heatmap (σ {} map pixels); a {} with no \
             fully connected layer maps the {}×{} grayscale input to {}×{} maps, and each \
             point is decoded from its map ({:?}) and mapped back to the original photo.",
            self.points(),
            self.sigma,
            match self.net {
                NetName::FcnAlexnet => "fully convolutional AlexNet (the write-up's net)",
                NetName::ResnetDeconv =>
                    "ResNet-18 with three transposed convolutions (Simple Baselines)",
            },
            self.input.width,
            self.input.height,
            self.map.width,
            self.map.height,
            self.decoder
        ) + if self.integral {
            " The net is trained on the points themselves: each map's softmax gives a \
             probability over its pixels and the point is their expected position (integral \
             regression, Sun et al. 2018)."
        } else {
            ""
        }
    }

    fn defaults(&self) -> Defaults {
        match self.data {
            // The write-up's: lr 1e-3 (Adam), with Part 2's augmentation and length.
            DataName::Imm => Defaults {
                epochs: 100,
                batch: 8,
                lr: 1e-3,
                weight_decay: 0.0,
                augment: Some(
                    fkd_augment::AugmentConfig::default()
                        .with_stretch()
                        .with_occlusion(self.occlusion),
                ),
                schedule: Schedule::Cosine { min_lr: 0.0 },
                loss: self.loss(),
            },
            DataName::W300 => Defaults {
                epochs: 80,
                batch: 16,
                lr: 1e-3,
                weight_decay: 1e-4,
                augment: Some(crate::part3::augmentation().with_occlusion(self.occlusion)),
                schedule: Schedule::WarmupCosine {
                    warmup: 1,
                    min_lr: 0.0,
                },
                loss: self.loss(),
            },
        }
    }

    fn select_by(&self) -> SelectBy {
        SelectBy::Nme
    }

    /// Precise BN for resnet-deconv (see Part 3's); fcn-alexnet has no batch norm.
    fn bn_stats_faces(&self) -> usize {
        match self.net {
            NetName::ResnetDeconv => 512,
            NetName::FcnAlexnet => 0,
        }
    }

    fn input(&self) -> ImageSize {
        self.input
    }

    fn load(&self, args: &RunArgs) -> anyhow::Result<Split> {
        match self.data {
            DataName::Imm => crate::part2::part().load(args),
            DataName::W300 => self.part3().load(args),
        }
    }

    fn step(&self, augmenter: Option<Augmenter>) -> Self::Step {
        let base = self.base_step(augmenter);
        if self.integral {
            Part4Step::Points(base)
        } else {
            Part4Step::Maps(HeatmapTargets::new(base, self.map, self.sigma))
        }
    }

    fn init(&self, varmap: &VarMap) -> anyhow::Result<()> {
        match &self.init {
            Some(path) => crate::part3::init_from(varmap, path),
            None => Ok(()),
        }
    }

    fn card(&self) -> ModelCard {
        ModelCard {
            part: "part4".into(),
            arch: self.net.name().into(),
            input: [self.input.width, self.input.height],
            points: self.points(),
            enlarge: (self.data == DataName::W300).then_some(crate::part3::ENLARGE),
            flip_test: false,
            heatmap: Some(HeatmapCard {
                map: [self.map.width, self.map.height],
                sigma: self.sigma,
                decoder: self.decoder,
                dataset: self.data.name().into(),
                deconv_channels: (self.net == NetName::ResnetDeconv)
                    .then_some(self.deconv_channels),
                // Cards of the default three layers stay as they were before the option.
                deconv_layers: (self.net == NetName::ResnetDeconv
                    && self.deconv_layers != fkd_landmarker::DEFAULT_DECONV_LAYERS)
                    .then_some(self.deconv_layers),
                head: self.integral.then(|| "integral".into()),
            }),
            select: None,
            annotation_offset: None,
        }
    }

    fn network_notes(&self) -> Option<String> {
        Some(match self.net {
            NetName::FcnAlexnet => "The write-up's net: AlexNet's five convolutions and three \
                max-pools, its two fully connected layers as 1×1 convolutions, a 1×1 score \
                convolution to one channel per point, and 4×4/2 transposed convolutions \
                (starting as bilinear upsampling) back up; no fully connected layer."
                .into(),
            NetName::ResnetDeconv => format!(
                "Simple Baselines (Xiao et al., 2018): the ResNet-18 of Part 3 without its \
                 pooling and fully connected head, {} 4×4/2 transposed convolutions of {} \
                 channels (the paper's three of 256) with batch norm and ReLU, and a 1×1 \
                 convolution to one heatmap per point, of {}×{}.",
                self.deconv_layers, self.deconv_channels, self.map.width, self.map.height
            ),
        })
    }

    fn shown_faces(&self) -> usize {
        3
    }

    fn extra_figures(
        &self,
        net: &Net,
        valid: &[Sample],
        out: &Path,
    ) -> anyhow::Result<Option<ExtraFigures>> {
        let (Some(sample), Some(net)) = (valid.first(), net.as_heatmap()) else {
            return Ok(None);
        };
        // The first validation face as the net sees it, its true maps and the predicted ones
        // (for the integral head, the softmax of each map that its points are read from).
        let mut rng = <ChaCha8Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(0);
        let p = HeatmapTargets::new(self.base_step(None), self.map, self.sigma)
            .prepare(sample, &mut rng)?;
        let device = net.conv1_weights().device().clone();
        let (w, h) = (p.image.width() as usize, p.image.height() as usize);
        let x = Tensor::from_vec(p.image.data().to_vec(), (1, 1, h, w), &device)?;
        let maps = net.maps(&x, false)?;
        let maps = if self.integral {
            candle_nn::ops::softmax(&maps.flatten_from(2)?, candle_core::D::Minus1)?
        } else {
            maps
        };
        let predicted = maps
            .flatten_all()?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec1::<f32>()?;
        let per = (self.map.width * self.map.height) as usize;
        let (a, b, names) = match self.data {
            DataName::Imm => (
                fkd_core::layout::imm::NOSE_TIP,
                21,
                ["nose tip (52)", "eye corner (21)"],
            ),
            DataName::W300 => (
                fkd_core::layout::ibug::NOSE_TIP,
                fkd_core::layout::ibug::RIGHT_EYE_OUTER,
                ["nose tip (30)", "outer eye corner (36)"],
            ),
        };
        let scale = if w <= 128 { 2 } else { 1 };
        let overlay = |maps: &[f32], k: usize| {
            fkd_viz::heat_overlay(&p.image, &maps[k * per..(k + 1) * per], self.map, scale)
        };
        let tiles = vec![
            overlay(&p.target, a)?,
            overlay(&predicted, a)?,
            overlay(&p.target, b)?,
            overlay(&predicted, b)?,
        ];
        let captions = [
            format!("truth: {}", names[0]),
            format!("predicted: {}", names[0]),
            format!("truth: {}", names[1]),
            format!("predicted: {}", names[1]),
        ];
        let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
        fkd_viz::save_png(
            &fkd_viz::captioned_grid(&tiles, &refs, 4, 6)?,
            out.join("heatmaps.png"),
        )?;
        let sums = [
            fkd_viz::sum_maps(&p.target, self.map)?,
            fkd_viz::sum_maps(&predicted, self.map)?,
        ];
        let tiles = sums
            .iter()
            .map(|m| fkd_viz::heat_overlay(&p.image, m, self.map, scale))
            .collect::<fkd_viz::Result<Vec<_>>>()?;
        fkd_viz::save_png(
            &fkd_viz::captioned_grid(&tiles, &["truth: all maps", "predicted: all maps"], 2, 6)?,
            out.join("heatmaps_sum.png"),
        )?;
        Ok(Some(ExtraFigures {
            heading: "Heatmaps".into(),
            figures: vec![
                (
                    "heatmaps.png".into(),
                    format!(
                        "{}: true and predicted heatmaps of two points over the network input.",
                        sample.id
                    ),
                ),
                (
                    "heatmaps_sum.png".into(),
                    "All points' maps summed: truth and prediction.".into(),
                ),
            ],
        }))
    }

    fn heatmap_targets(&self) -> bool {
        !self.integral
    }

    fn loss_target(&self) -> &'static str {
        if self.integral {
            "the soft-argmax points' normalised coordinates"
        } else {
            "the heatmaps"
        }
    }

    fn error_units(&self) -> &'static str {
        match self.data {
            DataName::Imm => "the pixels of the original 640×480 photos",
            DataName::W300 => "the pixels of the original photos",
        }
    }
}

/// `cargo xtask part4`.
pub fn run(args: &Part4Args) -> anyhow::Result<()> {
    runner::run(&Part4::from_args(args)?, &args.run).map(|_| ())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::part3::Part3;
    use candle_core::{DType, Device};
    use fkd_data::batch::Loader;
    use fkd_data::dataset::LoadPolicy;
    use fkd_landmarker::Landmarker;

    /// Decoding the true maps of real faces (IMM whole photos for fcn-alexnet, 300-W crops for
    /// resnet-deconv) and mapping them back through `to_source` gives the annotation within
    /// 0.5 px of the source photo.
    #[test]
    fn true_maps_decode_back_to_the_annotation() {
        let Some(root) = crate::test_data_root() else {
            return;
        };
        let args = RunArgs {
            root: crate::DataRoot { data: Some(root) },
            offline: true,
            epochs: None,
            lr: Vec::new(),
            batch: None,
            seed: 0,
            out: None,
            resume: false,
            force: false,
            no_augment: false,
            schedule: None,
            loss: None,
            no_flip_test: false,
            limit: None,
            bn_stats: None,
            valid_every: 1,
            holdout: None,
            ema: None,
            device: None,
            on_bad_face: crate::runner::BadFace::Fail,
        };
        for (net, data) in [
            (NetName::FcnAlexnet, DataName::Imm),
            (NetName::ResnetDeconv, DataName::W300),
        ] {
            let part = Part4::new(net, data, None, SIGMA, Decoder::Dark, DECONV_CHANNELS).unwrap();
            let split = part.load(&args).unwrap();
            let step = part.step(None);
            let mut worst = 0.0f32;
            for s in split.valid.samples.iter().take(12) {
                let mut rng = <ChaCha8Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(0);
                let p = step.prepare(s, &mut rng).unwrap();
                let pts = part.card().decode(&p.target, p.image.size());
                for (q, t) in pts.iter().zip(&s.points) {
                    // Points outside the crop have empty maps; 300-W's are all inside.
                    worst = worst.max(p.to_source.apply(*q).distance(*t));
                }
            }
            assert!(worst < 0.5, "{net:?} on {data:?}: worst {worst} px");
        }
    }

    /// `part3 eval` now runs through fkd-landmarker; the runner still scores each epoch with
    /// the training loader's plain step. Both must give the same numbers to the last bit, for
    /// Part 3's regression and Part 4's heatmaps (30 real validation faces, seeded nets, the
    /// flip test on).
    #[test]
    fn landmarker_eval_equals_the_loader_path() {
        let Some(root) = crate::test_data_root() else {
            return;
        };
        let xml = root.join("ibug_300w_cropped/labels_300w_valid.xml");
        let mut set =
            fkd_data::dataset::DataSet::dlib_xml(&xml, Layout::IBUG68, LoadPolicy::Strict).unwrap();
        // With the crops' scales and an annotation offset, which both paths add at the
        // face's photo scale.
        set.attach_manifest(&root.join("ibug_300w_cropped/manifest_300w_valid.csv"))
            .unwrap();
        set.samples.truncate(30);
        let part3 = Part3::data_only(None, None, 64);
        let part4 = Part4::new(
            NetName::ResnetDeconv,
            DataName::W300,
            Some(64),
            SIGMA,
            Decoder::Dark,
            16,
        )
        .unwrap();
        let device = Device::Cpu;
        let check =
            |card: ModelCard,
             loader_path: &dyn Fn(&Net, &ModelCard) -> fkd_landmarker::Evaluation| {
                let card = ModelCard {
                    flip_test: true,
                    annotation_offset: Some([1.25, -0.5]),
                    ..card
                };
                let vm = VarMap::new();
                let net = Net::build(
                    &card,
                    fkd_models::seeded_var_builder(&vm, 7, DType::F32, &device),
                )
                .unwrap();
                let old = loader_path(&net, &card);
                let lm = Landmarker::new(card, net, vm, device.clone());
                let new = fkd_landmarker::evaluate(&lm, &set.samples).unwrap();
                assert_eq!(old.summary, new.summary);
                assert_eq!(old.nmes, new.nmes);
            };
        check(part3.card(), &|net, card| {
            let loader = Loader::new(set.samples.clone(), part3.step(None), 16);
            runner::evaluate(card, net, &loader, true).unwrap()
        });
        check(part4.card(), &|net, card| {
            let loader = Loader::new(set.samples.clone(), part4.step(None), 16);
            runner::evaluate(card, net, &loader, true).unwrap()
        });
    }
}

#[cfg(test)]
mod card_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A resnet-deconv card names its transposed-conv channels and gives them back; a card
    /// written before the option (no `deconv_channels`) means the paper's 256.
    #[test]
    fn deconv_channels_round_trip_through_the_card() {
        let part = Part4::new(
            NetName::ResnetDeconv,
            DataName::W300,
            Some(64),
            SIGMA,
            Decoder::Dark,
            48,
        )
        .unwrap();
        let card = part.card();
        let json = serde_json::to_string(&card).unwrap();
        assert!(json.contains("\"deconv_channels\":48"), "{json}");
        let back: ModelCard = serde_json::from_str(&json).unwrap();
        assert_eq!(back.heatmap.as_ref().unwrap().deconv_channels, Some(48));
        let vm = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(
            &vm,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        );
        Net::build(&back, vb).unwrap();
        assert!(
            vm.data()
                .lock()
                .unwrap()
                .get("deconv_layers.0.weight")
                .is_some_and(|v| v.dims()[1] == 48)
        );
        // A card written before the option (no `deconv_channels`) builds the paper's 256.
        let old = json.replace(",\"deconv_channels\":48", "");
        let old: ModelCard = serde_json::from_str(&old).unwrap();
        let vm = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(
            &vm,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        );
        Net::build(&old, vb).unwrap();
        assert!(
            vm.data()
                .lock()
                .unwrap()
                .get("deconv_layers.0.weight")
                .is_some_and(|v| v.dims()[1] == 256)
        );
        assert!(
            Part4::new(
                NetName::ResnetDeconv,
                DataName::W300,
                None,
                SIGMA,
                Decoder::Dark,
                0
            )
            .is_err()
        );
    }

    /// `cargo xtask part4 ARGS`' options.
    fn parse_args(args: &[&str]) -> Part4Args {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: Part4Args,
        }
        <Cli as clap::Parser>::try_parse_from(std::iter::once("part4").chain(args.iter().copied()))
            .unwrap()
            .a
    }

    /// `cargo xtask part4 ARGS`' part, as the command line builds it.
    fn parse(args: &[&str]) -> anyhow::Result<Part4> {
        Part4::from_args(&parse_args(args))
    }

    /// `--loss awing` is for heatmaps: Part 4's maps take it; the integral head's points and
    /// Part 3's coordinates are refused before any data is read.
    #[test]
    fn awing_is_for_heatmaps() {
        let a = parse_args(&["--loss", "awing"]);
        let maps = Part4::from_args(&a).unwrap();
        crate::runner::check_loss(&maps, &a.run).unwrap();
        let a = parse_args(&["--loss", "awing", "--head", "integral"]);
        let points = Part4::from_args(&a).unwrap();
        let err = crate::runner::check_loss(&points, &a.run).unwrap_err();
        assert!(err.to_string().contains("--loss awing"), "{err}");
        let part3 = crate::part3::Part3::data_only(None, None, 128);
        let err = crate::runner::check_loss(&part3, &a.run).unwrap_err();
        assert!(err.to_string().contains("part3"), "{err}");
        let a = parse_args(&["--loss", "awing", "--fg-weight", "10"]);
        assert!(
            Part4::from_args(&a).is_err(),
            "the weight map is Adaptive Wing's own"
        );
    }

    /// 300-W's maps default to the Adaptive Wing loss; `--fg-weight W` picks the
    /// foreground-weighted MSE for heatmaps; a negative weight, the integral head or an
    /// explicit `--loss` beside it are refused.
    #[test]
    fn fg_weight_picks_the_foreground_weighted_mse() {
        let weighted = |weight| Loss::ForegroundMse {
            weight,
            threshold: fkd_train::FOREGROUND_THRESHOLD,
        };
        // 300-W's maps default to Adaptive Wing; IMM, the integral head and an explicit loss
        // or weight to their own.
        assert_eq!(parse(&[]).unwrap().loss(), Loss::adaptive_wing());
        assert_eq!(
            parse(&["--fg-weight", "10"]).unwrap().loss(),
            weighted(10.0)
        );
        assert_eq!(parse(&["--fg-weight", "0"]).unwrap().loss(), Loss::Mse);
        assert!(!parse(&["--loss", "mse"]).unwrap().awing);
        assert_eq!(parse(&["--fg-weight", "3"]).unwrap().loss(), weighted(3.0));
        assert_eq!(parse(&["--dataset", "imm"]).unwrap().loss(), Loss::Mse);
        assert_eq!(parse(&["--head", "integral"]).unwrap().loss(), Loss::L1);
        assert_eq!(parse(&["--loss", "l1"]).unwrap().fg_weight, 0.0);
        for bad in [
            &["--fg-weight=-1"][..],
            &["--fg-weight", "10", "--head", "integral"],
            &["--fg-weight", "10", "--loss", "l1"],
        ] {
            let err = parse(bad).err().unwrap().to_string();
            assert!(err.contains("--fg-weight"), "{bad:?}: {err}");
        }
    }

    /// `--occlusion P` turns on the augmenter's occluding rectangle at probability P, for
    /// 300-W and IMM alike; off by default; a P outside [0, 1] is refused.
    #[test]
    fn occlusion_reaches_the_augmentation() {
        let prob = |args: &[&str]| {
            let p = parse(args).unwrap();
            p.defaults().augment.unwrap().occlusion.prob
        };
        assert_eq!(prob(&[]), 0.0);
        assert_eq!(prob(&["--occlusion", "0.3"]), 0.3);
        assert_eq!(prob(&["--dataset", "imm", "--occlusion", "0.5"]), 0.5);
        let err = parse(&["--occlusion", "2"]).err().unwrap().to_string();
        assert!(err.contains("--occlusion"), "{err}");
    }

    /// `--deconv-layers 4` doubles the maps and the card says so; the default three layers
    /// write the card as it was before the option; fcn-alexnet refuses it.
    #[test]
    fn deconv_layers_set_the_map_size() {
        let plain = parse(&[]).unwrap();
        assert_eq!(plain.deconv_layers, fkd_landmarker::DEFAULT_DECONV_LAYERS);
        assert_eq!(plain.map, ImageSize::new(32, 32));
        let json = serde_json::to_string(&plain.card()).unwrap();
        assert!(!json.contains("deconv_layers"), "{json}");

        let four = parse(&["--deconv-layers", "4"]).unwrap();
        assert_eq!(four.map, ImageSize::new(64, 64));
        let card = four.card();
        assert_eq!(card.heatmap.as_ref().unwrap().deconv_layers, Some(4));
        let vm = VarMap::new();
        let device = candle_core::Device::Cpu;
        let vb = fkd_models::seeded_var_builder(&vm, 0, candle_core::DType::F32, &device);
        let net = Net::build(&card, vb).unwrap();
        let x = Tensor::zeros((1, 1, 128, 128), candle_core::DType::F32, &device).unwrap();
        let out = candle_core::ModuleT::forward_t(&net, &x, false).unwrap();
        assert_eq!(out.dims(), &[1, 68, 64, 64]);

        let err = parse(&["--model", "fcn-alexnet", "--deconv-layers", "4"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--deconv-layers"), "{err}");
    }

    /// `--head integral`: the card says so and gives it back, the net outputs one normalised
    /// (x, y) per point (the soft-argmax of its map), the step's targets are the points, and
    /// decoding reads them in input pixels.
    #[test]
    fn the_integral_head_outputs_points() {
        let mut part = Part4::new(
            NetName::ResnetDeconv,
            DataName::W300,
            Some(64),
            SIGMA,
            Decoder::Dark,
            16,
        )
        .unwrap();
        part.integral = true;
        let card = part.card();
        assert_eq!(
            card.heatmap.as_ref().unwrap().head.as_deref(),
            Some("integral")
        );
        assert_eq!(part.loss(), Loss::L1);
        assert!(matches!(part.step(None), Part4Step::Points(_)));

        let vm = VarMap::new();
        let device = candle_core::Device::Cpu;
        let vb = fkd_models::seeded_var_builder(&vm, 0, candle_core::DType::F32, &device);
        let net = part.build(vb).unwrap();
        let x = Tensor::zeros((2, 1, 64, 64), candle_core::DType::F32, &device).unwrap();
        let out = candle_core::ModuleT::forward_t(&net, &x, false).unwrap();
        assert_eq!(out.dims(), [2, 2 * 68]);
        let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|c| (0.0..1.0).contains(c)), "{v:?}");
        let points = card.decode(&[0.25, 0.5, 0.75, 0.125], ImageSize::new(64, 64));
        assert_eq!(
            points,
            [
                fkd_core::PixelPoint::new(16.0, 32.0),
                fkd_core::PixelPoint::new(48.0, 8.0)
            ]
        );
    }
}
