//! Part 4's modern heatmap net: "Simple Baselines" (Xiao, Wu, Wei, ECCV 2018). A ResNet encoder
//! ([`ResNetTrunk`], torchvision names, so `--init` loads its weights) followed by transposed
//! convolutions that bring layer4's 1/32-size features back to a quarter of the input, and a
//! 1×1 conv to one heatmap per point; no fully connected layer, so any input size works.
//!
//! layer4 (512 ch, H/32) → [ConvTranspose 4×4/2 pad 1 (no bias) → BN → ReLU] × 3 (256 ch each,
//! H/16, H/8, H/4) → conv 1×1 → `points` maps at H/4 × W/4.
//!
//! Var names follow the paper's PyTorch code: `deconv_layers.{0,3,6}.weight` for the transposed
//! convs, `deconv_layers.{1,4,7}.*` for their norms, `final_layer.{weight,bias}`. Initialised as
//! that code does: transposed convs and the final conv N(0, 0.001²), norms γ 1 and β 0, bias 0.
//! The transposed convs run on [`fkd_ops::conv_transpose2d`] (Candle's is a single-threaded
//! loop on the CPU) and the final 1×1 conv on [`fkd_ops::conv2d`] (Candle's conv backward
//! is one too: it cost 13% of the training step at a 128-pixel input, batch 16).

use candle_core::{ModuleT, Tensor};
use candle_nn::{
    BatchNorm, BatchNormConfig, Conv2d, ConvTranspose2d, ConvTranspose2dConfig, Init, VarBuilder,
};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::resnet::{ResNetDepth, ResNetTrunk, TRUNK_CHANNELS};
use crate::summary::{LayerInfo, Summarize, Trace, bn_params, traced_summary};
use fkd_ops::{batch_norm2d, conv_transpose2d_layer, conv2d_layer};

/// Configuration of a [`ResNetDeconv`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetDeconvConfig {
    /// The encoder.
    pub depth: ResNetDepth,
    /// Input channels (1 for grey faces).
    pub in_channels: usize,
    /// Heatmaps (points) out.
    pub points: usize,
    /// Nominal input (height, width), for the summary.
    pub input: (usize, usize),
    /// Channels of each transposed conv.
    pub deconv_channels: usize,
    /// Number of 2× transposed convs (3: maps at a quarter of the input).
    pub deconv_layers: usize,
}

impl ResNetDeconvConfig {
    /// Simple Baselines' head on a ResNet-18 of one input channel: 3 × 256-channel upsamplings.
    pub fn new(points: usize, input: (usize, usize)) -> Self {
        Self {
            depth: ResNetDepth::R18,
            in_channels: 1,
            points,
            input,
            deconv_channels: 256,
            deconv_layers: 3,
        }
    }

    /// The heatmaps' (height, width) for an input of `input`: layer4's size doubled per
    /// transposed conv.
    pub fn map_hw(&self, input: (usize, usize)) -> Option<(usize, usize)> {
        let (h, w) = crate::resnet::ResNetConfig::feature_hw(input)?;
        let k = 1usize.checked_shl(self.deconv_layers as u32)?;
        Some((h * k, w * k))
    }
}

/// The encoder and the [`DeconvHead`].
#[derive(Clone, Debug)]
pub struct ResNetDeconv {
    cfg: ResNetDeconvConfig,
    trunk: ResNetTrunk,
    head: DeconvHead,
}

