//! Every net a model card can name, as one type: [`Net::build`] turns a [`ModelCard`] and a
//! `VarBuilder` into the part's network (Parts 1–2's conv regressors, Part 3's ResNets, Part
//! 4's heatmap nets), with the var names its checkpoints use.

use crate::card::{Head, ModelCard};
use crate::error::{LandmarkerError, Result};
use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;
use fkd_core::ImageSize;
use fkd_models::{
    ConvRegressor, ConvRegressorConfig, FcnAlexNet, FcnAlexNetConfig, HeatmapBody, HeatmapNet,
    LayerInfo, ResNet, ResNetConfig, ResNetDeconv, ResNetDeconvConfig, ResNetDepth, Summarize,
};
use std::path::Path;

/// Channels of resnet-deconv's transposed convs when a card does not say (Simple Baselines').
pub const DEFAULT_DECONV_CHANNELS: usize = 256;

/// Transposed convs of resnet-deconv when a card does not say (Simple Baselines' three: maps at
/// a quarter of the input).
pub const DEFAULT_DECONV_LAYERS: usize = 3;

/// A net of any part.
#[derive(Clone, Debug)]
pub enum Net {
    /// Parts 1–2: NoseNet or FaceNet.
    Regressor(ConvRegressor),
    /// Part 3: ResNet-18/34 regressing every point.
    ResNet(ResNet),
    /// Part 4: a fully convolutional heatmap net.
    Heatmap(HeatmapNet),
}

/// Settings of a net that only matter before training (they change initial values, not the
/// architecture, so cards do not record them).
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildOptions {
    /// [`ResNetConfig::zero_init_residual`] for ResNets.
    pub zero_init_residual: bool,
}

/// The heatmaps' size that the heatmap net `arch` (`resnet-deconv`, `fcn-alexnet`) gives for
/// an `input`, or `None` when the input is too small for it (or `arch` is not a heatmap net).
/// `deconv_channels` and `deconv_layers` are resnet-deconv's head (each layer doubles the maps).
pub fn heatmap_size(
    arch: &str,
    input: ImageSize,
    points: usize,
    deconv_channels: usize,
    deconv_layers: usize,
) -> Option<ImageSize> {
    let hw = (input.height as usize, input.width as usize);
    let (h, w) = match arch {
        "resnet-deconv" => deconv_config(points, hw, deconv_channels, deconv_layers).map_hw(hw)?,
        "fcn-alexnet" => fcn_config(points, hw).map_hw(hw)?,
        _ => return None,
    };
    Some(ImageSize::new(
        u32::try_from(w).ok()?,
        u32::try_from(h).ok()?,
    ))
}

fn deconv_config(
    points: usize,
    input: (usize, usize),
    channels: usize,
    layers: usize,
) -> ResNetDeconvConfig {
    ResNetDeconvConfig {
        deconv_channels: channels,
        deconv_layers: layers,
        ..ResNetDeconvConfig::new(points, input)
    }
}

fn fcn_config(points: usize, input: (usize, usize)) -> FcnAlexNetConfig {
    FcnAlexNetConfig {
        input,
        ..FcnAlexNetConfig::imm(points)
    }
}

impl Net {
    /// The net `card` names, its vars made (or read) through `vb`.
    pub fn build(card: &ModelCard, vb: VarBuilder<'_>) -> Result<Net> {
        Self::build_with(card, vb, BuildOptions::default())
    }

