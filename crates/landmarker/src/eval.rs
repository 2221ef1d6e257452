//! Scoring a model on labelled faces: NME by the inter-ocular distance (whole-face models),
//! failure rates, AUC, MAE and pixel errors, all in the source photos' pixels.

use crate::card::ModelCard;
use crate::error::{LandmarkerError, Result};
use crate::landmarker::Landmarker;
use fkd_core::PixelPoint;
use fkd_data::dataset::Sample;
use fkd_metrics::{Evaluator, Normaliser, Summary};
use fkd_train::Prediction;

/// A model's scores on a set of faces.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The set's numbers.
    pub summary: Summary,
    /// Per face: predicted points in source pixels and their mean error in pixels.
    pub preds: Vec<(Vec<PixelPoint>, f32)>,
    /// Per face NME, for models that predict whole faces.
    pub nmes: Option<Vec<f32>>,
}

/// Predicts every face of `samples` with `landmarker` and scores the points against the
/// samples' annotations.
pub fn evaluate(landmarker: &Landmarker, samples: &[Sample]) -> Result<Evaluation> {
    let points = landmarker.predict_samples(samples)?;
    score_points(landmarker.card(), samples, points)
}

/// Scores raw predictions ([`fkd_train::predict`]'s, over a loader of `samples`) of the model
/// `card` describes: each is decoded and mapped back to its photo (with the card's annotation
/// offset at the sample's photo scale), then scored.
pub fn score_predictions(
    card: &ModelCard,
    samples: &[Sample],
    predictions: &[Prediction],
) -> Result<Evaluation> {
    let mut ordered = Vec::with_capacity(predictions.len());
    for p in predictions {
        let s = samples.get(p.index).ok_or_else(|| LandmarkerError::Input {
            what: format!("prediction {}", p.index),
            reason: format!("there are only {} samples", samples.len()),
        })?;
        // The offset composed into the map, as `Landmarker::input` does: the same numbers.
        let to_source = card.offset_map(s.photo_scale).compose(&p.to_source);
        ordered.push((s.clone(), card.points_through(p, &to_source)?));
    }
    let (samples, points): (Vec<Sample>, Vec<_>) = ordered.into_iter().unzip();
    score_points(card, &samples, points)
}

/// Scores `points` (one list per sample, in source pixels) against the samples' annotations
/// (the card's selected points of them).
pub fn score_points(
    card: &ModelCard,
    samples: &[Sample],
    points: Vec<Vec<PixelPoint>>,
) -> Result<Evaluation> {
    let normaliser = if card.whole_face() {
        Normaliser::Interocular(card.layout())
    } else {
        Normaliser::None
    };
    let mut eval = Evaluator::new(normaliser);
    let mut preds = Vec::with_capacity(points.len());
    for (s, pred) in samples.iter().zip(points) {
        let truth = card.truth(&s.points);
        let pred_norm: Vec<_> = pred.iter().map(|q| q.to_norm(s.size)).collect();
        let truth_norm: Vec<_> = truth.iter().map(|q| q.to_norm(s.size)).collect();
        let named = |source| LandmarkerError::Metrics {
            face: s.id.clone(),
            source,
        };
        eval.add_with_norm(&pred, &truth, &pred_norm, &truth_norm)
            .map_err(named)?;
        let err = fkd_metrics::mean_point_error(&pred, &truth).map_err(named)?;
        preds.push((pred, err));
    }
    let summary = eval.finish().map_err(|source| LandmarkerError::Metrics {
        face: format!("{} faces", samples.len()),
        source,
    })?;
    Ok(Evaluation {
        summary,
        preds,
        nmes: eval.nmes().map(<[f32]>::to_vec),
    })
}
