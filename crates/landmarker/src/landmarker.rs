//! [`Landmarker`]: a trained model ready to predict. Loaded from a checkpoint and the model
//! card beside it, it turns a grayscale photo and face boxes into points in the photo's
//! pixels: each face is cropped (or the whole photo resized) exactly as the model was
//! validated, run through the net in batches, decoded, merged with the mirror image's
//! prediction (the flip test, for models trained with flips) and mapped back to the photo.

use crate::card::ModelCard;
use crate::error::{LandmarkerError, Result};
use crate::net::Net;
use crate::placement::{BoxMap, YUNET_TO_IBUG68};
use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fkd_core::{Affine, FaceBox, ImageSize, PixelPoint};
use fkd_data::crop::Crop;
use fkd_data::dataset::Sample;
use fkd_data::img::{GrayImage, load_gray};
use fkd_data::photo::Photo;
use fkd_detect::{Detection, Detector};
use fkd_train::Prediction;
use image::RgbImage;
use rayon::prelude::*;
use std::path::Path;

/// Faces run through the net together (the batch of `part3 eval`, whose numbers this
/// reproduces exactly).
pub const BATCH: usize = 16;

/// Faces decoded and cropped at once by [`Landmarker::predict_samples`]: bounds the memory of
/// a large set while keeping every core busy.
const CHUNK: usize = 64;

/// One face's prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct Face {
    /// The face box the crop was placed around (`None` for whole-photo models).
    pub bbox: Option<FaceBox>,
    /// The points, in the layout's order (the card's `select` for single-point models), in
    /// the photo's pixels.
    pub points: Vec<PixelPoint>,
}

/// A network input made from a photo: the pixels and the map back to the photo.
#[derive(Clone, Debug)]
pub struct NetInput {
    /// The network input, one channel, values in about `[-0.5, 0.5]`.
    pub image: GrayImage,
    /// Maps the input's pixels to the photo's.
    pub to_source: Affine,
}

/// A trained model with its card, on a device (see the module docs).
pub struct Landmarker {
    card: ModelCard,
    net: Net,
    vars: VarMap,
    device: Device,
    flip_test: bool,
    /// Finds faces for [`Landmarker::detect_and_predict`].
    detector: Option<Detector>,
    /// Where a detection's face box becomes the box the net crops around.
    box_map: BoxMap,
}

/// A face found in a photo: the detector's view of it and the landmark net's points.
#[derive(Clone, Debug, PartialEq)]
pub struct PhotoFace {
    /// The detector's box, score and 5 points.
    pub detection: Detection,
    /// The box the landmark crop was placed around (the detection's, mapped by the
    /// [`BoxMap`]).
    pub crop_box: FaceBox,
    /// The landmarks, in the photo's pixels.
    pub points: Vec<PixelPoint>,
}

impl Landmarker {
    /// Loads `checkpoint` (a `.safetensors` of an fkd run) and the `model.json` beside it, and
    /// rebuilds the net it names on `device`. Every tensor of the file must match the net by
    /// name and shape. The flip test is on when the card says the model was trained for it.
    pub fn load(checkpoint: impl AsRef<Path>, device: &Device) -> Result<Landmarker> {
        let checkpoint = checkpoint.as_ref();
        let card = ModelCard::beside(checkpoint)?;
        let vm = VarMap::new();
        let net = Net::build(&card, VarBuilder::from_varmap(&vm, DType::F32, device)).map_err(
            |e| match e {
                LandmarkerError::Card { reason, .. } => LandmarkerError::Card {
                    path: checkpoint.to_path_buf(),
                    reason,
                },
                other => other,
            },
        )?;
        fkd_models::load_weights(&vm, checkpoint)?;
        Ok(Self::new(card, net, vm, device.clone()))
    }

    /// The net `card` names with PyTorch's initial weights drawn from `seed` (untrained): for
    /// tests and examples, or to save as a starting point.
    pub fn seeded(card: ModelCard, seed: u64, device: &Device) -> Result<Landmarker> {
        let vm = VarMap::new();
        let net = Net::build(
            &card,
            fkd_models::seeded_var_builder(&vm, seed, DType::F32, device),
        )?;
        Ok(Self::new(card, net, vm, device.clone()))
    }

