//! Part 4's write-up net: a fully convolutional AlexNet. torchvision's AlexNet `features` (five
//! convs, three 3×3/2 max-pools), its two fully connected layers turned into 1×1 convolutions,
//! a 1×1 score conv to one channel per point, and transposed convolutions that upsample the
//! score maps; no fully connected layer, so it takes any input size.
//!
//! features: conv 11×11/4 pad 2 (64) → ReLU → pool → conv 5×5 pad 2 (192) → ReLU → pool →
//! conv 3×3 (384) → ReLU → conv 3×3 (256) → ReLU → conv 3×3 (256) → ReLU → pool;
//! then fc6 1×1 (`fc_channels`) → ReLU → fc7 1×1 (`fc_channels`) → ReLU → score 1×1 (points) →
//! [ConvTranspose 4×4/2 pad 1, points → points] × `upsamplings` with ReLU between them.
//! At the write-up's 240×180 input the features are 6×4 and three upsamplings give 48×32 maps.
//!
//! Var names: `features.{0,3,6,8,10}` as torchvision's AlexNet (so its conv weights load with
//! `--init`), `fc6`, `fc7`, `score`, `upsample.{i}.delta`. Convs use PyTorch's default
//! initialisation. Each upsampling kernel is bilinear interpolation of each map plus a learned
//! `delta` that starts at 0 (FCN initialises its upsampling to bilinear and learns from there;
//! writing it as a fixed part and a learned part keeps that start with any var initialiser).
//! Convs, pools and upsamplings run on fkd's fused CPU ops ([`fkd_ops`]); the score conv
//! used to be Candle's own `Conv2d::forward`, whose backward is a single-threaded loop.

use candle_core::{ModuleT, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::init::conv2d_torch;
use crate::summary::{LayerInfo, Summarize, Trace, conv_params, traced_summary};
use fkd_ops::{conv_transpose2d, conv2d_layer, conv2d_relu_layer, max_pool2d};

/// Configuration of an [`FcnAlexNet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FcnAlexNetConfig {
    /// Input channels (1 for grey faces).
    pub in_channels: usize,
    /// Heatmaps (points) out.
    pub points: usize,
    /// Nominal input (height, width), for the summary.
    pub input: (usize, usize),
    /// Channels of fc6 and fc7 as 1×1 convs (AlexNet's 4096 is far more than 58 maps need).
    pub fc_channels: usize,
    /// Number of 2× transposed convs after the score layer.
    pub upsamplings: usize,
}

impl FcnAlexNetConfig {
    /// The write-up's net for IMM: 1 channel, 240×180 input, 1024-channel fc layers, three
    /// upsamplings.
    pub fn imm(points: usize) -> Self {
        Self {
            in_channels: 1,
            points,
            input: (180, 240),
            fc_channels: 1024,
            upsamplings: 3,
        }
    }

    /// The heatmaps' (height, width) for an input of `input`, or `None` when the input is too
    /// small for AlexNet's strides: arithmetic on the config, no net needed.
    pub fn map_hw(&self, input: (usize, usize)) -> Option<(usize, usize)> {
        let (mut h, mut w) = input;
        for (k, stride, padding, _, pool) in FEATURES {
            h = (h + 2 * padding).checked_sub(k)? / stride + 1;
            w = (w + 2 * padding).checked_sub(k)? / stride + 1;
            if pool {
                h = h.checked_sub(3)? / 2 + 1;
                w = w.checked_sub(3)? / 2 + 1;
            }
        }
        let k = 1usize.checked_shl(self.upsamplings as u32)?;
        Some((h * k, w * k))
    }
}

/// (kernel, stride, padding, out channels, pool after) of AlexNet's five feature convs.
const FEATURES: [(usize, usize, usize, usize, bool); 5] = [
    (11, 4, 2, 64, true),
    (5, 1, 2, 192, true),
    (3, 1, 1, 384, false),
    (3, 1, 1, 256, false),
    (3, 1, 1, 256, true),
];

/// torchvision's index of each feature conv in `features`.
const FEATURE_INDEX: [usize; 5] = [0, 3, 6, 8, 10];

/// The fully convolutional AlexNet; see the module docs.
#[derive(Clone, Debug)]
pub struct FcnAlexNet {
    cfg: FcnAlexNetConfig,
    features: Vec<(Conv2d, bool)>,
    fc6: Conv2d,
    fc7: Conv2d,
    score: Conv2d,
    /// The bilinear kernel every upsampling starts from, `(points, points, 4, 4)`.
    bilinear: Tensor,
    /// Each upsampling's learned change to it.
    upsample: Vec<Tensor>,
}

