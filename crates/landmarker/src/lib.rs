//! fkd-landmarker: facial landmarks from a trained fkd checkpoint.
//!
//! A run of `cargo xtask part1` … `part4` leaves `best.safetensors` and, beside it, a
//! `model.json` ([`ModelCard`]) that says which net made it and how it reads faces.
//! [`Landmarker::load`] rebuilds that net (NoseNet and FaceNet of Parts 1–2, Part 3's
//! ResNets, Part 4's heatmap nets: [`Net`]) and [`Landmarker::predict`] turns a photo and face
//! boxes into points in the photo's pixels: each face is cropped as in training, the net runs
//! in batches, heatmaps are decoded, the flip test averages the mirror image's prediction
//! (for models trained with flips; [`Landmarker::with_flip_test`] switches it) and the points
//! are mapped back to the photo.
//!
//! ```
//! use fkd_landmarker::{Device, FaceBox, Landmarker, load_gray};
//! # use fkd_landmarker::ModelCard;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let checkpoint = dir.path().join("best.safetensors");
//! # // An untrained Part 3 net on 64-pixel crops stands in for a trained run's checkpoint.
//! # let card = ModelCard {
//! #     part: "part3".into(), arch: "resnet18".into(), input: [64, 64], points: 68,
//! #     enlarge: Some(1.25), flip_test: true, heatmap: None, select: None,
//! #     annotation_offset: None,
//! # };
//! # Landmarker::seeded(card, 0, &Device::Cpu)?.save(&checkpoint)?;
//!
//! let landmarker = Landmarker::load(&checkpoint, &Device::Cpu)?;
//! let photo = load_gray("../../fixtures/faces/face_00.png")?;
//! let faces = landmarker.predict(&photo, &[FaceBox::new(50.0, 35.0, 60.0, 60.0)])?;
//! for p in &faces[0].points {
//!     println!("{:.1} {:.1}", p.x, p.y);
//! }
//! assert_eq!(faces[0].points.len(), 68);
//! # Ok(()) }
//! ```
//!
//! On raw photos, a face detector ([`Detector`], YuNet: `cargo xtask data fetch yunet` downloads
//! its weights) finds the faces first; each detection's box is moved to where the net's crop
//! belongs ([`BoxMap`]) and the photo is read upright ([`load_photo`] applies its EXIF
//! orientation):
//!
//! ```
//! use fkd_landmarker::{Detector, Device, Landmarker, load_photo};
//! # use fkd_landmarker::ModelCard;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let card = ModelCard {
//! #     part: "part3".into(), arch: "resnet18".into(), input: [64, 64], points: 68,
//! #     enlarge: Some(1.25), flip_test: true, heatmap: None, select: None,
//! #     annotation_offset: None,
//! # };
//! # let landmarker = Landmarker::seeded(card, 0, &Device::Cpu)?;
//! // `Detector::load("DATA/models/yunet/yunet_n.pth", &Device::Cpu)?` with the published
//! // weights; an untrained stand-in here, which finds no face.
//! let yunet = fkd_detect::YuNet::new(candle_nn::VarBuilder::zeros(
//!     candle_core::DType::F32,
//!     &Device::Cpu,
//! ))?;
//! let landmarker = landmarker.with_detector(Detector::new(yunet, Device::Cpu));
//! let photo = load_photo("../../fixtures/faces/face_00_exif6.jpg")?;
//! assert_eq!((photo.rgb.width(), photo.rgb.height()), (160, 120)); // upright
//! for face in landmarker.detect_and_predict(&photo)? {
//!     println!("{:?}: {} points", face.detection.bbox, face.points.len());
//! }
//! # Ok(()) }
//! ```
//!
//! - [`card`]: the [`ModelCard`] and how outputs decode ([`Head`]).
//! - [`net`]: [`Net`], every part's network behind one type, built from a card.
//! - [`landmarker`](mod@landmarker): [`Landmarker`] (one photo, [`Landmarker::predict_batch`]
//!   for many, [`Landmarker::predict_samples`] for a data set's faces).
//! - [`eval`]: [`evaluate`] a model on labelled faces (NME, failure rate, AUC, MAE).
//! - [`kaggle`]: the course's Kaggle-style CSV of predicted coordinates.

pub mod card;
pub mod error;
pub mod eval;
pub mod kaggle;
pub mod landmarker;
pub mod net;
pub mod placement;

pub use candle_core::Device;
pub use card::{Head, HeatmapCard, MODEL_CARD, ModelCard, OffsetEstimate};
pub use error::{LandmarkerError, Result};
pub use eval::{Evaluation, evaluate, score_points, score_predictions};
pub use fkd_core::{FaceBox, Layout, PixelPoint};
pub use fkd_data::img::GrayImage;
pub use fkd_data::photo::Photo;
pub use fkd_detect::{Detection, Detector, DetectorConfig};
pub use kaggle::{kaggle_csv, write_kaggle_csv};
pub use landmarker::{BATCH, Face, Landmarker, NetInput, PhotoFace};
pub use net::{BuildOptions, DEFAULT_DECONV_CHANNELS, DEFAULT_DECONV_LAYERS, Net, heatmap_size};
pub use placement::{BoxMap, YUNET_TO_IBUG68};

/// The README's code blocks, compiled as doctests so its library example stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// Reads a photo (JPEG, PNG, PPM/PGM) upright, its EXIF orientation applied, in colour and in
/// grayscale; errors name the file.
pub fn load_photo(path: impl AsRef<std::path::Path>) -> Result<Photo> {
    Ok(fkd_data::photo::load_photo(path.as_ref())?)
}

/// Reads an image file (JPEG, PNG, PPM/PGM) as grayscale in `[-0.5, 0.5]`, the nets' input
/// range; errors name the file.
pub fn load_gray(path: impl AsRef<std::path::Path>) -> Result<GrayImage> {
    Ok(fkd_data::img::load_gray(path.as_ref())?)
}