    /// A landmarker over a net already in memory (just trained, or built by hand), the vars it
    /// was built on, and its card.
    pub fn new(card: ModelCard, net: Net, vars: VarMap, device: Device) -> Landmarker {
        let flip_test = card.flip_test && card.whole_face();
        Landmarker {
            card,
            net,
            vars,
            device,
            flip_test,
            detector: None,
            box_map: YUNET_TO_IBUG68,
        }
    }

    /// This landmarker with a face detector, for [`Landmarker::detect_and_predict`].
    pub fn with_detector(mut self, detector: Detector) -> Landmarker {
        self.detector = Some(detector);
        self
    }

    /// This landmarker placing its crops with `map` (default: [`YUNET_TO_IBUG68`]).
    pub fn with_box_map(mut self, map: BoxMap) -> Landmarker {
        self.box_map = map;
        self
    }

    /// The faces the detector finds in `photo` (see [`Landmarker::with_detector`]).
    pub fn detect(&self, photo: &RgbImage) -> Result<Vec<Detection>> {
        let detector = self
            .detector
            .as_ref()
            .ok_or_else(|| LandmarkerError::Input {
                what: "a photo".into(),
                reason: "no face detector: add one with with_detector".into(),
            })?;
        Ok(detector.detect(photo)?)
    }

    /// Refuses models that look at whole photos (they have no use for a face box).
    fn check_crops_faces(&self) -> Result<()> {
        if self.card.crops_faces() {
            return Ok(());
        }
        Err(LandmarkerError::Input {
            what: "a photo".into(),
            reason: format!(
                "a {} model looks at whole photos, not detected faces: use predict",
                self.card.part
            ),
        })
    }

    /// Every face of a photo: found by the detector in its colour pixels, then its landmarks
    /// from the grayscale ones (both upright: see `fkd_data::photo`), best detection first.
    pub fn detect_and_predict(&self, photo: &Photo) -> Result<Vec<PhotoFace>> {
        Ok(self
            .detect_and_predict_batch(&[photo], 0.0)?
            .pop()
            .unwrap_or_default())
    }

    /// [`Landmarker::detect_and_predict`] for many photos, the landmark crops of all their
    /// faces batched together; detections smaller than `min_face` pixels (their box's longer
    /// side) are left out.
    pub fn detect_and_predict_batch(
        &self,
        photos: &[&Photo],
        min_face: f32,
    ) -> Result<Vec<Vec<PhotoFace>>> {
        self.check_crops_faces()?;
        let found: Vec<Vec<Detection>> = photos
            .iter()
            .map(|p| {
                let mut faces = self.detect(&p.rgb)?;
                faces.retain(|d| d.bbox.width.max(d.bbox.height) >= min_face);
                Ok(faces)
            })
            .collect::<Result<_>>()?;
        self.predict_detections_batch(photos, found)
    }

    /// Landmarks for faces already found: `found[k]` are photo `k`'s detections (from
    /// [`Landmarker::detect`], or YuNet run elsewhere), each placed on the crop the net
    /// expects by the box map. [`Landmarker::detect_and_predict_batch`] is `detect` then this.
    pub fn predict_detections_batch(
        &self,
        photos: &[&Photo],
        found: Vec<Vec<Detection>>,
    ) -> Result<Vec<Vec<PhotoFace>>> {
        self.check_crops_faces()?;
        if found.len() != photos.len() {
            return Err(LandmarkerError::Input {
                what: "detections".into(),
                reason: format!("{} lists for {} photos", found.len(), photos.len()),
            });
        }
        let boxes: Vec<Vec<FaceBox>> = found
            .iter()
            .map(|faces| faces.iter().map(|d| self.box_map.apply(d.bbox)).collect())
            .collect();
        let with_faces: Vec<usize> = (0..photos.len())
            .filter(|&k| !boxes[k].is_empty())
            .collect();
        let pairs: Vec<(&GrayImage, &[FaceBox])> = with_faces
            .iter()
            .map(|&k| (&photos[k].gray, boxes[k].as_slice()))
            .collect();
        let mut predicted = self.predict_batch(&pairs)?.into_iter();
        let mut out = Vec::with_capacity(photos.len());
        for (k, (faces, crop_boxes)) in found.into_iter().zip(boxes).enumerate() {
            let points = if with_faces.contains(&k) {
                predicted.next().unwrap_or_default()
            } else {
                Vec::new()
            };
            out.push(
                faces
                    .into_iter()
                    .zip(crop_boxes)
                    .zip(points)
                    .map(|((detection, crop_box), face)| PhotoFace {
                        detection,
                        crop_box,
                        points: face.points,
                    })
                    .collect(),
            );
        }
        Ok(out)
    }

