//! `cargo xtask calibrate-detector`: where YuNet's boxes sit relative to the tight boxes of
//! 300-W's 68 points, measured on the training photos. Each annotated face is matched to the
//! detection that overlaps it most (IoU ≥ 0.3); the medians of the matched pairs' centre
//! shifts and side ratios are the [`BoxMap`] that `predict` and `detect_and_predict` place
//! their crops with (`fkd_landmarker::YUNET_TO_IBUG68`).

use crate::DataRoot;
use anyhow::Context;
use fkd_core::{FaceBox, Layout};
use fkd_data::dataset::{DataSet, LoadPolicy};
use fkd_detect::{Detector, DetectorConfig};
use fkd_landmarker::BoxMap;
use fkd_landmarker::placement::iou;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `cargo xtask calibrate-detector`.
#[derive(clap::Args, Clone, Debug)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub root: DataRoot,
    /// Annotated faces [default: DATA/ibug_300w_cropped/labels_300w_train.xml].
    #[arg(long, value_name = "XML")]
    pub xml: Option<PathBuf>,
    /// YuNet's weights [default: DATA/models/yunet/yunet_n.pth].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The detector's score threshold.
    #[arg(long, default_value_t = 0.5)]
    pub score: f32,
}

pub fn run(args: &CalibrateArgs) -> anyhow::Result<()> {
    let root = args.root.path();
    let xml = args
        .xml
        .clone()
        .unwrap_or_else(|| root.join("ibug_300w_cropped/labels_300w_train.xml"));
    let weights = args
        .weights
        .clone()
        .unwrap_or_else(|| root.join("models/yunet/yunet_n.pth"));
    let set = DataSet::dlib_xml(&xml, Layout::IBUG68, LoadPolicy::Strict)?;
    let detector =
        Detector::load(&weights, &candle_core::Device::Cpu)?.with_config(DetectorConfig {
            score: args.score,
            ..DetectorConfig::default()
        });
    // The annotated faces of each photo.
    let mut photos: BTreeMap<PathBuf, Vec<FaceBox>> = BTreeMap::new();
    for s in &set.samples {
        let tight = FaceBox::around(&s.points)
            .with_context(|| format!("{}: a face without points", s.id))?;
        photos.entry(s.image.clone()).or_default().push(tight);
    }
    let photos: Vec<(PathBuf, Vec<FaceBox>)> = photos.into_iter().collect();
    let pairs: Vec<Vec<(FaceBox, FaceBox)>> = photos
        .par_iter()
        .map(|(path, faces)| -> anyhow::Result<Vec<(FaceBox, FaceBox)>> {
            let photo = fkd_data::photo::load_photo(path)?;
            let found = detector.detect(&photo.rgb)?;
            Ok(faces
                .iter()
                .filter_map(|&t| {
                    found
                        .iter()
                        .map(|d| (iou(d.bbox, t), d.bbox))
                        .filter(|(o, _)| *o >= 0.3)
                        .max_by(|a, b| a.0.total_cmp(&b.0))
                        .map(|(_, d)| (d, t))
                })
                .collect())
        })
        .collect::<anyhow::Result<_>>()?;
    let pairs: Vec<(FaceBox, FaceBox)> = pairs.into_iter().flatten().collect();
    let map = BoxMap::fit(&pairs).context("no face was matched to a detection")?;
    let mean_iou = |m: &BoxMap| {
        pairs.iter().map(|&(d, t)| iou(m.apply(d), t)).sum::<f32>() / pairs.len() as f32
    };
    println!(
        "{}: {} faces in {} photos, {} matched to a detection (score ≥ {})",
        xml.display(),
        set.len(),
        photos.len(),
        pairs.len(),
        args.score
    );
    println!(
        "map: dx {:.4}, dy {:.4}, sx {:.4}, sy {:.4}; mean IoU with the landmark box {:.3} \
         (detection box as it is: {:.3})",
        map.dx,
        map.dy,
        map.sx,
        map.sy,
        mean_iou(&map),
        mean_iou(&BoxMap::IDENTITY)
    );
    Ok(())
}
