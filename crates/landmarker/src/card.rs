//! The model card: what identifies a trained model, written as `model.json` beside its
//! checkpoints. It says which net to rebuild (part, architecture, input size, points), how a
//! face becomes the net's input (the whole photo resized, or a crop of the face box enlarged
//! by `enlarge`), and how the net's output becomes points (normalised pairs, heatmaps and their
//! decoder, or soft-argmax points), so a checkpoint alone is enough to predict with.
//!
//! The format is the one `cargo xtask part1` … `part4` have always written; fields added since
//! have defaults, so every card ever written still loads.

use crate::error::{LandmarkerError, Result};
use fkd_core::{Affine, ImageSize, Layout, NormPoint, PixelPoint};
use fkd_heatmap::Decoder;
use fkd_train::Prediction;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the [`ModelCard`] beside a run's checkpoints.
pub const MODEL_CARD: &str = "model.json";

/// What identifies a trained model (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// `part1` … `part4`.
    pub part: String,
    /// The network: `nose`, `face` (Parts 1–2), `resnet18`, `resnet34` (Part 3),
    /// `resnet-deconv`, `fcn-alexnet` (Part 4).
    pub arch: String,
    /// Network input, width × height.
    pub input: [u32; 2],
    /// Points predicted.
    pub points: usize,
    /// Crop factor around the face box (models that crop faces), else `None` (the whole photo
    /// is resized to the input).
    pub enlarge: Option<f32>,
    /// Whether the model was trained with flips and is scored with the flip test.
    #[serde(default)]
    pub flip_test: bool,
    /// For heatmap nets: the maps' size and how they are decoded.
    #[serde(default)]
    pub heatmap: Option<HeatmapCard>,
    /// Which points of the layout the net predicts, in order (`None`: all of them). Cards
    /// written before this field: Part 1's single point is IMM's nose tip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<Vec<usize>>,
    /// Where the training annotations sit, on average, from the points the model predicts,
    /// in the pixels of the photos they were annotated on (`[dx, dy]`), added to every
    /// prediction. Flips in training and the flip test mirror points about the image's
    /// centre, so a model trained with them predicts mirror-symmetric positions and cannot
    /// learn a horizontal offset of its annotations from that symmetry (300-W's 1-based
    /// coordinates are half a pixel of it); the runner measures it on the training faces
    /// after training ([`ModelCard::measure_offset`]). Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_offset: Option<[f32; 2]>,
}

/// How a heatmap net's outputs are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeatmapCard {
    /// Map width × height.
    pub map: [u32; 2],
    /// The training maps' Gaussian σ, in map pixels.
    pub sigma: f32,
    /// The decoder.
    pub decoder: Decoder,
    /// `imm` or `300w`.
    pub dataset: String,
    /// Channels of resnet-deconv's transposed convs (cards written before the option: 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deconv_channels: Option<usize>,
    /// Transposed convs of resnet-deconv, each doubling the maps (absent: 3, maps at a quarter
    /// of the input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deconv_layers: Option<usize>,
    /// `integral` when the net outputs soft-argmax points instead of maps (absent: maps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

/// How a net's output row becomes points in the pixels of its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Head {
    /// `x0, y0, x1, y1, …` in normalised coordinates (Parts 1–3).
    Regression,
    /// One map per point, of `map` pixels, read by `decoder` (Part 4).
    Heatmaps {
        /// Map width × height.
        map: ImageSize,
        /// How a map becomes a point.
        decoder: Decoder,
    },
    /// Soft-argmax points of the maps, normalised (Part 4's integral head).
    Integral,
}

impl ModelCard {
    /// Reads a card from `path`.
    pub fn read(path: &Path) -> Result<ModelCard> {
        let text = std::fs::read_to_string(path).map_err(|e| LandmarkerError::Card {
            path: path.to_path_buf(),
            reason: format!("cannot read the model card: {e}"),
        })?;
        let card: ModelCard = serde_json::from_str(&text).map_err(|e| LandmarkerError::Card {
            path: path.to_path_buf(),
            reason: format!("not a model card: {e}"),
        })?;
        card.check(path)?;
        Ok(card)
    }

