//! Part 3's network: torchvision's `resnet18` or `resnet34` topology ([`ResNetDepth`]) with a
//! configurable input-channel count (1 for grey faces) and a regression head of `out` outputs
//! (136 = iBUG's 68 points × 2).
//!
//! conv1 7×7/2 pad 3 (no bias) → bn1 → ReLU → max-pool 3×3/2 pad 1 → layer1..layer4
//! (BasicBlocks, 2/2/2/2 of them for ResNet-18 and 3/4/6/3 for ResNet-34, 64/128/256/512
//! channels, the first block of layers 2–4 striding by 2 with a conv1×1/2 + BN `downsample`
//! shortcut) → global average pool → fc. Deeper torchvision ResNets (50 and up) use bottleneck
//! blocks and are not offered.
//!
//! Var names are exactly torchvision's state-dict keys (`conv1.weight`,
//! `bn1.{weight,bias,running_mean,running_var}`, `layer1.0.conv1.weight`,
//! `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.*`, `layer3.5.conv2.weight`,
//! `fc.{weight,bias}`), so torchvision weights converted to safetensors load by name (see
//! [`crate::load_matching`], which leaves out their `num_batches_tracked` entries).
//! Initialisation follows torchvision: convs N(0, 2/fan_out), batch-norm weight 1 and bias 0,
//! fc PyTorch's default.
//!
//! Training: `forward_t(x, true)` normalises with batch statistics and updates the running
//! statistics in place (momentum 0.1, eps 1e-5, as PyTorch). The running statistics live in the
//! `VarMap` (so checkpoints carry them) but never receive a gradient, so optimisers built from
//! `VarMap::all_vars()` leave them alone. Backward works end to end, including through the
//! stem's 3×3/2 padded max-pool, which uses [`fkd_ops::composed::max_pool2d_composed`] because Candle 0.11's
//! own max-pool refuses to differentiate when kernel ≠ stride.

use std::fmt;
use std::str::FromStr;

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::init::{conv2d_resnet, linear_torch};
use crate::summary::{LayerInfo, Summarize, Trace, bn_params, conv_params, traced_summary};
use fkd_ops::composed::global_avg_pool;
use fkd_ops::{batch_norm2d_add_relu, conv2d_batch_norm, conv2d_layer, max_pool2d};

/// Which torchvision ResNet a [`ResNet`] is: the number of BasicBlocks in each of its four
/// layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResNetDepth {
    /// ResNet-18: 2, 2, 2, 2 blocks (11.7 M parameters with torchvision's RGB stem and head).
    #[default]
    #[serde(rename = "resnet18")]
    R18,
    /// ResNet-34: 3, 4, 6, 3 blocks (21.8 M parameters with torchvision's RGB stem and head).
    #[serde(rename = "resnet34")]
    R34,
}

impl ResNetDepth {
    /// Every depth offered, shallowest first.
    pub const ALL: [Self; 2] = [Self::R18, Self::R34];

    /// BasicBlocks in layer1..layer4.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            Self::R18 => [2, 2, 2, 2],
            Self::R34 => [3, 4, 6, 3],
        }
    }

    /// torchvision's name: `resnet18`, `resnet34` (also the serde and [`FromStr`] spelling).
    pub fn name(self) -> &'static str {
        match self {
            Self::R18 => "resnet18",
            Self::R34 => "resnet34",
        }
    }
}

impl fmt::Display for ResNetDepth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ResNetDepth {
    type Err = ModelError;

    /// Parses [`ResNetDepth::name`]'s spelling.
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                ModelError::Config(format!("unknown ResNet {s:?}: resnet18 or resnet34"))
            })
    }
}

/// Configuration of a [`ResNet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// ResNet-18 or ResNet-34. Configurations saved before the field existed read as ResNet-18.
    #[serde(default)]
    pub depth: ResNetDepth,
    /// Input channels of the stem (1 for grey images, 3 for torchvision's RGB).
    pub in_channels: usize,
    /// Number of outputs of the final linear layer.
    pub out: usize,
    /// Nominal input size (height, width). The network accepts any size that survives the five
    /// stride-2 stages; this one is used for [`Summarize::summary`].
    pub input: (usize, usize),
    /// Start each residual block's last batch-norm scale (`bn2.weight`) at 0 instead of 1, so
    /// every block begins as the identity (torchvision's `zero_init_residual=True`; Goyal et
    /// al., 2017). Only the initial values change; absent in older files, it reads as `false`.
    #[serde(default)]
    pub zero_init_residual: bool,
}

