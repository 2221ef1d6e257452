//! fkd-models: the Candle networks of the write-up's parts, their summaries and checkpoints.
//!
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::VarMap;
//! use fkd_models::{ResNet, ResNetConfig, seeded_var_builder};
//!
//! // Part 3's net on 64-pixel grey crops: 68 points as 136 normalised coordinates, with
//! // PyTorch's initial weights drawn from seed 0.
//! let vars = VarMap::new();
//! let cfg = ResNetConfig::resnet18(1, 136, (64, 64));
//! let net = ResNet::new(&cfg, seeded_var_builder(&vars, 0, DType::F32, &Device::Cpu))?;
//! let crop = Tensor::zeros((1, 1, 64, 64), DType::F32, &Device::Cpu)?;
//! let out = net.forward_t(&crop, false)?;
//! assert_eq!(out.dims(), [1, 136]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`ConvRegressor`] with [`ConvRegressorConfig::nose`] (Part 1, "NoseNet": 1×60×80 → 2) and
//!   [`ConvRegressorConfig::face`] (Part 2, "FaceNet": 1×120×160 → 116), layer for layer the
//!   PyTorch peer's `Net`.
//! - [`ResNet`] (Part 3): torchvision's resnet18 or resnet34 ([`ResNetDepth`]) with a 1-channel
//!   stem and 136 outputs, under torchvision's var names. [`ResNet18`] and [`ResNet18Config`] are
//!   the former names, kept as aliases; [`ResNetTrunk`] is its encoder alone.
//! - [`ResNetDeconv`] (Part 4): Simple Baselines' heatmap net, a ResNet trunk and three 4×4/2
//!   transposed convs to one map per point at a quarter of the input; [`FcnAlexNet`], the
//!   write-up's fully convolutional AlexNet; [`soft_argmax`] reads either's maps as
//!   coordinates (integral regression); [`HeatmapNet`] is either body with its head (maps, or
//!   soft-argmax points).
//! - [`Summarize`] / [`format_summary`]: per-layer output shapes and parameter counts.
//! - [`save_weights`] / [`load_weights`]: atomic safetensors checkpoints, loaded back strictly;
//!   [`load_matching`]: initialisation from torchvision-named weights, with a [`LoadReport`].
//! - [`ops`]: the fast training ops of the `fkd-ops` crate (blocked and Winograd convs, the
//!   transposed conv, max-pool and batch norm as single autograd nodes; CUDA/cuDNN nodes).

pub mod checkpoint;
pub mod conv_regressor;
pub mod deconv;
pub mod error;
pub mod fcn;
pub mod heatmap_net;
pub mod init;
pub mod integral;
pub mod resnet;
pub mod seeded;
pub mod summary;

pub use checkpoint::{LoadReport, load_matching, load_weights, save_weights};
pub use conv_regressor::{ConvRegressor, ConvRegressorConfig};
pub use deconv::{DeconvHead, ResNetDeconv, ResNetDeconvConfig};
pub use error::{ModelError, Result};
pub use fcn::{FcnAlexNet, FcnAlexNetConfig};
/// fkd's training ops (the `fkd-ops` crate), under the name the nets have always used.
pub use fkd_ops as ops;
pub use fkd_ops::precision;
pub use heatmap_net::{HeatmapBody, HeatmapNet};
pub use integral::soft_argmax;
pub use resnet::{ResNet, ResNet18, ResNet18Config, ResNetConfig, ResNetDepth, ResNetTrunk};
pub use seeded::seeded_var_builder;
pub use summary::{LayerInfo, Summarize, format_summary};