    /// Reads the card beside `checkpoint` (`model.json` in the same folder), naming what is
    /// missing.
    pub fn beside(checkpoint: &Path) -> Result<ModelCard> {
        let dir = checkpoint.parent().unwrap_or(Path::new("."));
        let path = dir.join(MODEL_CARD);
        if !path.is_file() {
            return Err(LandmarkerError::Card {
                path,
                reason: format!(
                    "no {MODEL_CARD} beside the checkpoint {} (is it a checkpoint of an fkd run?)",
                    checkpoint.display()
                ),
            });
        }
        Self::read(&path)
    }

    /// Writes the card to `path` atomically, as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| LandmarkerError::Card {
            path: path.to_path_buf(),
            reason: format!("cannot serialise the card: {e}"),
        })?;
        fkd_core::io::write_bytes_atomic(path, json.as_bytes())?;
        Ok(())
    }

    /// Refuses a card of another part than `part`, naming `checkpoint`.
    pub fn expect_part(&self, part: &str, checkpoint: &Path) -> Result<()> {
        if self.part != part {
            return Err(LandmarkerError::Card {
                path: checkpoint.to_path_buf(),
                reason: format!(
                    "a {} checkpoint ({}, {} points) where a {part} checkpoint is needed",
                    self.part, self.arch, self.points
                ),
            });
        }
        Ok(())
    }

    /// Checks what decoding and scoring need (the layout, the points, the head); the net's
    /// own shapes are checked when it is built ([`crate::Net::build`]).
    fn check(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| LandmarkerError::Card {
            path: path.to_path_buf(),
            reason,
        };
        let layout = self.try_layout().ok_or_else(|| {
            bad(format!(
                "unknown model {:?} (part {:?}, data set {:?})",
                self.arch,
                self.part,
                self.heatmap.as_ref().map(|h| h.dataset.as_str())
            ))
        })?;
        match &self.selected() {
            Some(sel) if sel.len() != self.points || sel.iter().any(|&i| i >= layout.n_points) => {
                return Err(bad(format!(
                    "points {sel:?} do not fit {} points of a {}-point layout",
                    self.points, layout.n_points
                )));
            }
            None if self.points != layout.n_points => {
                return Err(bad(format!(
                    "{} points, but the {}-point layout needs a `select` list",
                    self.points, layout.n_points
                )));
            }
            _ => {}
        }
        if self.input.contains(&0) {
            return Err(bad(format!("an empty input {:?}", self.input)));
        }
        if let Some(e) = self.enlarge
            && !(e.is_finite() && e > 0.0)
        {
            return Err(bad(format!("a crop factor of {e}")));
        }
        if let Some(h) = &self.heatmap {
            if h.map.contains(&0) {
                return Err(bad(format!("empty maps {:?}", h.map)));
            }
            if !matches!(h.head.as_deref(), None | Some("heatmap" | "integral")) {
                return Err(bad(format!("unknown head {:?}", h.head)));
            }
        }
        Ok(())
    }

    fn try_layout(&self) -> Option<Layout> {
        match (self.part.as_str(), &self.heatmap) {
            ("part1" | "part2", None) => Some(Layout::IMM58),
            ("part3", None) => Some(Layout::IBUG68),
            ("part4", Some(h)) => match h.dataset.as_str() {
                "imm" => Some(Layout::IMM58),
                "300w" => Some(Layout::IBUG68),
                _ => None,
            },
            _ => None,
        }
    }

    /// The layout of the points' source annotations (IMM's 58 or iBUG's 68).
    pub fn layout(&self) -> Layout {
        // Cards are checked when read; a card built in code falls back on its point count.
        self.try_layout()
            .unwrap_or(if self.points == Layout::IMM58.n_points {
                Layout::IMM58
            } else {
                Layout::IBUG68
            })
    }

    /// Which points of the layout the net predicts (`None`: all).
    pub fn selected(&self) -> Option<Vec<usize>> {
        match &self.select {
            Some(s) => Some(s.clone()),
            // Part 1's cards before `select`: the IMM nose tip.
            None if self.part == "part1" && self.points == 1 => {
                Some(vec![fkd_core::layout::imm::NOSE_TIP])
            }
            None => None,
        }
    }

    /// Whether the net predicts every point of the layout (then NME applies, figures draw
    /// contours, and the flip test can renumber mirrored points).
    pub fn whole_face(&self) -> bool {
        self.selected().is_none()
    }

    /// Whether the net looks at a crop around a face box (else at the whole photo).
    pub fn crops_faces(&self) -> bool {
        self.enlarge.is_some()
    }

    /// The network input size.
    pub fn input_size(&self) -> ImageSize {
        ImageSize::new(self.input[0], self.input[1])
    }

    /// How the net's output becomes points.
    pub fn head(&self) -> Head {
        match &self.heatmap {
            None => Head::Regression,
            Some(h) if h.head.as_deref() == Some("integral") => Head::Integral,
            Some(h) => Head::Heatmaps {
                map: ImageSize::new(h.map[0], h.map[1]),
                decoder: h.decoder,
            },
        }
    }

    /// The points of one output row (or target row: the same encoding), in the pixels of the
    /// `input`-sized network input. A heatmap that cannot be decoded (not finite) gives NaN
    /// points, which scoring refuses by name.
    pub fn decode(&self, output: &[f32], input: ImageSize) -> Vec<PixelPoint> {
        match self.head() {
            Head::Regression => output
                .chunks_exact(2)
                .map(|c| PixelPoint::new(c[0] * input.width as f32, c[1] * input.height as f32))
                .collect(),
            Head::Integral => output
                .chunks_exact(2)
                .map(|p| NormPoint::new(p[0], p[1]).to_pixel(input))
                .collect(),
            Head::Heatmaps { map, decoder } => {
                let (sx, sy) = (
                    input.width as f32 / map.width as f32,
                    input.height as f32 / map.height as f32,
                );
                match fkd_heatmap::decode_all(output, self.points, map, decoder) {
                    Ok(points) => points
                        .into_iter()
                        .map(|p| PixelPoint::new(p.x * sx, p.y * sy))
                        .collect(),
                    Err(_) => vec![PixelPoint::new(f32::NAN, f32::NAN); self.points],
                }
            }
        }
    }

    /// The annotation's points this model predicts, in its order.
    pub fn truth(&self, points: &[PixelPoint]) -> Vec<PixelPoint> {
        match self.selected() {
            Some(idx) => idx.iter().filter_map(|&i| points.get(i).copied()).collect(),
            None => points.to_vec(),
        }
    }

    /// The points of `p` in the source photo's pixels: decoded, merged with the mirror
    /// image's when the flip test ran, mapped through the sample's `to_source`. The
    /// [annotation offset](ModelCard::annotation_offset) is not added: `to_source` holds it
    /// where the caller knows the photo ([`ModelCard::offset_map`]).
    pub fn source_points(&self, p: &Prediction) -> Result<Vec<PixelPoint>> {
        self.points_through(p, &p.to_source)
    }

    /// [`ModelCard::source_points`] mapped through `to_source` instead of the prediction's.
    pub(crate) fn points_through(
        &self,
        p: &Prediction,
        to_source: &Affine,
    ) -> Result<Vec<PixelPoint>> {
        let mut pts = self.decode(&p.output, p.input);
        if let Some(flipped) = &p.flipped {
            let f = self.decode(flipped, p.input);
            pts = fkd_train::merge_flipped(&pts, &f, p.input.width as f32, self.layout().mirror)?;
        }
        Ok(pts.into_iter().map(|q| to_source.apply(q)).collect())
    }

    /// The [annotation offset](ModelCard::annotation_offset) as a move of the points of an
    /// image with `photo_scale` pixels per pixel of the annotated photo
    /// ([`fkd_data::dataset::Sample::photo_scale`]; 1 for a photo itself).
    pub fn offset_map(&self, photo_scale: f32) -> Affine {
        let [dx, dy] = self.annotation_offset.unwrap_or_default();
        let s = f64::from(photo_scale);
        Affine::translation(f64::from(dx) * s, f64::from(dy) * s)
    }

    /// The horizontal [annotation offset](ModelCard::annotation_offset) of `truth` from the
    /// model's `predicted` points (without an offset), in the annotated photos' pixels: the
    /// median over faces of the mean `truth.x − predicted.x`, each face's divided by its
    /// photo scale, with its standard error. (Vertically a model trained without vertical
    /// flips learns its annotations' offset.) `None` for no face with a finite point.
    pub fn measure_offset(
        faces: impl IntoIterator<Item = (f32, Vec<PixelPoint>, Vec<PixelPoint>)>,
    ) -> Option<OffsetEstimate> {
        let mut dx: Vec<f32> = faces
            .into_iter()
            .filter_map(|(photo_scale, truth, predicted)| {
                let d: Vec<f32> = truth
                    .iter()
                    .zip(&predicted)
                    .map(|(t, p)| t.x - p.x)
                    .filter(|d| d.is_finite())
                    .collect();
                let mean = d.iter().sum::<f32>() / d.len() as f32;
                (!d.is_empty() && photo_scale > 0.0).then_some(mean / photo_scale)
            })
            .collect();
        if dx.is_empty() {
            return None;
        }
        dx.sort_by(f32::total_cmp);
        let n = dx.len();
        let median = if n % 2 == 1 {
            dx[n / 2]
        } else {
            0.5 * (dx[n / 2 - 1] + dx[n / 2])
        };
        let mean = dx.iter().sum::<f32>() / n as f32;
        let var = dx.iter().map(|d| (d - mean).powi(2)).sum::<f32>() / (n.max(2) - 1) as f32;
        Some(OffsetEstimate {
            dx: median,
            // The median's standard error for roughly normal gaps: √(π/2) σ / √n.
            standard_error: 1.2533 * var.sqrt() / (n as f32).sqrt(),
            faces: n,
        })
    }
}