impl ResNetDeconv {
    /// Builds the net on `vb`; errors on zero points or upsamplings, or an empty input.
    pub fn new(cfg: &ResNetDeconvConfig, vb: VarBuilder<'_>) -> Result<Self> {
        if cfg.map_hw(cfg.input).is_none() {
            return Err(ModelError::Config(format!(
                "input size {:?} is empty",
                cfg.input
            )));
        }
        let trunk = ResNetTrunk::new(cfg.depth, cfg.in_channels, vb.clone())?;
        let head = DeconvHead::new(
            TRUNK_CHANNELS,
            cfg.deconv_channels,
            cfg.deconv_layers,
            cfg.points,
            vb,
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            trunk,
            head,
        })
    }

    /// The configuration this net was built from.
    pub fn config(&self) -> &ResNetDeconvConfig {
        &self.cfg
    }

    /// The stem's weights, (64, in_channels, 7, 7).
    pub fn conv1_weights(&self) -> &Tensor {
        self.trunk.conv1_weights()
    }

    fn run(&self, x: &Tensor, train: bool, mut trace: Trace<'_>) -> candle_core::Result<Tensor> {
        let x = self.trunk.run(x, train, Trace(trace.0.as_deref_mut()))?;
        self.head.run(&x, train, trace)
    }
}

/// The upsampling half of [`ResNetDeconv`] on its own: `layers` × [transposed conv 4×4/2
/// pad 1 (no bias) → BN → ReLU] of `channels` each, then a 1×1 conv to `points` maps. Its vars
/// sit at the root of the var builder it is given (`deconv_layers.*`, `final_layer.*`).
/// `cargo xtask bench --models deconv-head` times it alone against PyTorch's.
#[derive(Clone, Debug)]
pub struct DeconvHead {
    deconvs: Vec<(ConvTranspose2d, BatchNorm)>,
    final_layer: Conv2d,
    points: usize,
}

impl DeconvHead {
    /// A head taking `in_channels` features; errors on zero points, channels or layers.
    pub fn new(
        in_channels: usize,
        channels: usize,
        layers: usize,
        points: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        if points == 0 || channels == 0 || layers == 0 || in_channels == 0 {
            return Err(ModelError::Config(format!(
                "a heatmap head needs input channels, points, deconv channels and layers ≥ 1, \
                 got {in_channels}, {points}, {channels} and {layers}"
            )));
        }
        let small = Init::Randn {
            mean: 0.0,
            stdev: 0.001,
        };
        let vd = vb.pp("deconv_layers");
        let mut deconvs = Vec::with_capacity(layers);
        let mut c_in = in_channels;
        for i in 0..layers {
            let w = vd.pp((3 * i).to_string()).get_with_hints(
                (c_in, channels, 4, 4),
                "weight",
                small,
            )?;
            let conv = ConvTranspose2d::new(
                w,
                None,
                ConvTranspose2dConfig {
                    padding: 1,
                    output_padding: 0,
                    stride: 2,
                    dilation: 1,
                },
            );
            let norm = candle_nn::batch_norm(
                channels,
                BatchNormConfig {
                    eps: 1e-5,
                    remove_mean: true,
                    affine: true,
                    momentum: 0.1,
                },
                vd.pp((3 * i + 1).to_string()),
            )?;
            deconvs.push((conv, norm));
            c_in = channels;
        }
        let vf = vb.pp("final_layer");
        let w = vf.get_with_hints((points, c_in, 1, 1), "weight", small)?;
        let b = vf.get_with_hints(points, "bias", Init::Const(0.0))?;
        let final_layer = Conv2d::new(w, Some(b), Default::default());
        Ok(Self {
            deconvs,
            final_layer,
            points,
        })
    }

    fn run(&self, x: &Tensor, train: bool, mut trace: Trace<'_>) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, (conv, norm)) in self.deconvs.iter().enumerate() {
            x = batch_norm2d(norm, &conv_transpose2d_layer(conv, &x)?, train, true)?;
            trace.record(
                || format!("deconv_layers.{}", 3 * i),
                &x,
                stage_params(conv, norm),
            );
        }
        let x = conv2d_layer(&self.final_layer, &x)?;
        trace.record(|| "final_layer".into(), &x, self.final_params());
        Ok(x)
    }

    fn final_params(&self) -> usize {
        self.final_layer.weight().elem_count() + self.points
    }

    /// Trainable parameters.
    pub fn num_params(&self) -> usize {
        self.deconvs
            .iter()
            .map(|(c, n)| stage_params(c, n))
            .sum::<usize>()
            + self.final_params()
    }
}

