//! [`Detector`]: YuNet with its published weights, on a colour photo. The photo is optionally
//! scaled so its longer side is at most [`DetectorConfig::max_side`], laid out as the net was
//! trained (BGR, 0–255, no normalisation), padded with zeros on the right and bottom to a
//! multiple of 32, run, decoded and filtered by non-maximum suppression; the faces come back
//! in the photo's own pixels.

use crate::decode::{Detection, candidates, nms};
use crate::error::{DetectError, Result};
use crate::net::YuNet;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use fkd_core::{FaceBox, PixelPoint};
use image::RgbImage;
use std::collections::HashMap;
use std::path::Path;

/// How faces are found and kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectorConfig {
    /// The lowest score √(cls·obj) a face may have (OpenCV's default 0.9).
    pub score: f32,
    /// Boxes overlapping a better one by more than this IoU are dropped (OpenCV: 0.3).
    pub nms_iou: f32,
    /// At most this many candidates enter the suppression (OpenCV: 5000).
    pub top_k: usize,
    /// Photos whose longer side is larger are scaled down to it before detection (`None`:
    /// never). YuNet finds faces of about 10 to 300 pixels at the scale it sees.
    pub max_side: Option<u32>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            score: 0.9,
            nms_iou: 0.3,
            top_k: 5000,
            max_side: Some(640),
        }
    }
}

/// The YuNet face detector (see the module docs).
pub struct Detector {
    net: YuNet,
    device: Device,
    config: DetectorConfig,
}

impl Detector {
    /// Loads YuNet-n from its published PyTorch checkpoint (`yunet_n.pth`, tensors under
    /// `state_dict`), onto `device`.
    pub fn load(weights: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = weights.as_ref();
        let bad = |reason: String| DetectError::Weights {
            path: path.to_path_buf(),
            reason,
        };
        let tensors = candle_core::pickle::read_all_with_key(path, Some("state_dict"))
            .map_err(|e| bad(format!("not a YuNet PyTorch checkpoint: {e}")))?;
        let map: HashMap<String, Tensor> = tensors
            .into_iter()
            .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
            .collect();
        let vb = VarBuilder::from_tensors(map, DType::F32, device);
        let net = YuNet::new(vb).map_err(|e| bad(format!("does not hold YuNet-n: {e}")))?;
        Ok(Self::new(net, device.clone()))
    }

    /// A detector over a net already built (e.g. from other weights).
    pub fn new(net: YuNet, device: Device) -> Self {
        Self {
            net,
            device,
            config: DetectorConfig::default(),
        }
    }

    /// This detector with `config`.
    pub fn with_config(mut self, config: DetectorConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings in force.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// The net.
    pub fn net(&self) -> &YuNet {
        &self.net
    }

    /// The faces in `photo` (RGB), best first, in its pixels.
    pub fn detect(&self, photo: &RgbImage) -> Result<Vec<Detection>> {
        let (w, h) = photo.dimensions();
        if w == 0 || h == 0 {
            return Err(DetectError::Input("an empty photo".into()));
        }
        let scale = match self.config.max_side {
            Some(m) if w.max(h) > m && m > 0 => m as f32 / w.max(h) as f32,
            _ => 1.0,
        };
        let scaled;
        let seen = if scale < 1.0 {
            let (sw, sh) = (
                ((w as f32 * scale).round() as u32).max(1),
                ((h as f32 * scale).round() as u32).max(1),
            );
            scaled = image::imageops::resize(photo, sw, sh, image::imageops::FilterType::Triangle);
            &scaled
        } else {
            photo
        };
        let x = bgr_input(seen, &self.device)?;
        // On a worker of rayon's pool, so that each kernel's parallel region is a local
        // fork-join (as fkd-train's `on_pool` runs the landmark nets).
        let levels = rayon::scope(|_| self.net.forward(&x))?;
        let found = nms(
            candidates(&levels, 0, self.config.score)?,
            self.config.score,
            self.config.nms_iou,
            self.config.top_k,
        );
        // Back to the photo's pixels: the net's pixels are the scaled photo's.
        let (sx, sy) = (
            w as f32 / seen.width() as f32,
            h as f32 / seen.height() as f32,
        );
        Ok(found
            .into_iter()
            .map(|d| Detection {
                bbox: FaceBox::new(
                    d.bbox.left * sx,
                    d.bbox.top * sy,
                    d.bbox.width * sx,
                    d.bbox.height * sy,
                ),
                score: d.score,
                points: d.points.map(|p| PixelPoint::new(p.x * sx, p.y * sy)),
            })
            .collect())
    }
}

/// `photo` as the net's input: `(1, 3, H', W')` BGR in 0–255, zero-padded on the right and
/// bottom to multiples of 32.
pub fn bgr_input(photo: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    let (pw, ph) = (w.div_ceil(32) * 32, h.div_ceil(32) * 32);
    let mut data = vec![0f32; 3 * ph * pw];
    for (x, y, p) in photo.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for (c, v) in [p[2], p[1], p[0]].into_iter().enumerate() {
            data[(c * ph + y) * pw + x] = f32::from(v);
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, ph, pw), device)?)
}
