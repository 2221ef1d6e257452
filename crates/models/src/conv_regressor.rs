//! The write-up's plain CNN regressors (Parts 1 and 2): a stack of
//! conv(k×k, padding k/2) → ReLU → [2×2 max-pool] layers, then Linear(fc) → ReLU → Linear(out).
//!
//! [`ConvRegressorConfig::nose`] ("NoseNet", Part 1) and [`ConvRegressorConfig::face`]
//! ("FaceNet", Part 2) are layer for layer the `Net` of the PyTorch peer
//! (`shared/bench/torch_imm.py`, `DEFAULTS[1]` and `DEFAULTS[2]`), with the same parameter
//! counts and PyTorch's default initialisation, so accuracy and speed compare like for like.
//! Var names: `conv{i}.weight/bias` (i from 1), `fc1.weight/bias`, `fc2.weight/bias`.
//! Each conv → ReLU → pool runs as one [`fkd_ops::conv2d_relu_pool`] node (on the CPU the
//! unpooled map is never stored), equal to fkd's own `max_pool2d`, whose backward is correct
//! where Candle 0.11's is not (it scales gradients by 1/4 and misroutes them on odd sizes,
//! which NoseNet and FaceNet have).

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::init::{conv2d_torch, linear_torch};
use crate::summary::{LayerInfo, Summarize, Trace, conv_params};
use fkd_ops::window_out_len;
use fkd_ops::{conv2d_relu_layer, conv2d_relu_pool_layer};

/// Architecture of a [`ConvRegressor`]. The three per-layer lists must have the same, non-zero,
/// length. Input is one grey channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvRegressorConfig {
    /// Input image size as (height, width).
    pub input: (usize, usize),
    /// Output channels of each conv layer.
    pub chans: Vec<usize>,
    /// Square kernel size of each conv layer (padding is `k / 2`, so odd sizes keep the size).
    pub kernels: Vec<usize>,
    /// Whether a 2×2, stride-2 max-pool follows each conv layer.
    pub pools: Vec<bool>,
    /// Width of the hidden fully connected layer.
    pub fc: usize,
    /// Number of outputs (2 per keypoint: x, y).
    pub out: usize,
}

impl ConvRegressorConfig {
    /// Part 1's "NoseNet": 1×60×80 in, 4 convs (12, 24, 32, 32 channels; 7, 5, 3, 3 kernels;
    /// pools after the first three), FC 256, 2 outputs (the nose tip).
    pub fn nose() -> Self {
        Self {
            input: (60, 80),
            chans: vec![12, 24, 32, 32],
            kernels: vec![7, 5, 3, 3],
            pools: vec![true, true, true, false],
            fc: 256,
            out: 2,
        }
    }

    /// Part 2's "FaceNet": 1×120×160 in, 6 convs (12, 16, 24, 24, 32, 32 channels; 7, 5, 5, 3,
    /// 3, 3 kernels; pools after the first five), FC 256, 116 outputs (IMM's 58 points).
    pub fn face() -> Self {
        Self {
            input: (120, 160),
            chans: vec![12, 16, 24, 24, 32, 32],
            kernels: vec![7, 5, 5, 3, 3, 3],
            pools: vec![true, true, true, true, true, false],
            fc: 256,
            out: 2 * fkd_core::Layout::IMM58.n_points,
        }
    }

