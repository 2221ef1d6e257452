//! Part 4's net as one type: a fully convolutional heatmap body ([`FcnAlexNet`] or
//! [`ResNetDeconv`]) whose output is its maps, or, for integral regression, the points a
//! [`soft_argmax`] reads from them.

use crate::summary::{LayerInfo, Summarize};
use crate::{FcnAlexNet, ResNetDeconv, Result, soft_argmax};
use candle_core::{ModuleT, Tensor};

/// Either heatmap body.
#[derive(Clone, Debug)]
pub enum HeatmapBody {
    /// The write-up's fully convolutional AlexNet.
    Fcn(FcnAlexNet),
    /// Simple Baselines: a ResNet trunk and transposed convs.
    Deconv(ResNetDeconv),
}

/// A heatmap body with its output head: the maps `(B, K, h, w)` themselves, or (integral
/// regression) their soft-argmax points `(B, 2K)` in normalised coordinates.
#[derive(Clone, Debug)]
pub struct HeatmapNet {
    body: HeatmapBody,
    integral: bool,
}

impl HeatmapNet {
    /// `body` outputting its maps (`integral = false`) or their soft-argmax points.
    pub fn new(body: HeatmapBody, integral: bool) -> Self {
        Self { body, integral }
    }

    /// Whether the output is soft-argmax points instead of maps.
    pub fn is_integral(&self) -> bool {
        self.integral
    }

    /// The body.
    pub fn body(&self) -> &HeatmapBody {
        &self.body
    }

    /// The maps `(B, K, h, w)` for `x`, whatever the head.
    pub fn maps(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match &self.body {
            HeatmapBody::Fcn(n) => n.forward_t(x, train),
            HeatmapBody::Deconv(n) => n.forward_t(x, train),
        }
    }

    /// The first conv's weights `(out, in, kh, kw)`.
    pub fn conv1_weights(&self) -> &Tensor {
        match &self.body {
            HeatmapBody::Fcn(n) => n.conv1_weights(),
            HeatmapBody::Deconv(n) => n.conv1_weights(),
        }
    }
}

impl ModuleT for HeatmapNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let maps = self.maps(x, train)?;
        if self.integral {
            soft_argmax(&maps)
        } else {
            Ok(maps)
        }
    }
}

impl Summarize for HeatmapNet {
    fn summary(&self) -> Result<Vec<LayerInfo>> {
        match &self.body {
            HeatmapBody::Fcn(n) => n.summary(),
            HeatmapBody::Deconv(n) => n.summary(),
        }
    }

    fn num_params(&self) -> usize {
        match &self.body {
            HeatmapBody::Fcn(n) => n.num_params(),
            HeatmapBody::Deconv(n) => n.num_params(),
        }
    }
}