/// The configuration's former name, from when ResNet-18 was the only depth.
pub type ResNet18Config = ResNetConfig;

impl ResNetConfig {
    /// Part 3: a ResNet-18 on 1-channel 224×224 face crops, 136 outputs (iBUG's 68 points).
    /// `part3().with_depth(ResNetDepth::R34)` is the same with a ResNet-34.
    pub fn part3() -> Self {
        Self::resnet18(1, 2 * fkd_core::Layout::IBUG68.n_points, (224, 224))
    }

    /// A ResNet-18 with `in_channels` input channels, `out` outputs and nominal input size
    /// `input` (height, width).
    pub fn resnet18(in_channels: usize, out: usize, input: (usize, usize)) -> Self {
        Self {
            depth: ResNetDepth::R18,
            in_channels,
            out,
            input,
            zero_init_residual: false,
        }
    }

    /// A ResNet-34 with `in_channels` input channels, `out` outputs and nominal input size
    /// `input` (height, width).
    pub fn resnet34(in_channels: usize, out: usize, input: (usize, usize)) -> Self {
        Self::resnet18(in_channels, out, input).with_depth(ResNetDepth::R34)
    }

    /// This configuration with another depth.
    pub fn with_depth(self, depth: ResNetDepth) -> Self {
        Self { depth, ..self }
    }

    /// This configuration with [`ResNetConfig::zero_init_residual`] set to `zero`.
    pub fn with_zero_init_residual(self, zero: bool) -> Self {
        Self {
            zero_init_residual: zero,
            ..self
        }
    }

    /// Spatial size (height, width) of layer4's output for an input of `input`: each of the
    /// five stride-2 stages (conv1, max-pool, layer2, layer3, layer4) maps n to ⌊(n−1)/2⌋+1.
    /// 224 → 112 → 56 → 28 → 14 → 7. `None` for an empty input.
    pub fn feature_hw(input: (usize, usize)) -> Option<(usize, usize)> {
        let (mut h, mut w) = input;
        if h == 0 || w == 0 {
            return None;
        }
        for _ in 0..5 {
            (h, w) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        }
        Some((h, w))
    }
}

/// [`bn`] whose scale starts at 0 (a residual block's last norm under `zero_init_residual`).
/// The var is created first with the zero initialiser; `bn` then finds it. Loading weights
/// (a `VarBuilder` over a file) reads the saved scale either way.
fn bn_zero_scale(channels: usize, vb: VarBuilder<'_>) -> candle_core::Result<BatchNorm> {
    vb.get_with_hints(channels, "weight", candle_nn::Init::Const(0.0))?;
    bn(channels, vb)
}

fn bn(channels: usize, vb: VarBuilder<'_>) -> candle_core::Result<BatchNorm> {
    let cfg = BatchNormConfig {
        eps: 1e-5,
        remove_mean: true,
        affine: true,
        momentum: 0.1,
    };
    candle_nn::batch_norm(channels, cfg, vb)
}

fn conv(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    vb: VarBuilder<'_>,
) -> candle_core::Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    conv2d_resnet(c_in, c_out, k, cfg, vb)
}