    /// The (channels, height, width) after each conv layer (and its pool), checking that the
    /// configuration can be built: equal non-zero list lengths, non-zero sizes, and feature maps
    /// that do not shrink to nothing.
    pub fn feature_shapes(&self) -> Result<Vec<(usize, usize, usize)>> {
        let n = self.chans.len();
        if n == 0 {
            return Err(ModelError::Config(
                "a conv regressor needs at least one conv layer".into(),
            ));
        }
        if self.kernels.len() != n || self.pools.len() != n {
            return Err(ModelError::Config(format!(
                "chans, kernels and pools must have the same length, got {}, {} and {}",
                n,
                self.kernels.len(),
                self.pools.len()
            )));
        }
        if self.fc == 0 || self.out == 0 {
            return Err(ModelError::Config(format!(
                "fc and out must be non-zero, got fc {} and out {}",
                self.fc, self.out
            )));
        }
        let (mut h, mut w) = self.input;
        if h == 0 || w == 0 {
            return Err(ModelError::Config(format!("input size {h}×{w} is empty")));
        }
        let mut shapes = Vec::with_capacity(n);
        for (i, ((&c, &k), &pool)) in self
            .chans
            .iter()
            .zip(&self.kernels)
            .zip(&self.pools)
            .enumerate()
        {
            if c == 0 || k == 0 {
                return Err(ModelError::Config(format!(
                    "conv{}: channels and kernel size must be non-zero, got {c} and {k}",
                    i + 1
                )));
            }
            let shrunk = |len: usize| {
                window_out_len(len, k, 1, k / 2).and_then(|l| {
                    if pool {
                        window_out_len(l, 2, 2, 0)
                    } else {
                        Some(l)
                    }
                })
            };
            match (shrunk(h), shrunk(w)) {
                (Some(nh), Some(nw)) => (h, w) = (nh, nw),
                _ => {
                    return Err(ModelError::Config(format!(
                        "conv{}: a {h}×{w} feature map is too small for a {k}×{k} conv{}",
                        i + 1,
                        if pool { " and a 2×2 pool" } else { "" }
                    )));
                }
            }
            shapes.push((c, h, w));
        }
        Ok(shapes)
    }

    /// Number of features entering `fc1` (channels × height × width after the conv stack).
    pub fn flat_features(&self) -> Result<usize> {
        let shapes = self.feature_shapes()?;
        Ok(shapes.last().map_or(0, |&(c, h, w)| c * h * w))
    }
}

/// A configurable CNN keypoint regressor (NoseNet, FaceNet); see the module docs.
#[derive(Clone, Debug)]
pub struct ConvRegressor {
    cfg: ConvRegressorConfig,
    convs: Vec<Conv2d>,
    fc1: Linear,
    fc2: Linear,
}

fn linear_params(lin: &Linear) -> usize {
    lin.weight().elem_count() + lin.bias().map_or(0, Tensor::elem_count)
}

impl ConvRegressor {
    /// Builds the network, creating (or, from a loaded `VarBuilder`, reading) its vars with
    /// PyTorch's default initialisation. Errors on an invalid `cfg` or mis-shaped vars.
    pub fn new(cfg: &ConvRegressorConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let flat = cfg.flat_features()?;
        let mut convs = Vec::with_capacity(cfg.chans.len());
        let mut c_in = 1;
        for (i, (&c, &k)) in cfg.chans.iter().zip(&cfg.kernels).enumerate() {
            let conv_cfg = Conv2dConfig {
                padding: k / 2,
                ..Default::default()
            };
            convs.push(conv2d_torch(
                c_in,
                c,
                k,
                conv_cfg,
                vb.pp(format!("conv{}", i + 1)),
            )?);
            c_in = c;
        }
        let fc1 = linear_torch(flat, cfg.fc, vb.pp("fc1"))?;
        let fc2 = linear_torch(cfg.fc, cfg.out, vb.pp("fc2"))?;
        Ok(Self {
            cfg: cfg.clone(),
            convs,
            fc1,
            fc2,
        })
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &ConvRegressorConfig {
        &self.cfg
    }

    /// The first conv layer's weights, `(chans[0], 1, k, k)`: the learned filters the write-up
    /// visualises.
    pub fn conv1_weights(&self) -> &Tensor {
        // `feature_shapes` refuses configs without conv layers, so convs[0] exists.
        self.convs[0].weight()
    }

    fn run(&self, x: &Tensor, mut trace: Trace<'_>) -> candle_core::Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != 1 || (h, w) != self.cfg.input {
            candle_core::bail!(
                "conv regressor expects (batch, 1, {}, {}) input, got {:?}",
                self.cfg.input.0,
                self.cfg.input.1,
                x.dims()
            );
        }
        let mut x = x.clone();
        for (i, (conv, &pool)) in self.convs.iter().zip(&self.cfg.pools).enumerate() {
            let n = i + 1;
            // One fused node (conv, ReLU and pool); the summary still lists them as layers.
            if pool {
                let (b, _, h, w) = x.dims4()?;
                x = conv2d_relu_pool_layer(conv, &x)?;
                let (k, o) = (self.cfg.kernels[i], x.dim(1)?);
                let same = [b, o, h + 2 * (k / 2) + 1 - k, w + 2 * (k / 2) + 1 - k];
                trace.record_dims(|| format!("conv{n}"), &same, conv_params(conv));
                trace.record_dims(|| format!("relu{n}"), &same, 0);
                trace.record(|| format!("pool{n}"), &x, 0);
            } else {
                x = conv2d_relu_layer(conv, &x)?;
                trace.record(|| format!("conv{n}"), &x, conv_params(conv));
                trace.record(|| format!("relu{n}"), &x, 0);
            }
        }
        // (B, C, H, W) flattened in C, H, W order, as torch's nn.Flatten does.
        let x = x.flatten_from(1)?;
        trace.record(|| "flatten".into(), &x, 0);
        let x = self.fc1.forward(&x)?;
        trace.record(|| "fc1".into(), &x, linear_params(&self.fc1));
        let x = x.relu()?;
        trace.record(|| "relu_fc1".into(), &x, 0);
        let x = self.fc2.forward(&x)?;
        trace.record(|| "fc2".into(), &x, linear_params(&self.fc2));
        Ok(x)
    }
}