/// A `k×k` bilinear upsampling kernel for a stride `k/2` transposed conv, one map to itself.
fn bilinear(points: usize, k: usize) -> Vec<f32> {
    let f = k.div_ceil(2) as f32;
    let c = if k % 2 == 1 { f - 1.0 } else { f - 0.5 };
    let mut w = vec![0.0f32; points * points * k * k];
    for p in 0..points {
        for y in 0..k {
            for x in 0..k {
                let v = (1.0 - (x as f32 - c).abs() / f) * (1.0 - (y as f32 - c).abs() / f);
                w[((p * points + p) * k + y) * k + x] = v;
            }
        }
    }
    w
}

impl FcnAlexNet {
    /// Builds the net on `vb`; errors on zero points, channels or upsamplings.
    pub fn new(cfg: &FcnAlexNetConfig, vb: VarBuilder<'_>) -> Result<Self> {
        if cfg.points == 0 || cfg.in_channels == 0 || cfg.fc_channels == 0 || cfg.upsamplings == 0 {
            return Err(ModelError::Config(format!(
                "an FCN-AlexNet needs points, channels and upsamplings ≥ 1, got {cfg:?}"
            )));
        }
        let vf = vb.pp("features");
        let mut features = Vec::with_capacity(FEATURES.len());
        let mut c_in = cfg.in_channels;
        for ((k, stride, padding, c_out, pool), idx) in FEATURES.into_iter().zip(FEATURE_INDEX) {
            let conv_cfg = Conv2dConfig {
                padding,
                stride,
                ..Default::default()
            };
            features.push((
                conv2d_torch(c_in, c_out, k, conv_cfg, vf.pp(idx.to_string()))?,
                pool,
            ));
            c_in = c_out;
        }
        let one = Conv2dConfig::default();
        let fc6 = conv2d_torch(c_in, cfg.fc_channels, 1, one, vb.pp("fc6"))?;
        let fc7 = conv2d_torch(cfg.fc_channels, cfg.fc_channels, 1, one, vb.pp("fc7"))?;
        let score = conv2d_torch(cfg.fc_channels, cfg.points, 1, one, vb.pp("score"))?;
        let bilinear = Tensor::from_vec(
            bilinear(cfg.points, 4),
            (cfg.points, cfg.points, 4, 4),
            vb.device(),
        )?
        .to_dtype(vb.dtype())?;
        let upsample = (0..cfg.upsamplings)
            .map(|i| {
                vb.pp("upsample").pp(i.to_string()).get_with_hints(
                    (cfg.points, cfg.points, 4, 4),
                    "delta",
                    Init::Const(0.0),
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            features,
            fc6,
            fc7,
            score,
            bilinear,
            upsample,
        })
    }

    /// The configuration this net was built from.
    pub fn config(&self) -> &FcnAlexNetConfig {
        &self.cfg
    }

    /// The first conv's weights, (64, in_channels, 11, 11).
    pub fn conv1_weights(&self) -> &Tensor {
        self.features[0].0.weight()
    }

    /// The heatmaps' (height, width) for an input of `input` ([`FcnAlexNetConfig::map_hw`]).
    pub fn map_hw(&self, input: (usize, usize)) -> Option<(usize, usize)> {
        self.cfg.map_hw(input)
    }

    fn run(&self, x: &Tensor, _train: bool, mut trace: Trace<'_>) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for ((conv, pool), idx) in self.features.iter().zip(FEATURE_INDEX) {
            x = conv2d_relu_layer(conv, &x)?;
            if *pool {
                x = max_pool2d(&x, 3, 2, 0)?;
            }
            trace.record(|| format!("features.{idx}"), &x, conv_params(conv));
        }
        let x = conv2d_relu_layer(&self.fc6, &x)?;
        trace.record(|| "fc6".into(), &x, conv_params(&self.fc6));
        let x = conv2d_relu_layer(&self.fc7, &x)?;
        trace.record(|| "fc7".into(), &x, conv_params(&self.fc7));
        let mut x = conv2d_layer(&self.score, &x)?;
        trace.record(|| "score".into(), &x, conv_params(&self.score));
        for (i, delta) in self.upsample.iter().enumerate() {
            if i > 0 {
                x = x.relu()?;
            }
            let kernel = (&self.bilinear + delta)?;
            x = conv_transpose2d(&x, &kernel, 2, 1)?;
            trace.record(|| format!("upsample.{i}"), &x, delta.elem_count());
        }
        Ok(x)
    }
}