/// torchvision's BasicBlock: conv3×3/s → BN → ReLU → conv3×3 → BN, plus the (downsampled)
/// input, → ReLU.
#[derive(Clone, Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        zero_init_residual: bool,
        vb: VarBuilder<'_>,
    ) -> candle_core::Result<Self> {
        let downsample = if stride != 1 || c_in != c_out {
            let vbd = vb.pp("downsample");
            Some((
                conv(c_in, c_out, 1, stride, vbd.pp("0"))?,
                bn(c_out, vbd.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: conv(c_in, c_out, 3, stride, vb.pp("conv1"))?,
            bn1: bn(c_out, vb.pp("bn1"))?,
            conv2: conv(c_out, c_out, 3, 1, vb.pp("conv2"))?,
            bn2: if zero_init_residual {
                bn_zero_scale(c_out, vb.pp("bn2"))?
            } else {
                bn(c_out, vb.pp("bn2"))?
            },
            downsample,
        })
    }

    fn params(&self) -> usize {
        conv_params(&self.conv1)
            + bn_params(&self.bn1)
            + conv_params(&self.conv2)
            + bn_params(&self.bn2)
            + self
                .downsample
                .as_ref()
                .map_or(0, |(c, b)| conv_params(c) + bn_params(b))
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = conv2d_batch_norm(&self.conv1, &self.bn1, x, train, true)?;
        let shortcut = match &self.downsample {
            Some((c, b)) => conv2d_batch_norm(c, b, x, train, false)?,
            None => x.clone(),
        };
        // bn2, the residual add and the block's ReLU as one node.
        batch_norm2d_add_relu(&self.bn2, &conv2d_layer(&self.conv2, &y)?, &shortcut, train)
    }
}

/// The convolutional part of a ResNet (conv1 … layer4, no pooling or head), under torchvision's
/// names: the encoder of [`ResNet`] and of the heatmap nets.
#[derive(Clone, Debug)]
pub struct ResNetTrunk {
    depth: ResNetDepth,
    in_channels: usize,
    conv1: Conv2d,
    bn1: BatchNorm,
    /// `(name, block)` in order: layer1.0, layer1.1, …, the last block of layer4.
    blocks: Vec<(String, BasicBlock)>,
}

/// Channels of layer4's output.
pub const TRUNK_CHANNELS: usize = 512;

impl ResNetTrunk {
    /// Builds conv1 … layer4 of `depth` for `in_channels` input channels on `vb` (no prefix:
    /// the vars are `conv1.weight`, `layer1.0.conv1.weight`, …).
    pub fn new(depth: ResNetDepth, in_channels: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Self::with_init(depth, in_channels, false, vb)
    }

    /// [`ResNetTrunk::new`], with every block's `bn2` scale starting at 0 when
    /// `zero_init_residual` (see [`ResNetConfig::zero_init_residual`]).
    pub fn with_init(
        depth: ResNetDepth,
        in_channels: usize,
        zero_init_residual: bool,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        if in_channels == 0 {
            return Err(ModelError::Config(format!("{depth} needs in_channels ≥ 1")));
        }
        let conv1 = conv(in_channels, 64, 7, 2, vb.pp("conv1"))?;
        let bn1 = bn(64, vb.pp("bn1"))?;
        let n_blocks = depth.blocks();
        let mut blocks = Vec::with_capacity(n_blocks.iter().sum());
        let mut c_in = 64;
        for (l, (c_out, n)) in [64, 128, 256, TRUNK_CHANNELS]
            .into_iter()
            .zip(n_blocks)
            .enumerate()
        {
            for b in 0..n {
                let stride = if l > 0 && b == 0 { 2 } else { 1 };
                let name = format!("layer{}.{b}", l + 1);
                let block = BasicBlock::new(c_in, c_out, stride, zero_init_residual, vb.pp(&name))?;
                blocks.push((name, block));
                c_in = c_out;
            }
        }
        Ok(Self {
            depth,
            in_channels,
            conv1,
            bn1,
            blocks,
        })
    }

    /// The stem's weights, (64, in_channels, 7, 7).
    pub fn conv1_weights(&self) -> &Tensor {
        self.conv1.weight()
    }

    /// Parameters (running statistics not counted).
    pub fn num_params(&self) -> usize {
        conv_params(&self.conv1)
            + bn_params(&self.bn1)
            + self.blocks.iter().map(|(_, b)| b.params()).sum::<usize>()
    }

    /// (B, in_channels, H, W) → (B, 512, H/32, W/32) (see [`ResNetConfig::feature_hw`]).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, train, Trace(None))
    }

    pub(crate) fn run(
        &self,
        x: &Tensor,
        train: bool,
        mut trace: Trace<'_>,
    ) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.in_channels {
            candle_core::bail!(
                "{} expects (batch, {}, H, W) input, got {:?}",
                self.depth,
                self.in_channels,
                x.dims()
            );
        }
        // PyTorch refuses to train batch-norm on one value per channel ("Expected more than 1
        // value per channel when training"); Candle would divide by zero instead. layer4's
        // output is the smallest map a batch-norm sees.
        let small = ResNetConfig::feature_hw((h, w)).is_none_or(|(fh, fw)| n * fh * fw < 2);
        if train && small {
            candle_core::bail!(
                "{} cannot train on {:?}: batch × layer4 height × width must be ≥ 2",
                self.depth,
                x.dims()
            );
        }
        // Conv, batch norm and ReLU run as one or two nodes (the norm folds into the conv in
        // inference); the summary lists them as three layers.
        let x = conv2d_batch_norm(&self.conv1, &self.bn1, x, train, true)?;
        trace.record(|| "conv1".into(), &x, conv_params(&self.conv1));
        trace.record(|| "bn1".into(), &x, bn_params(&self.bn1));
        trace.record(|| "relu".into(), &x, 0);
        let mut x = max_pool2d(&x, 3, 2, 1)?;
        trace.record(|| "maxpool".into(), &x, 0);
        for (name, block) in &self.blocks {
            x = block.forward_t(&x, train)?;
            trace.record(|| name.clone(), &x, block.params());
        }
        Ok(x)
    }
}