impl ModuleT for DeconvHead {
    /// (B, in_channels, h, w) → (B, points, h·2^layers, w·2^layers).
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, train, Trace(None))
    }
}

/// Parameters of one upsampling stage: the (bias-free) transposed conv and its norm.
fn stage_params(conv: &ConvTranspose2d, norm: &BatchNorm) -> usize {
    conv.weight().elem_count() + bn_params(norm)
}

impl ModuleT for ResNetDeconv {
    /// (B, in_channels, H, W) → (B, points, H/4, W/4) heatmaps (for H, W multiples of 32).
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, train, Trace(None))
    }
}

impl Summarize for ResNetDeconv {
    fn summary(&self) -> Result<Vec<LayerInfo>> {
        let (h, w) = self.cfg.input;
        traced_summary(
            self.trunk.conv1_weights(),
            (self.cfg.in_channels, h, w),
            |x, trace| self.run(x, false, trace),
        )
    }

    fn num_params(&self) -> usize {
        self.trunk.num_params() + self.head.num_params()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn build(cfg: &ResNetDeconvConfig) -> (VarMap, ResNetDeconv) {
        let vm = VarMap::new();
        let net = ResNetDeconv::new(
            cfg,
            crate::seeded_var_builder(&vm, 7, DType::F32, &Device::Cpu),
        )
        .unwrap();
        (vm, net)
    }

    /// Shapes, names and the parameter count of the paper's ResNet-18 head: 3 × (4·4·c_in·256
    /// + 2·256) + 256·68 + 68 on top of the 1-channel trunk.
    #[test]
    fn shapes_names_and_parameters() {
        let cfg = ResNetDeconvConfig::new(68, (128, 128));
        assert_eq!(cfg.map_hw((128, 128)), Some((32, 32)));
        assert_eq!(cfg.map_hw((256, 192)), Some((64, 48)));
        let (vm, net) = build(&cfg);
        let x = Tensor::zeros((2, 1, 128, 128), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward_t(&x, false).unwrap().dims(), &[2, 68, 32, 32]);
        let head = 16 * 512 * 256 + 2 * 256 + 2 * (16 * 256 * 256 + 2 * 256) + 256 * 68 + 68;
        assert_eq!(net.num_params(), net.trunk.num_params() + head);
        let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        for name in [
            "conv1.weight",
            "layer4.1.bn2.running_var",
            "deconv_layers.0.weight",
            "deconv_layers.1.running_mean",
            "deconv_layers.6.weight",
            "deconv_layers.7.weight",
            "final_layer.weight",
            "final_layer.bias",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing");
        }
        let rows = net.summary().unwrap();
        assert_eq!(rows.last().unwrap().name, "final_layer");
        assert!(
            ResNetDeconv::new(
                &ResNetDeconvConfig { points: 0, ..cfg },
                VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu)
            )
            .is_err()
        );
    }

    /// Training mode back-propagates to the stem and updates the head's running statistics.
    #[test]
    fn backward_reaches_the_stem() {
        let cfg = ResNetDeconvConfig::new(3, (64, 64));
        let (vm, net) = build(&cfg);
        // A fixed, varied input (no unseeded RNG: the test must not depend on luck).
        let x: Vec<f32> = (0..8192)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0) - 0.5)
            .collect();
        let x = Tensor::from_vec(x, (2, 1, 64, 64), &Device::Cpu).unwrap();
        let y = net.forward_t(&x, true).unwrap();
        assert_eq!(y.dims(), &[2, 3, 16, 16]);
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = vm.data().lock().unwrap();
        for name in ["conv1.weight", "deconv_layers.0.weight", "final_layer.bias"] {
            let g = grads.get(data[name].as_tensor()).unwrap();
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(g.iter().all(|v| v.is_finite()), "{name}");
            assert!(g.iter().any(|&v| v != 0.0), "{name} got no gradient");
        }
        let mean = data["deconv_layers.1.running_mean"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        assert!(mean.iter().any(|&v| v != 0.0));
    }
}