impl Module for ConvRegressor {
    /// (B, 1, H, W) with (H, W) = `config().input` → (B, out).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, Trace(None))
    }
}

impl Summarize for ConvRegressor {
    fn summary(&self) -> Result<Vec<LayerInfo>> {
        let w = self.conv1_weights();
        let (h, wd) = self.cfg.input;
        let x = Tensor::zeros((1, 1, h, wd), w.dtype(), w.device())?;
        let mut rows = Vec::new();
        self.run(&x, Trace(Some(&mut rows)))?;
        Ok(rows)
    }

    fn num_params(&self) -> usize {
        self.convs.iter().map(conv_params).sum::<usize>()
            + linear_params(&self.fc1)
            + linear_params(&self.fc2)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};

    /// The net with seeded initial weights, so that a test's outcome does not depend on
    /// Candle's unseeded CPU generator (`adamw_steps_reduce_the_mse` failed about once in many
    /// runs on an unlucky draw).
    fn build(cfg: &ConvRegressorConfig) -> (VarMap, ConvRegressor) {
        let vm = VarMap::new();
        let vb = crate::seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu);
        let net = ConvRegressor::new(cfg, vb).unwrap();
        (vm, net)
    }

    /// A tiny net that trains in milliseconds.
    pub(crate) fn tiny() -> ConvRegressorConfig {
        ConvRegressorConfig {
            input: (12, 16),
            chans: vec![4, 8],
            kernels: vec![3, 3],
            pools: vec![true, false],
            fc: 16,
            out: 4,
        }
    }

    #[test]
    fn nose_net_matches_the_torch_peer() {
        // Torch: conv c_out·c_in·k² + c_out each; 60×80 → pool 30×40 → 15×20 → 7×10 (floor).
        //   conv1 12·1·49+12 = 600; conv2 24·12·25+24 = 7,224; conv3 32·24·9+32 = 6,944;
        //   conv4 32·32·9+32 = 9,248; fc1 (32·7·10 = 2,240)·256+256 = 573,696; fc2 256·2+2 = 514.
        //   Total 598,226.
        let cfg = ConvRegressorConfig::nose();
        assert_eq!(cfg.flat_features().unwrap(), 2240);
        let (vm, net) = build(&cfg);
        assert_eq!(net.num_params(), 598_226);
        let total: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(total, 598_226);
        let x = Tensor::zeros((2, 1, 60, 80), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x).unwrap().dims(), &[2, 2]);
        assert_eq!(net.conv1_weights().dims(), &[12, 1, 7, 7]);
    }

    #[test]
    fn face_net_matches_the_torch_peer() {
        // 120×160 → 60×80 → 30×40 → 15×20 → 7×10 → 3×5 (five pools, floor).
        //   conv1 600; conv2 16·12·25+16 = 4,816; conv3 24·16·25+24 = 9,624;
        //   conv4 24·24·9+24 = 5,208; conv5 32·24·9+32 = 6,944; conv6 32·32·9+32 = 9,248;
        //   fc1 (32·3·5 = 480)·256+256 = 123,136; fc2 256·116+116 = 29,812. Total 189,388.
        let cfg = ConvRegressorConfig::face();
        assert_eq!(cfg.out, 116);
        assert_eq!(cfg.flat_features().unwrap(), 480);
        let (_, net) = build(&cfg);
        assert_eq!(net.num_params(), 189_388);
        let x = Tensor::zeros((2, 1, 120, 160), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x).unwrap().dims(), &[2, 116]);
    }

    #[test]
    fn var_names_are_torch_like() {
        let (vm, _) = build(&tiny());
        let mut names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "conv1.bias",
                "conv1.weight",
                "conv2.bias",
                "conv2.weight",
                "fc1.bias",
                "fc1.weight",
                "fc2.bias",
                "fc2.weight"
            ]
        );
    }

    #[test]
    fn summary_lists_every_layer_with_shapes() {
        let (_, net) = build(&ConvRegressorConfig::nose());
        let rows = net.summary().unwrap();
        let got: Vec<(&str, &[usize], usize)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.output_shape.as_slice(), r.params))
            .collect();
        let want: Vec<(&str, &[usize], usize)> = vec![
            ("conv1", &[12, 60, 80], 600),
            ("relu1", &[12, 60, 80], 0),
            ("pool1", &[12, 30, 40], 0),
            ("conv2", &[24, 30, 40], 7_224),
            ("relu2", &[24, 30, 40], 0),
            ("pool2", &[24, 15, 20], 0),
            ("conv3", &[32, 15, 20], 6_944),
            ("relu3", &[32, 15, 20], 0),
            ("pool3", &[32, 7, 10], 0),
            ("conv4", &[32, 7, 10], 9_248),
            ("relu4", &[32, 7, 10], 0),
            ("flatten", &[2240], 0),
            ("fc1", &[256], 573_696),
            ("relu_fc1", &[256], 0),
            ("fc2", &[2], 514),
        ];
        assert_eq!(got, want);
        assert!(crate::format_summary(&rows).ends_with("Total params: 598,226\n"));
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let mut empty = tiny();
        empty.chans.clear();
        empty.kernels.clear();
        empty.pools.clear();
        let mut ragged = tiny();
        ragged.kernels.pop();
        let mut too_small = tiny();
        too_small.input = (1, 16);
        let mut zero_fc = tiny();
        zero_fc.fc = 0;
        let mut zero_kernel = tiny();
        zero_kernel.kernels[1] = 0;
        for cfg in [empty, ragged, too_small, zero_fc, zero_kernel] {
            let err = ConvRegressor::new(&cfg, vb.clone()).unwrap_err();
            assert!(matches!(err, ModelError::Config(_)), "{cfg:?}: {err}");
        }
        assert!(vm.all_vars().is_empty());
    }

    #[test]
    fn wrong_input_size_is_an_error_not_a_panic() {
        let (_, net) = build(&tiny());
        let x = Tensor::zeros((2, 1, 12, 15), DType::F32, &Device::Cpu).unwrap();
        assert!(
            net.forward(&x)
                .unwrap_err()
                .to_string()
                .contains("(batch, 1, 12, 16)")
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        let cfg = ConvRegressorConfig::face();
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            serde_json::from_str::<ConvRegressorConfig>(&json).unwrap(),
            cfg
        );
    }

    #[test]
    fn adamw_steps_reduce_the_mse() {
        // An odd input height (13) makes the pool drop a row, the case Candle's own pool
        // backward gets wrong.
        let mut cfg = tiny();
        cfg.input = (13, 16);
        let (vm, net) = build(&cfg);
        let dev = Device::Cpu;
        let x = (Tensor::arange(0f32, (2 * 13 * 16) as f32, &dev)
            .unwrap()
            .reshape((2, 1, 13, 16))
            .unwrap()
            * 0.05)
            .unwrap()
            .sin()
            .unwrap();
        let y = Tensor::new(&[[0.2f32, 0.4, 0.6, 0.8], [0.8, 0.6, 0.4, 0.2]], &dev).unwrap();
        let mut opt = AdamW::new(
            vm.all_vars(),
            ParamsAdamW {
                lr: 1e-2,
                ..Default::default()
            },
        )
        .unwrap();
        let mse =
            |net: &ConvRegressor| candle_nn::loss::mse(&net.forward(&x).unwrap(), &y).unwrap();
        let first = mse(&net).to_scalar::<f32>().unwrap();
        for _ in 0..30 {
            opt.backward_step(&mse(&net)).unwrap();
        }
        let last = mse(&net).to_scalar::<f32>().unwrap();
        assert!(last.is_finite() && last < 0.2 * first, "{first} → {last}");
    }
}