/// torchvision's ResNet-18 or ResNet-34 with a configurable stem and head; see the module docs.
#[derive(Clone, Debug)]
pub struct ResNet {
    cfg: ResNetConfig,
    trunk: ResNetTrunk,
    fc: Linear,
}

/// The network's former name, from when ResNet-18 was the only depth.
pub type ResNet18 = ResNet;

impl ResNet {
    /// Builds the network, creating (or reading) its vars under torchvision's names. Errors on
    /// zero channels or outputs, or mis-shaped vars.
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder<'_>) -> Result<Self> {
        if cfg.in_channels == 0 || cfg.out == 0 {
            return Err(ModelError::Config(format!(
                "{} needs in_channels and out ≥ 1, got {} and {}",
                cfg.depth, cfg.in_channels, cfg.out
            )));
        }
        if ResNetConfig::feature_hw(cfg.input).is_none() {
            return Err(ModelError::Config(format!(
                "input size {:?} is empty",
                cfg.input
            )));
        }
        let trunk = ResNetTrunk::with_init(
            cfg.depth,
            cfg.in_channels,
            cfg.zero_init_residual,
            vb.clone(),
        )?;
        let fc = linear_torch(TRUNK_CHANNELS, cfg.out, vb.pp("fc"))?;
        Ok(Self {
            cfg: cfg.clone(),
            trunk,
            fc,
        })
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// The stem's weights, (64, in_channels, 7, 7).
    pub fn conv1_weights(&self) -> &Tensor {
        self.trunk.conv1_weights()
    }

    /// The encoder (conv1 … layer4).
    pub fn trunk(&self) -> &ResNetTrunk {
        &self.trunk
    }

    fn run(&self, x: &Tensor, train: bool, mut trace: Trace<'_>) -> candle_core::Result<Tensor> {
        let x = self.trunk.run(x, train, Trace(trace.0.as_deref_mut()))?;
        let x = global_avg_pool(&x)?;
        trace.record(|| "avgpool".into(), &x, 0);
        let x = self.fc.forward(&x)?;
        let fc_params =
            self.fc.weight().elem_count() + self.fc.bias().map_or(0, Tensor::elem_count);
        trace.record(|| "fc".into(), &x, fc_params);
        Ok(x)
    }
}

impl ModuleT for ResNet {
    /// (B, in_channels, H, W) → (B, out). With `train`, batch-norm uses batch statistics and
    /// updates its running statistics.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, train, Trace(None))
    }
}

impl Summarize for ResNet {
    fn summary(&self) -> Result<Vec<LayerInfo>> {
        let (h, w) = self.cfg.input;
        traced_summary(
            self.trunk.conv1_weights(),
            (self.cfg.in_channels, h, w),
            |x, trace| self.run(x, false, trace),
        )
    }

