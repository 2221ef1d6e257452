//! The YuNet-n network (Wu, Peng, Yu 2023; libfacedetection.train's `yunet_n.py`), layer for
//! layer, with the checkpoint's var names: a depthwise-separable backbone whose stride-8, 16 and
//! 32 features feed a small top-down pyramid (nearest ×2 upsampling and additions), and per-level
//! heads for a class score, an objectness score, a box and 5 points per cell.
//!
//! Every block is a [`DpUnit`]: a 1×1 conv, a depthwise 3×3 conv (both with biases), then,
//! except in the heads' last layers, batch norm (running statistics, ε 1e-5) and a ReLU. The
//! norms are folded into the convs before them when the net is built, and the convs run on
//! fkd-ops' CPU kernels (inference only).

use candle_core::{Module, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, VarBuilder};

/// Strides of the three output levels.
pub const STRIDES: [usize; 3] = [8, 16, 32];

fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder<'_>,
) -> Result<Conv2d> {
    candle_nn::conv2d(cin, cout, k, cfg, vb)
}

fn norm(c: usize, vb: VarBuilder<'_>) -> Result<BatchNorm> {
    let cfg = BatchNormConfig {
        eps: 1e-5,
        ..Default::default()
    };
    candle_nn::batch_norm(c, cfg, vb)
}

/// A 1×1 conv then a depthwise 3×3 conv (pad 1), then batch norm and ReLU when the unit has
/// them (`ConvDPUnit`). The norm (running statistics, ε 1e-5) is folded into the depthwise
/// conv when the net is built, as the ONNX export does: `w·γ/σ`, `(b − μ)·γ/σ + β`.
#[derive(Clone, Debug)]
pub struct DpUnit {
    pointwise: Conv2d,
    dw_weight: Tensor,
    dw_bias: Tensor,
    relu: bool,
}

impl DpUnit {
    /// `cin` → `cout` channels; `bn_relu` adds the batch norm (var `bn`) and the ReLU.
    pub fn new(cin: usize, cout: usize, bn_relu: bool, vb: VarBuilder<'_>) -> Result<Self> {
        let pointwise = conv(cin, cout, 1, Conv2dConfig::default(), vb.pp("conv1"))?;
        let dw = Conv2dConfig {
            padding: 1,
            groups: cout,
            ..Default::default()
        };
        let depthwise = conv(cout, cout, 3, dw, vb.pp("conv2"))?;
        let (w, b) = (depthwise.weight().clone(), bias_of(&depthwise)?);
        let (dw_weight, dw_bias) = if bn_relu {
            fold(&w, &b, &vb.pp("bn"), cout)?
        } else {
            (w, b)
        };
        Ok(Self {
            pointwise,
            dw_weight,
            dw_bias,
            relu: bn_relu,
        })
    }
}

/// A conv's bias (every YuNet conv has one).
fn bias_of(c: &Conv2d) -> Result<Tensor> {
    c.bias()
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg("a YuNet conv without a bias".into()))
}

/// A conv `(w, b)` with the batch norm at `vb` (`c` channels) folded in.
fn fold(w: &Tensor, b: &Tensor, vb: &VarBuilder<'_>, c: usize) -> Result<(Tensor, Tensor)> {
    let bn = norm(c, vb.clone())?;
    let (gamma, beta) = bn
        .weight_and_bias()
        .ok_or_else(|| candle_core::Error::Msg("a YuNet batch norm without γ, β".into()))?;
    let scale = (gamma / (bn.running_var() + 1e-5)?.sqrt()?)?;
    let shape: Vec<usize> = std::iter::once(c)
        .chain(std::iter::repeat_n(1, w.rank() - 1))
        .collect();
    let w = w.broadcast_mul(&scale.reshape(shape)?)?;
    let b = ((b - bn.running_mean())? * &scale)?.add(beta)?;
    Ok((w, b))
}

impl Module for DpUnit {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = fkd_ops::conv2d(x, self.pointwise.weight(), self.pointwise.bias(), 1, 0)?;
        fkd_ops::depthwise_conv3x3(&y, &self.dw_weight, &self.dw_bias, self.relu)
    }
}

/// The stem (`model0`): a 3×3 stride-2 conv with its batch norm folded in, ReLU, then a
/// [`DpUnit`].
#[derive(Clone, Debug)]
struct Stem {
    weight: Tensor,
    bias: Tensor,
    unit: DpUnit,
}

impl Module for Stem {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = fkd_ops::conv2d_relu(x, &self.weight, Some(&self.bias), 2, 1)?;
        self.unit.forward(&y)
    }
}

/// One output level's head: a shared [`DpUnit`], then the class, objectness, box and points
/// layers (no batch norm, no ReLU).
#[derive(Clone, Debug)]
struct Head {
    shared: DpUnit,
    cls: DpUnit,
    obj: DpUnit,
    bbox: DpUnit,
    kps: DpUnit,
}

