//! fkd-models: the Candle networks of the write-up's parts, their summaries and checkpoints.
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
//!   coordinates (integral regression).
//! - [`Summarize`] / [`format_summary`]: per-layer output shapes and parameter counts.
//! - [`save_weights`] / [`load_weights`]: atomic safetensors checkpoints, loaded back strictly;
//!   [`load_matching`]: initialisation from torchvision-named weights, with a [`LoadReport`].
//! - [`pool::max_pool2d`]: a padded max-pool whose backward is correct, which Candle 0.11's is
//!   not for kernel ≠ stride or odd input sizes.

pub mod checkpoint;
pub mod conv_regressor;
pub mod deconv;
pub mod error;
pub mod fcn;
pub mod init;
pub mod integral;
pub mod ops;
pub mod pool;
pub mod precision;
pub mod resnet;
pub mod seeded;
pub mod summary;

pub use checkpoint::{LoadReport, load_matching, load_weights, save_weights};
pub use conv_regressor::{ConvRegressor, ConvRegressorConfig};
pub use deconv::{DeconvHead, ResNetDeconv, ResNetDeconvConfig};
pub use error::{ModelError, Result};
pub use fcn::{FcnAlexNet, FcnAlexNetConfig};
pub use integral::soft_argmax;
pub use resnet::{ResNet, ResNet18, ResNet18Config, ResNetConfig, ResNetDepth, ResNetTrunk};
pub use seeded::seeded_var_builder;
pub use summary::{LayerInfo, Summarize, format_summary};