    fn num_params(&self) -> usize {
        self.trunk.num_params()
            + self.fc.weight().elem_count()
            + self.fc.bias().map_or(0, Tensor::elem_count)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn small(out: usize) -> ResNetConfig {
        ResNetConfig::resnet18(1, out, (64, 64))
    }

    fn build(cfg: &ResNetConfig) -> (VarMap, ResNet) {
        let vm = VarMap::new();
        let net = ResNet::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        (vm, net)
    }

    fn stat(vm: &VarMap, name: &str) -> Vec<f32> {
        vm.data().lock().unwrap()[name]
            .as_tensor()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn parameter_counts_match_torchvision() {
        // torchvision resnet18 (3-channel stem, 1000 classes): 11,689,512 parameters.
        let (_, rgb) = build(&ResNetConfig::resnet18(3, 1000, (224, 224)));
        assert_eq!(rgb.num_params(), 11_689_512);
        // Part 3: the stem loses 64·2·49 = 6,272 weights (3 → 1 channel) and the head
        // 512·864 + 864 = 443,232 (1000 → 136 outputs): 11,689,512 − 6,272 − 443,232.
        let cfg = ResNet18Config::part3();
        assert_eq!(cfg.out, 136);
        assert_eq!(cfg.depth, ResNetDepth::R18);
        let (vm, net) = build(&cfg);
        assert_eq!(net.num_params(), 11_240_008);
        // torchvision's state dict has 122 keys, 20 of them num_batches_tracked.
        let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        assert_eq!(names.len(), 102);
        for name in [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "layer1.0.conv1.weight",
            "layer1.1.bn2.running_var",
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.weight",
            "layer2.0.downsample.1.running_mean",
            "layer4.1.conv2.weight",
            "fc.weight",
            "fc.bias",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing");
        }
        assert!(
            !names
                .iter()
                .any(|n| n == "conv1.bias" || n == "layer1.0.downsample.0.weight")
        );
        assert_eq!(net.conv1_weights().dims(), &[64, 1, 7, 7]);
    }

    #[test]
    fn resnet34_parameter_counts_match_torchvision() {
        // torchvision resnet34 (3-channel stem, 1000 classes): 21,797,672 parameters.
        let (_, rgb) = build(&ResNetConfig::resnet34(3, 1000, (224, 224)));
        assert_eq!(rgb.num_params(), 21_797_672);
        // Grey stem and 136 outputs: 21,797,672 − 6,272 − 443,232, as for ResNet-18.
        let cfg = ResNetConfig::part3().with_depth(ResNetDepth::R34);
        assert_eq!(cfg, ResNetConfig::resnet34(1, 136, (224, 224)));
        let (vm, net) = build(&cfg);
        assert_eq!(net.num_params(), 21_348_168);
        // torchvision's state dict has 218 keys, 36 of them num_batches_tracked: 16 blocks of
        // 10 tensors, 3 downsamples of 5, the stem's 5 and the head's 2.
        let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        assert_eq!(names.len(), 182);
        for name in [
            "layer1.2.bn2.running_var",
            "layer2.3.conv1.weight",
            "layer3.0.downsample.0.weight",
            "layer3.5.conv2.weight",
            "layer4.2.bn2.bias",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing");
        }
        for name in [
            "layer1.3.conv1.weight",
            "layer3.6.conv1.weight",
            "layer4.3.bn1.weight",
        ] {
            assert!(!names.iter().any(|n| n == name), "{name} present");
        }
    }

    #[test]
    fn resnet34_forward_and_summary_at_64() {
        let (_, net) = build(&ResNetConfig::resnet34(1, 6, (64, 64)));
        let x = Tensor::randn(0f32, 1.0, (2, 1, 64, 64), &Device::Cpu).unwrap();
        assert_eq!(net.forward_t(&x, true).unwrap().dims(), &[2, 6]);
        let rows = net.summary().unwrap();
        let blocks: Vec<&str> = rows
            .iter()
            .map(|r| r.name.as_str())
            .filter(|n| n.starts_with("layer"))
            .collect();
        assert_eq!(blocks.len(), 16);
        assert_eq!(
            &blocks[..4],
            ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]
        );
        assert_eq!(blocks[15], "layer4.2");
        let last = rows.iter().find(|r| r.name == "layer3.5").unwrap();
        assert_eq!(last.output_shape, vec![256, 4, 4]);
        assert_eq!(
            rows.iter().map(|r| r.params).sum::<usize>(),
            net.num_params()
        );
        assert_eq!(rows.last().unwrap().output_shape, vec![6]);
    }

    #[test]
    fn depth_names_and_configs_round_trip() {
        for depth in ResNetDepth::ALL {
            assert_eq!(depth.name().parse::<ResNetDepth>().unwrap(), depth);
            assert_eq!(depth.to_string(), depth.name());
        }
        assert!("resnet50".parse::<ResNetDepth>().is_err());
        let cfg = ResNetConfig::resnet34(1, 136, (224, 224));
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""depth":"resnet34""#), "{json}");
        assert_eq!(serde_json::from_str::<ResNetConfig>(&json).unwrap(), cfg);
        // A configuration saved before `depth` existed is a ResNet-18.
        let old = r#"{"in_channels":1,"out":136,"input":[224,224]}"#;
        assert_eq!(
            serde_json::from_str::<ResNetConfig>(old).unwrap(),
            ResNetConfig::part3()
        );
    }

    #[test]
    fn zero_init_residual_zeroes_only_the_blocks_last_norm_scales() {
        let draw = |zero: bool| {
            let vm = VarMap::new();
            let cfg = small(4).with_zero_init_residual(zero);
            let vb = crate::seeded_var_builder(&vm, 3, DType::F32, &Device::Cpu);
            let net = ResNet::new(&cfg, vb).unwrap();
            (vm, net)
        };
        let (plain, _) = draw(false);
        let (zeroed, net) = draw(true);
        let plain = plain.data().lock().unwrap();
        let zeroed = zeroed.data().lock().unwrap();
        let mut n_zeroed = 0;
        for (name, var) in zeroed.iter() {
            let got: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let other: Vec<f32> = plain[name]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            if name.ends_with(".bn2.weight") {
                assert!(got.iter().all(|&v| v == 0.0), "{name}");
                n_zeroed += 1;
            } else {
                // The seeded draw of every other var is unchanged.
                assert_eq!(got, other, "{name}");
            }
        }
        assert_eq!(n_zeroed, 8, "one per BasicBlock of ResNet-18");
        // Each block starts as the identity plus its shortcut, so the output still depends on
        // the input, and the zeroed scales get a gradient.
        let x = Tensor::randn(0f32, 1., (2, 1, 64, 64), &Device::Cpu).unwrap();
        let y = net.forward_t(&x, true).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(zeroed["layer1.0.bn2.weight"].as_tensor())
            .unwrap();
        assert!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
        // Older configurations read as `false`.
        let json = serde_json::to_string(&small(4))
            .unwrap()
            .replace(",\"zero_init_residual\":false", "");
        assert!(!json.contains("zero_init"), "{json}");
        assert!(
            !serde_json::from_str::<ResNetConfig>(&json)
                .unwrap()
                .zero_init_residual
        );
    }

    #[test]
    fn forward_shapes_and_summary_at_64() {
        let (_, net) = build(&small(136));
        let x = Tensor::randn(0f32, 1.0, (2, 1, 64, 64), &Device::Cpu).unwrap();
        assert_eq!(net.forward_t(&x, false).unwrap().dims(), &[2, 136]);
        assert_eq!(net.forward_t(&x, true).unwrap().dims(), &[2, 136]);
        let rows = net.summary().unwrap();
        let got: Vec<(&str, &[usize])> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.output_shape.as_slice()))
            .collect();
        let want: Vec<(&str, &[usize])> = vec![
            ("conv1", &[64, 32, 32]),
            ("bn1", &[64, 32, 32]),
            ("relu", &[64, 32, 32]),
            ("maxpool", &[64, 16, 16]),
            ("layer1.0", &[64, 16, 16]),
            ("layer1.1", &[64, 16, 16]),
            ("layer2.0", &[128, 8, 8]),
            ("layer2.1", &[128, 8, 8]),
            ("layer3.0", &[256, 4, 4]),
            ("layer3.1", &[256, 4, 4]),
            ("layer4.0", &[512, 2, 2]),
            ("layer4.1", &[512, 2, 2]),
            ("avgpool", &[512]),
            ("fc", &[136]),
        ];
        assert_eq!(got, want);
        assert_eq!(
            rows.iter().map(|r| r.params).sum::<usize>(),
            net.num_params()
        );
        // Per block: layer1.0 = 2 convs 64·64·9 + 2 BN·128 = 73,984; layer2.0 adds the
        // 1×1 downsample 128·64 + BN 256.
        assert_eq!(rows[4].params, 73_984);
        assert_eq!(
            rows[6].params,
            128 * 64 * 9 + 128 * 128 * 9 + 2 * 256 + 128 * 64 + 256
        );
        assert_eq!(ResNetConfig::feature_hw((64, 64)), Some((2, 2)));
    }

    #[test]
    fn shape_arithmetic_at_224_and_odd_sizes() {
        assert_eq!(ResNetConfig::feature_hw((224, 224)), Some((7, 7)));
        assert_eq!(ResNetConfig::feature_hw((0, 5)), None);
        // The arithmetic agrees with a real (eval) forward at odd sizes.
        let (_, net) = build(&ResNetConfig::resnet18(1, 3, (45, 37)));
        let rows = net.summary().unwrap();
        assert_eq!(rows[11].output_shape, vec![512, 2, 2]);
        assert_eq!(ResNetConfig::feature_hw((45, 37)), Some((2, 2)));
        assert_eq!(rows[3].output_shape, vec![64, 12, 10]);
    }

    #[test]
    fn backward_reaches_the_stem_with_finite_gradients() {
        let (vm, net) = build(&small(4));
        let x = Tensor::randn(0f32, 1.0, (2, 1, 64, 64), &Device::Cpu).unwrap();
        let y = Tensor::randn(0f32, 1.0, (2, 4), &Device::Cpu).unwrap();
        let loss = candle_nn::loss::mse(&net.forward_t(&x, true).unwrap(), &y).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads
            .get(net.conv1_weights())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g.len(), 64 * 49);
        assert!(g.iter().all(|v| v.is_finite()));
        assert!(g.iter().any(|&v| v != 0.0));
        // Running statistics take no gradient, so optimisers skip them.
        let data = vm.data().lock().unwrap();
        assert!(grads.get(data["bn1.running_mean"].as_tensor()).is_none());
        assert!(grads.get(data["bn1.weight"].as_tensor()).is_some());
    }

    #[test]
    fn train_mode_updates_running_stats_and_eval_does_not() {
        let (vm, net) = build(&small(4));
        let x = (Tensor::randn(0f32, 1.0, (2, 1, 64, 64), &Device::Cpu).unwrap() + 3.0).unwrap();
        net.forward_t(&x, false).unwrap();
        assert_eq!(stat(&vm, "bn1.running_mean"), vec![0.0; 64]);
        assert_eq!(stat(&vm, "layer4.1.bn2.running_var"), vec![1.0; 512]);
        net.forward_t(&x, true).unwrap();
        assert!(stat(&vm, "bn1.running_mean").iter().any(|&v| v != 0.0));
        assert!(
            stat(&vm, "layer4.1.bn2.running_var")
                .iter()
                .any(|&v| v != 1.0)
        );
    }

    #[test]
    fn bad_inputs_and_configs_are_errors() {
        let (_, net) = build(&ResNetConfig::resnet18(1, 2, (32, 32)));
        // 32×32 leaves layer4 at 1×1: one value per channel for a batch of one.
        let one = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert!(net.forward_t(&one, true).is_err());
        assert_eq!(net.forward_t(&one, false).unwrap().dims(), &[1, 2]);
        let rgb = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert!(
            net.forward_t(&rgb, false)
                .unwrap_err()
                .to_string()
                .contains("(batch, 1, H, W)")
        );

        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        for cfg in [
            ResNetConfig::resnet18(0, 2, (32, 32)),
            ResNetConfig::resnet34(1, 0, (32, 32)),
            ResNetConfig::resnet18(1, 2, (0, 32)),
        ] {
            assert!(
                matches!(ResNet::new(&cfg, vb.clone()), Err(ModelError::Config(_))),
                "{cfg:?}"
            );
        }
    }
}