/// One level's outputs, `(N, C, h, w)`: class and objectness scores (after the sigmoid),
/// box deltas `(dx, dy, log w, log h)` and 5 points `(x0, y0, …, x4, y4)`, in stride units
/// from each cell's top-left corner.
#[derive(Clone, Debug)]
pub struct LevelOutput {
    /// The level's stride (8, 16 or 32).
    pub stride: usize,
    /// `(N, 1, h, w)`, in `[0, 1]`.
    pub cls: Tensor,
    /// `(N, 1, h, w)`, in `[0, 1]`.
    pub obj: Tensor,
    /// `(N, 4, h, w)`.
    pub bbox: Tensor,
    /// `(N, 10, h, w)`.
    pub kps: Tensor,
}

/// The whole net.
#[derive(Clone, Debug)]
pub struct YuNet {
    stem: Stem,
    /// `model1` … `model5`, two units each.
    stages: Vec<[DpUnit; 2]>,
    /// `neck.lateral_convs.{0,1,2}`.
    lateral: Vec<DpUnit>,
    heads: Vec<Head>,
}

impl YuNet {
    /// The net's vars under the checkpoint's names (`backbone.model0.conv1.weight`, …).
    pub fn new(vb: VarBuilder<'_>) -> Result<Self> {
        let b = vb.pp("backbone");
        let m0 = b.pp("model0");
        let stem_conv = conv(
            3,
            16,
            3,
            Conv2dConfig {
                padding: 1,
                stride: 2,
                ..Default::default()
            },
            m0.pp("conv1"),
        )?;
        let (weight, bias) = fold(stem_conv.weight(), &bias_of(&stem_conv)?, &m0.pp("bn1"), 16)?;
        let stem = Stem {
            weight,
            bias,
            unit: DpUnit::new(16, 16, true, m0.pp("conv2"))?,
        };
        let widths = [(16, 64), (64, 64), (64, 64), (64, 64), (64, 64)];
        let stages = widths
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout))| {
                let m = b.pp(format!("model{}", i + 1));
                Ok([
                    DpUnit::new(cin, cin, true, m.pp("conv1"))?,
                    DpUnit::new(cin, cout, true, m.pp("conv2"))?,
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        let lateral = (0..3)
            .map(|l| DpUnit::new(64, 64, true, vb.pp(format!("neck.lateral_convs.{l}"))))
            .collect::<Result<Vec<_>>>()?;
        let h = vb.pp("bbox_head");
        let heads = (0..3)
            .map(|l| {
                let part = |name: &str, c: usize| {
                    DpUnit::new(64, c, false, h.pp(format!("multi_level_{name}.{l}")))
                };
                Ok(Head {
                    shared: DpUnit::new(
                        64,
                        64,
                        true,
                        h.pp(format!("multi_level_share_convs.{l}.0")),
                    )?,
                    cls: part("cls", 1)?,
                    obj: part("obj", 1)?,
                    bbox: part("bbox", 4)?,
                    kps: part("kps", 10)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            stem,
            stages,
            lateral,
            heads,
        })
    }

    /// The three levels' outputs for `x`, `(N, 3, H, W)` BGR in 0–255 with `H` and `W`
    /// multiples of 32.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<LevelOutput>> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h % 32 != 0 || w % 32 != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "YuNet takes (N, 3, H, W) with H and W multiples of 32, not {:?}",
                x.dims()
            );
        }
        // Pools after model0, 2, 3 and 4; C3, C4, C5 are model3, 4, 5's outputs before them.
        let mut y = self.stem.forward(x)?.max_pool2d(2)?;
        let mut feats = Vec::with_capacity(3);
        for (i, [a, b]) in self.stages.iter().enumerate() {
            y = b.forward(&a.forward(&y)?)?;
            let stage = i + 1;
            if stage >= 3 {
                feats.push(y.clone());
            }
            if matches!(stage, 2..=4) {
                y = y.max_pool2d(2)?;
            }
        }
        // Top-down: P5 = lat2(C5); P4 = lat1(C4 + up(P5)); P3 = lat0(C3 + up(P4)).
        let mut p = vec![Tensor::zeros(1, x.dtype(), x.device())?; 3];
        p[2] = self.lateral[2].forward(&feats[2])?;
        for l in (0..2).rev() {
            let (_, _, fh, fw) = feats[l].dims4()?;
            let up = p[l + 1].upsample_nearest2d(fh, fw)?;
            p[l] = self.lateral[l].forward(&(&feats[l] + up)?)?;
        }
        p.iter()
            .zip(&self.heads)
            .zip(STRIDES)
            .map(|((p, head), stride)| {
                let f = head.shared.forward(p)?;
                Ok(LevelOutput {
                    stride,
                    cls: candle_nn::ops::sigmoid(&head.cls.forward(&f)?)?,
                    obj: candle_nn::ops::sigmoid(&head.obj.forward(&f)?)?,
                    bbox: head.bbox.forward(&f)?,
                    kps: head.kps.forward(&f)?,
                })
            })
            .collect()
    }
}

impl LevelOutput {
    /// `t` `(N, C, h, w)` as the ONNX export lays it out, `(N, h·w, C)` (cells row-major,
    /// channels last).
    pub fn cells(t: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = t.dims4()?;
        t.permute((0, 2, 3, 1))?.reshape((n, h * w, c))
    }
}