impl ModuleT for FcnAlexNet {
    /// (B, in_channels, H, W) → (B, points, h, w) heatmaps ([`FcnAlexNet::map_hw`]). No
    /// dropout or batch norm: training and inference compute the same function.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, train, Trace(None))
    }
}

impl Summarize for FcnAlexNet {
    fn summary(&self) -> Result<Vec<LayerInfo>> {
        let (h, w) = self.cfg.input;
        traced_summary(
            self.conv1_weights(),
            (self.cfg.in_channels, h, w),
            |x, trace| self.run(x, false, trace),
        )
    }

    fn num_params(&self) -> usize {
        self.features
            .iter()
            .map(|(c, _)| conv_params(c))
            .sum::<usize>()
            + conv_params(&self.fc6)
            + conv_params(&self.fc7)
            + conv_params(&self.score)
            + self.upsample.iter().map(Tensor::elem_count).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn build(cfg: &FcnAlexNetConfig) -> (VarMap, FcnAlexNet) {
        let vm = VarMap::new();
        let net = FcnAlexNet::new(
            cfg,
            crate::seeded_var_builder(&vm, 7, DType::F32, &Device::Cpu),
        )
        .unwrap();
        (vm, net)
    }

    /// The write-up's 240×180 input gives 6×4 features and 48×32 maps; names follow
    /// torchvision's AlexNet; the parameter count adds up.
    #[test]
    fn shapes_names_and_parameters() {
        let cfg = FcnAlexNetConfig::imm(58);
        let (vm, net) = build(&cfg);
        assert_eq!(net.map_hw((180, 240)), Some((32, 48)));
        let x = Tensor::zeros((1, 1, 180, 240), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward_t(&x, false).unwrap().dims(), &[1, 58, 32, 48]);
        let features = (11 * 11 + 1) * 64
            + (64 * 25 + 1) * 192
            + (192 * 9 + 1) * 384
            + (384 * 9 + 1) * 256
            + (256 * 9 + 1) * 256;
        let head = (256 + 1) * 1024 + (1024 + 1) * 1024 + (1024 + 1) * 58 + 3 * 58 * 58 * 16;
        assert_eq!(net.num_params(), features + head);
        let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        for name in [
            "features.0.weight",
            "features.10.bias",
            "fc7.weight",
            "score.bias",
            "upsample.2.delta",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing");
        }
        assert_eq!(net.summary().unwrap().last().unwrap().name, "upsample.2");
        assert_eq!(net.map_hw((20, 20)), None);
    }

    /// An untrained upsampling is bilinear interpolation: a constant score map stays constant
    /// inside (edges see the zero padding).
    #[test]
    fn upsampling_starts_bilinear() {
        let k = Tensor::from_vec(bilinear(1, 4), (1, 1, 4, 4), &Device::Cpu).unwrap();
        let x = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let y = x.conv_transpose2d(&k, 1, 0, 2, 1).unwrap();
        assert_eq!(y.dims(), &[1, 1, 8, 8]);
        let v = y
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for row in &v[1..7] {
            for &a in &row[1..7] {
                assert!((a - 1.0).abs() < 1e-6, "{v:?}");
            }
        }
    }

    /// Gradients reach the first conv and the upsampling deltas.
    #[test]
    fn backward_reaches_every_layer() {
        let cfg = FcnAlexNetConfig {
            input: (96, 96),
            fc_channels: 32,
            ..FcnAlexNetConfig::imm(3)
        };
        let (vm, net) = build(&cfg);
        // A fixed, varied input (no unseeded RNG: the test must not depend on luck).
        let x: Vec<f32> = (0..18432)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0) - 0.5)
            .collect();
        let x = Tensor::from_vec(x, (2, 1, 96, 96), &Device::Cpu).unwrap();
        let y = net.forward_t(&x, true).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = vm.data().lock().unwrap();
        for name in [
            "features.0.weight",
            "fc6.weight",
            "score.weight",
            "upsample.0.delta",
        ] {
            let g = grads.get(data[name].as_tensor()).unwrap();
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(g.iter().all(|v| v.is_finite()), "{name}");
            assert!(g.iter().any(|&v| v != 0.0), "{name} got no gradient");
        }
    }
}
