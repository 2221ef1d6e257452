//! fkd-detect: faces in photos, with the YuNet-n detector ported to Candle.
//!
//! YuNet-n (Wu, Peng, Yu, "YuNet: A Tiny Millisecond-level Face Detector", 2023) is a 75k-
//! parameter net: a depthwise-separable backbone, a small feature pyramid, and anchor-free heads
//! at strides 8, 16 and 32 that give each cell a class score, an objectness score, a box and 5
//! facial points. [`Detector::load`] reads its published PyTorch checkpoint (`yunet_n.pth`,
//! Apache-2.0; `cargo xtask data fetch yunet` downloads it) and [`Detector::detect`] returns
//! the faces of an RGB photo as OpenCV's `FaceDetectorYN` decodes and suppresses them
//! ([`decode`]); a test holds the port to the ONNX export's outputs.
//!
//! ```
//! use candle_core::{DType, Device};
//! use fkd_detect::{Detector, YuNet};
//!
//! // A YuNet with all-zero weights scores every cell √(½·½) = 0.5: below the default
//! // threshold 0.9, so it finds no face. `Detector::load("yunet_n.pth", …)` loads real ones.
//! let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
//! let detector = Detector::new(YuNet::new(vb)?, Device::Cpu);
//! let photo = image::RgbImage::new(100, 80);
//! assert!(detector.detect(&photo)?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`net`]: [`YuNet`] layer for layer, under the checkpoint's var names.
//! - [`decode`]: candidates per cell and OpenCV's non-maximum suppression.
//! - [`detector`](mod@detector): [`Detector`] and its [`DetectorConfig`].

pub mod decode;
pub mod detector;
pub mod error;
pub mod net;

pub use decode::Detection;
pub use detector::{Detector, DetectorConfig, bgr_input};
pub use error::{DetectError, Result};
pub use net::{LevelOutput, STRIDES, YuNet};