    /// [`Net::build`] with training-only `options`.
    pub fn build_with(card: &ModelCard, vb: VarBuilder<'_>, options: BuildOptions) -> Result<Net> {
        let bad = |reason: String| LandmarkerError::Card {
            path: Path::new(crate::card::MODEL_CARD).to_path_buf(),
            reason,
        };
        let input = card.input_size();
        let hw = (input.height as usize, input.width as usize);
        let out = 2 * card.points;
        let regressor = |cfg: ConvRegressorConfig| -> Result<Net> {
            if cfg.input != hw || cfg.out != out {
                return Err(bad(format!(
                    "a {} net takes {}×{} and gives {} values, not {input} and {out}",
                    card.arch, cfg.input.1, cfg.input.0, cfg.out
                )));
            }
            Ok(Net::Regressor(ConvRegressor::new(&cfg, vb.clone())?))
        };
        let resnet = |depth: ResNetDepth| -> Result<Net> {
            let cfg = ResNetConfig::resnet18(1, out, hw)
                .with_depth(depth)
                .with_zero_init_residual(options.zero_init_residual);
            Ok(Net::ResNet(ResNet::new(&cfg, vb.clone())?))
        };
        let net = match (card.arch.as_str(), card.head()) {
            ("nose", Head::Regression) => regressor(ConvRegressorConfig::nose())?,
            ("face", Head::Regression) => regressor(ConvRegressorConfig::face())?,
            ("resnet18", Head::Regression) => resnet(ResNetDepth::R18)?,
            ("resnet34", Head::Regression) => resnet(ResNetDepth::R34)?,
            (
                arch @ ("resnet-deconv" | "fcn-alexnet"),
                head @ (Head::Heatmaps { .. } | Head::Integral),
            ) => {
                let h = card
                    .heatmap
                    .as_ref()
                    .ok_or_else(|| bad("no heatmap settings".into()))?;
                let channels = h.deconv_channels.unwrap_or(DEFAULT_DECONV_CHANNELS);
                if channels == 0 {
                    return Err(bad("0 deconv channels".into()));
                }
                let layers = h.deconv_layers.unwrap_or(DEFAULT_DECONV_LAYERS);
                if !(1..=6).contains(&layers) {
                    return Err(bad(format!("{layers} deconv layers (1 to 6 fit)")));
                }
                let map = heatmap_size(arch, input, card.points, channels, layers);
                if map.map(|m| [m.width, m.height]) != Some(h.map) {
                    return Err(bad(format!(
                        "the card's input {:?} and maps {:?} do not fit a {arch} net",
                        card.input, h.map
                    )));
                }
                let body = if arch == "fcn-alexnet" {
                    HeatmapBody::Fcn(FcnAlexNet::new(&fcn_config(card.points, hw), vb)?)
                } else {
                    HeatmapBody::Deconv(ResNetDeconv::new(
                        &deconv_config(card.points, hw, channels, layers),
                        vb,
                    )?)
                };
                Net::Heatmap(HeatmapNet::new(body, head == Head::Integral))
            }
            (arch, _) => {
                return Err(bad(format!(
                    "unknown network {arch:?} for a {} card",
                    card.part
                )));
            }
        };
        Ok(net)
    }

    /// The first conv's weights `(out, in, kh, kw)`: the learned filters.
    pub fn conv1_weights(&self) -> &Tensor {
        match self {
            Net::Regressor(n) => n.conv1_weights(),
            Net::ResNet(n) => n.conv1_weights(),
            Net::Heatmap(n) => n.conv1_weights(),
        }
    }

    /// The heatmap net, for Part 4's figures of its maps.
    pub fn as_heatmap(&self) -> Option<&HeatmapNet> {
        match self {
            Net::Heatmap(n) => Some(n),
            _ => None,
        }
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Net::Regressor(n) => n.forward_t(x, train),
            Net::ResNet(n) => n.forward_t(x, train),
            Net::Heatmap(n) => n.forward_t(x, train),
        }
    }
}

impl Summarize for Net {
    fn summary(&self) -> fkd_models::Result<Vec<LayerInfo>> {
        match self {
            Net::Regressor(n) => n.summary(),
            Net::ResNet(n) => n.summary(),
            Net::Heatmap(n) => n.summary(),
        }
    }

    fn num_params(&self) -> usize {
        match self {
            Net::Regressor(n) => n.num_params(),
            Net::ResNet(n) => n.num_params(),
            Net::Heatmap(n) => n.num_params(),
        }
    }
}