    /// Writes the weights to `checkpoint` and the card beside it (`model.json` in the same
    /// folder, which must exist), each atomically, so [`Landmarker::load`] reads them back.
    pub fn save(&self, checkpoint: impl AsRef<Path>) -> Result<()> {
        let checkpoint = checkpoint.as_ref();
        fkd_models::save_weights(&self.vars, checkpoint)?;
        let dir = checkpoint.parent().unwrap_or(Path::new("."));
        self.card.write(&dir.join(crate::card::MODEL_CARD))
    }

    /// Turns the flip test on or off. It applies only to models that predict whole faces (the
    /// mirror image's points are renumbered by the layout's left/right permutation); it helps
    /// models trained with mirrored faces.
    pub fn with_flip_test(mut self, on: bool) -> Landmarker {
        self.flip_test = on && self.card.whole_face();
        self
    }

    /// Whether predictions average the mirror image's.
    pub fn flip_test(&self) -> bool {
        self.flip_test
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The net.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The device the net runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The network input for one face of `image`: the crop around `face` (models that crop),
    /// or the whole photo resized (whole-photo models, which ignore `face`). Its map back to
    /// the photo ends with the card's annotation offset.
    pub fn input(&self, image: &GrayImage, face: Option<FaceBox>) -> Result<NetInput> {
        self.input_scaled(image, face, 1.0)
    }

    /// [`Landmarker::input`] for an image of `photo_scale` pixels per pixel of the photo its
    /// faces were annotated on (a pre-cropped face: see `Sample::photo_scale`).
    fn input_scaled(
        &self,
        image: &GrayImage,
        face: Option<FaceBox>,
        photo_scale: f32,
    ) -> Result<NetInput> {
        let mut net_input = self.plain_input(image, face)?;
        net_input.to_source = self
            .card
            .offset_map(photo_scale)
            .compose(&net_input.to_source);
        Ok(net_input)
    }

    fn plain_input(&self, image: &GrayImage, face: Option<FaceBox>) -> Result<NetInput> {
        let input = self.card.input_size();
        match (self.card.enlarge, face) {
            (Some(enlarge), Some(bbox)) => {
                if !bbox.is_valid() {
                    return Err(LandmarkerError::Input {
                        what: format!("face box {bbox:?}"),
                        reason: "not a box with a positive, finite width and height".into(),
                    });
                }
                let crop = Crop::around(bbox, enlarge, input.width);
                // Mid-grey outside the photo, as the crops the model was trained on.
                Ok(NetInput {
                    image: crop.apply(image, 0.0),
                    to_source: crop.to_source_map(),
                })
            }
            (Some(_), None) => Err(LandmarkerError::Input {
                what: "a face".into(),
                reason: format!(
                    "a {} model looks at face crops, so it needs a face box",
                    self.card.part
                ),
            }),
            (None, _) => {
                let src = image.size();
                Ok(NetInput {
                    image: image.resize(input.width, input.height),
                    to_source: Affine::scaling(
                        f64::from(src.width) / f64::from(input.width),
                        f64::from(src.height) / f64::from(input.height),
                    ),
                })
            }
        }
    }

    /// The faces of one photo: one per box for models that crop faces (at least one box
    /// needed), one for the whole photo otherwise (boxes ignored).
    pub fn predict(&self, image: &GrayImage, faces: &[FaceBox]) -> Result<Vec<Face>> {
        Ok(self
            .predict_batch(&[(image, faces)])?
            .pop()
            .unwrap_or_default())
    }

    /// [`Landmarker::predict`] for many photos at once, batching faces across photos.
    pub fn predict_batch(&self, photos: &[(&GrayImage, &[FaceBox])]) -> Result<Vec<Vec<Face>>> {
        let mut wanted: Vec<(usize, Option<FaceBox>)> = Vec::new();
        for (k, (_, boxes)) in photos.iter().enumerate() {
            if self.card.crops_faces() {
                if boxes.is_empty() {
                    return Err(LandmarkerError::Input {
                        what: format!("photo {k}"),
                        reason: format!(
                            "no face box: a {} model looks at face crops, so each photo needs \
                             at least one box",
                            self.card.part
                        ),
                    });
                }
                wanted.extend(boxes.iter().map(|&b| (k, Some(b))));
            } else {
                wanted.push((k, None));
            }
        }
        let inputs = wanted
            .par_iter()
            .map(|&(k, bbox)| self.input(photos[k].0, bbox))
            .collect::<Result<Vec<_>>>()?;
        let points = self.predict_inputs(&inputs)?;
        let mut out: Vec<Vec<Face>> = vec![Vec::new(); photos.len()];
        for ((k, bbox), points) in wanted.into_iter().zip(points) {
            out[k].push(Face { bbox, points });
        }
        Ok(out)
    }

    /// The points of every sample (a face of a data set: its image file and box), in order,
    /// in the pixels of its image. Images are decoded and cropped in parallel, a chunk at a
    /// time; the samples' own points are not used.
    pub fn predict_samples(&self, samples: &[Sample]) -> Result<Vec<Vec<PixelPoint>>> {
        let mut out = Vec::with_capacity(samples.len());
        for chunk in samples.chunks(CHUNK) {
            let inputs = chunk
                .par_iter()
                .map(|s| self.sample_input(s))
                .collect::<Result<Vec<_>>>()?;
            out.extend(self.predict_inputs(&inputs)?);
        }
        Ok(out)
    }

    /// The network input of a data set's face: its box, or the tight box of its points.
    fn sample_input(&self, s: &Sample) -> Result<NetInput> {
        let bbox = if self.card.crops_faces() {
            let b = s
                .bbox
                .or_else(|| FaceBox::around(&s.points))
                .ok_or_else(|| LandmarkerError::Input {
                    what: format!("{} (face {})", s.image.display(), s.id),
                    reason: "neither a box nor points to crop to".into(),
                })?;
            Some(b)
        } else {
            None
        };
        self.input_scaled(&load_gray(&s.image)?, bbox, s.photo_scale)
    }

    /// The points for prepared network inputs (all of the card's input size), in order, in
    /// the pixels of each input's photo.
    pub fn predict_inputs(&self, inputs: &[NetInput]) -> Result<Vec<Vec<PixelPoint>>> {
        let mut out = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(BATCH) {
            for p in self.run(batch)? {
                out.push(self.card.source_points(&p)?);
            }
        }
        Ok(out)
    }

    /// One forward pass (two with the flip test) over a batch of inputs.
    fn run(&self, batch: &[NetInput]) -> Result<Vec<Prediction>> {
        let size = self.card.input_size();
        let (w, h) = (size.width as usize, size.height as usize);
        let mut pixels = Vec::with_capacity(batch.len() * w * h);
        for (i, input) in batch.iter().enumerate() {
            if input.image.size() != size {
                return Err(LandmarkerError::Input {
                    what: format!("input {i}"),
                    reason: format!("{} pixels where the net takes {size}", input.image.size()),
                });
            }
            pixels.extend_from_slice(input.image.data());
        }
        let x = Tensor::from_vec(pixels, (batch.len(), 1, h, w), &self.device)?;
        let rows = |out: &Tensor| -> Result<Vec<Vec<f32>>> {
            Ok(out
                .flatten_from(1)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?)
        };
        // On rayon's pool, as training runs its steps (see `fkd_train::on_pool`).
        let outputs = rows(&fkd_train::on_pool(|| self.net.forward_t(&x, false))?)?;
        let flipped: Vec<Option<Vec<f32>>> = if self.flip_test {
            let reversed: Vec<u32> = (0..w as u32).rev().collect();
            let reversed = Tensor::new(reversed.as_slice(), &self.device)?;
            let mirrored = x.index_select(&reversed, 3)?;
            let mirrored = fkd_train::on_pool(|| self.net.forward_t(&mirrored, false))?;
            rows(&mirrored)?.into_iter().map(Some).collect()
        } else {
            vec![None; batch.len()]
        };
        Ok(batch
            .iter()
            .zip(outputs.into_iter().zip(flipped))
            .enumerate()
            .map(|(index, (input, (output, flipped)))| Prediction {
                index,
                output,
                flipped,
                input: ImageSize::new(size.width, size.height),
                to_source: input.to_source,
            })
            .collect())
    }
}