/// An annotation offset measured on faces ([`ModelCard::measure_offset`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OffsetEstimate {
    /// The median face's horizontal gap, annotation minus prediction, in the annotated
    /// photos' pixels.
    pub dx: f32,
    /// The standard error of that median.
    pub standard_error: f32,
    /// How many faces were measured.
    pub faces: usize,
}

impl OffsetEstimate {
    /// How many standard errors from 0 an offset must be to be kept: below it the faces do
    /// not tell the offset from the prediction errors' noise, and none is better than noise.
    pub const SIGNIFICANT: f32 = 3.0;

    /// The card's offset (`[dx, 0]`), or `None` when it is within [`Self::SIGNIFICANT`]
    /// standard errors of 0.
    pub fn offset(&self) -> Option<[f32; 2]> {
        (self.dx.abs() >= Self::SIGNIFICANT * self.standard_error).then_some([self.dx, 0.0])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn part1() -> ModelCard {
        ModelCard {
            part: "part1".into(),
            arch: "nose".into(),
            input: [80, 60],
            points: 1,
            enlarge: None,
            flip_test: false,
            heatmap: None,
            select: None,
            annotation_offset: None,
        }
    }

    #[test]
    fn part1_cards_without_select_mean_the_nose_tip() {
        let card = part1();
        assert_eq!(card.selected(), Some(vec![52]));
        assert!(!card.whole_face());
        let pts: Vec<PixelPoint> = (0..58).map(|i| PixelPoint::new(i as f32, 0.0)).collect();
        assert_eq!(card.truth(&pts), vec![PixelPoint::new(52.0, 0.0)]);
    }

    /// The offset is the median face's mean horizontal gap in the annotated photo's pixels
    /// (a crop at half scale counts its gap twice), NaN points ignored; nothing to measure
    /// gives `None`.
    #[test]
    fn offset_is_the_median_faces_gap_in_photo_pixels() {
        let face = |dx: f32, scale: f32| {
            let truth = vec![PixelPoint::new(10.0, 5.0), PixelPoint::new(20.0, 7.0)];
            let mut predicted: Vec<PixelPoint> = truth
                .iter()
                .map(|p| PixelPoint::new(p.x - dx * scale, p.y + 3.0))
                .collect();
            predicted.push(PixelPoint::new(f32::NAN, 0.0));
            let mut truth = truth;
            truth.push(PixelPoint::new(1.0, 1.0));
            (scale, truth, predicted)
        };
        let faces = vec![
            face(1.0, 1.0),
            face(1.5, 0.5),
            face(9.0, 1.0),
            face(-2.0, 0.25),
        ];
        let e = ModelCard::measure_offset(faces).unwrap();
        assert!((e.dx - 1.25).abs() < 1e-5, "{e:?}");
        assert_eq!(e.faces, 4);
        // Gaps -2, 1, 1.5, 9 (σ = √(65.6875 / 3)): the median is within 3 standard errors of 0.
        let se = 1.2533 * (65.6875f32 / 3.0).sqrt() / 2.0;
        assert!((e.standard_error - se).abs() < 1e-3, "{e:?}");
        assert_eq!(e.offset(), None);
        // Many faces with close gaps tell it clearly.
        let many = (0..400).map(|k| face(1.0 + 0.01 * (k % 7) as f32, 1.0));
        let e = ModelCard::measure_offset(many).unwrap();
        assert!((e.dx - 1.03).abs() < 1e-5, "{e:?}");
        assert_eq!(e.offset(), Some([e.dx, 0.0]));
        assert_eq!(ModelCard::measure_offset(Vec::new()), None);
        let card = ModelCard {
            annotation_offset: Some([2.0, -1.0]),
            ..part1()
        };
        let q = card.offset_map(0.5).apply(PixelPoint::new(3.0, 4.0));
        assert_eq!(q, PixelPoint::new(4.0, 3.5));
        assert!(part1().offset_map(0.5).is_identity());
    }

    #[test]
    fn bad_cards_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MODEL_CARD);
        let mut card = part1();
        card.points = 3;
        card.write(&path).unwrap();
        let err = ModelCard::read(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains("3 points, but the 58-point layout"), "{err}");
        std::fs::write(&path, "{").unwrap();
        let err = ModelCard::read(&path).unwrap_err().to_string();
        assert!(err.contains("not a model card"), "{err}");
        let err = ModelCard::beside(&dir.path().join("x/best.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no model.json beside the checkpoint"), "{err}");
    }

    #[test]
    fn regression_and_integral_decode_to_input_pixels() {
        let mut card = part1();
        let input = ImageSize::new(80, 60);
        assert_eq!(
            card.decode(&[0.5, 0.25], input),
            vec![PixelPoint::new(40.0, 15.0)]
        );
        card.heatmap = Some(HeatmapCard {
            map: [20, 15],
            sigma: 1.5,
            decoder: Decoder::Dark,
            dataset: "imm".into(),
            deconv_channels: None,
            deconv_layers: None,
            head: Some("integral".into()),
        });
        assert_eq!(card.head(), Head::Integral);
        assert_eq!(
            card.decode(&[0.5, 0.25], input),
            vec![PixelPoint::new(40.0, 15.0)]
        );
    }
}
