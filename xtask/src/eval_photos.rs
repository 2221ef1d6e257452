//! `cargo xtask eval-photos`: a checkpoint scored photo in, points out. Every photo under the
//! given folders that has 300-W `.pts` annotations beside it (`photo.pts`, or `photo_N.jpg`
//! with `photo_N.pts` for each face of a group photo, as 300-W stores AFW: byte-identical copies,
//! grouped here by their content) is read upright, its faces are found by the detector and
//! their landmarks predicted; each annotated face is matched to the unused detection whose box
//! overlaps its landmarks' tight box most (IoU ≥ 0.3). Unmatched detections are not errors
//! (group photos hold faces nobody annotated). Reported: detection recall; NME (outer eye
//! corners), FR@0.08 and AUC@0.08 over all annotated faces (a missed face counts as a
//! failure) and over the found ones; photos/s.

use crate::DataRoot;
use anyhow::{Context, bail};
use fkd_core::{FaceBox, Layout};
use fkd_detect::{Detector, DetectorConfig};
use fkd_landmarker::placement::iou;
use fkd_landmarker::{Landmarker, Photo, load_photo};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `cargo xtask eval-photos`.
#[derive(clap::Args, Clone, Debug)]
pub struct EvalPhotosArgs {
    /// A trained 68-point checkpoint (its `model.json` beside it).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Folders of photos with their `.pts` files.
    #[arg(required = true)]
    pub folders: Vec<PathBuf>,
    #[command(flatten)]
    pub root: DataRoot,
    /// The face detector's weights [default: DATA/models/yunet/yunet_n.pth].
    #[arg(long, value_name = "FILE")]
    pub detector: Option<PathBuf>,
    /// The detector's score threshold.
    #[arg(long, default_value_t = 0.7)]
    pub score: f32,
    /// Also write the numbers as JSON here (each face's NME included).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Another pipeline's JSON over the same photos (eval-photos', or
    /// `xtask/bench/dlib_photos.py --json`'s): also print both NMEs over the faces both found.
    #[arg(long, value_name = "JSON")]
    pub against: Option<PathBuf>,
    /// Device: cpu, cuda / metal in a build with that feature, or auto [default: auto].
    #[arg(long)]
    pub device: Option<String>,
}

/// The numbers of one evaluation.
#[derive(Serialize)]
struct Scores {
    photos: usize,
    annotated_faces: usize,
    found_faces: usize,
    recall: f32,
    /// Over every annotated face, a missed one counting as a failure.
    fr_008_all: f32,
    auc_008_all: f32,
    /// Over the found faces.
    nme_found: f32,
    fr_008_found: f32,
    auc_008_found: f32,
    seconds: f64,
    photos_per_s: f64,
    /// The detector alone, per photo (scaled to at most 640 pixels).
    detector_ms: f64,
    /// Every annotated face, in order.
    faces: Vec<FaceScore>,
}

/// One annotated face's result.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
struct FaceScore {
    /// The photo (the first copy's path, for a photo stored once per face).
    photo: String,
    /// The face's place among the photo's annotated faces, in file order.
    face: usize,
    /// Its NME; `None` when no detection matched it.
    nme: Option<f32>,
}

/// The other pipeline's per-face results (`--against`).
#[derive(serde::Deserialize)]
struct Other {
    faces: Vec<FaceScore>,
}

/// A missed face's error: above every threshold, finite for the metrics.
const MISSED: f32 = 1e9;

/// A face is found when a detection's box overlaps its landmarks' tight box at least this much
/// (the rule `xtask/bench/dlib_photos.py` applies to dlib's detections too).
const MATCH_IOU: f32 = 0.3;

pub fn run(args: &EvalPhotosArgs) -> anyhow::Result<()> {
    let photos = annotated_photos(&args.folders)?;
    if photos.is_empty() {
        bail!("no photo with .pts annotations under the given folders");
    }
    let device = crate::device_arg(args.device.as_deref())?;
    let weights = args
        .detector
        .clone()
        .unwrap_or_else(|| args.root.path().join("models/yunet/yunet_n.pth"));
    let detector = Detector::load(&weights, &device)
        .with_context(|| "the face detector (`cargo xtask data fetch yunet` downloads it)")?
        .with_config(DetectorConfig {
            score: args.score,
            ..DetectorConfig::default()
        });
    let landmarker = Landmarker::load(&args.checkpoint, &device)?.with_detector(detector);
    if landmarker.card().layout() != Layout::IBUG68 || !landmarker.card().whole_face() {
        bail!(
            "{}: eval-photos needs a 68-point checkpoint (300-W .pts)",
            args.checkpoint.display()
        );
    }
    let started = Instant::now();
    let mut detecting = std::time::Duration::ZERO;
    let (mut all, mut found, mut per_face) = (Vec::new(), Vec::new(), Vec::new());
    // As `predict` runs: photos decoded in parallel a chunk at a time, their faces batched
    // across photos; `detect_and_predict_batch` in its two steps so that the detector's share
    // is timed.
    for chunk in photos.chunks(crate::predict::PHOTOS_AT_ONCE) {
        let decoded: Vec<Photo> = chunk
            .par_iter()
            .map(|(path, _)| load_photo(path).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<_>>()?;
        let t = Instant::now();
        let detections = decoded
            .iter()
            .map(|p| landmarker.detect(&p.rgb).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        detecting += t.elapsed();
        let refs: Vec<&Photo> = decoded.iter().collect();
        let predicted = landmarker.predict_detections_batch(&refs, detections)?;
        for ((photo_path, faces), predicted) in chunk.iter().zip(predicted) {
            let mut used = Vec::new();
            for (n, truth) in faces.iter().enumerate() {
                let tight = FaceBox::around(truth)
                    .with_context(|| format!("{}: a face without points", photo_path.display()))?;
                // Each detection serves one face at most: faces in file order, greedily.
                let best = predicted
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| !used.contains(k))
                    .map(|(k, f)| (iou(f.detection.bbox, tight), k, f))
                    .filter(|(o, _, _)| *o >= MATCH_IOU)
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                match best {
                    Some((_, k, f)) => {
                        used.push(k);
                        let e = fkd_metrics::nme(&f.points, truth, &Layout::IBUG68)
                            .with_context(|| format!("scoring {}", photo_path.display()))?;
                        all.push(e);
                        found.push(e);
                        per_face.push(face_score(photo_path, n, Some(e)));
                    }
                    None => {
                        all.push(MISSED);
                        per_face.push(face_score(photo_path, n, None));
                    }
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let detector_ms = 1e3 * detecting.as_secs_f64() / photos.len() as f64;
    let (fr, auc) = (fkd_metrics::failure_rate, fkd_metrics::auc);
    let or_nan = |r: fkd_metrics::Result<f32>| r.unwrap_or(f32::NAN);
    let s = Scores {
        photos: photos.len(),
        annotated_faces: all.len(),
        found_faces: found.len(),
        recall: found.len() as f32 / all.len().max(1) as f32,
        fr_008_all: fr(&all, 0.08)?,
        auc_008_all: auc(&all, 0.08)?,
        nme_found: found.iter().sum::<f32>() / found.len().max(1) as f32,
        fr_008_found: or_nan(fr(&found, 0.08)),
        auc_008_found: or_nan(auc(&found, 0.08)),
        seconds,
        photos_per_s: photos.len() as f64 / seconds.max(1e-9),
        detector_ms,
        faces: per_face,
    };
    println!(
        "{} photos, {} annotated faces, {} found (recall {:.1}%)",
        s.photos,
        s.annotated_faces,
        s.found_faces,
        100.0 * s.recall
    );
    println!(
        "all faces (missed = failure): FR@0.08 {:.2}%, AUC@0.08 {:.4}",
        100.0 * s.fr_008_all,
        s.auc_008_all
    );
    println!(
        "found faces: NME {:.2}%, FR@0.08 {:.2}%, AUC@0.08 {:.4}",
        100.0 * s.nme_found,
        100.0 * s.fr_008_found,
        s.auc_008_found
    );
    println!(
        "{:.1} photos/s ({:.0} s); the detector alone {:.1} ms/photo",
        s.photos_per_s, s.seconds, s.detector_ms
    );
    if let Some(other) = &args.against {
        let text = std::fs::read_to_string(other)
            .with_context(|| format!("reading {}", other.display()))?;
        let o: Other = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an eval-photos JSON with faces", other.display()))?;
        let (n, ours, theirs) = common(&s.faces, &o.faces);
        println!(
            "over the {n} faces both found: NME {:.2}% here, {:.2}% in {}",
            100.0 * ours,
            100.0 * theirs,
            other.display()
        );
    }
    if let Some(path) = &args.json {
        fkd_core::io::write_bytes_atomic(path, serde_json::to_string_pretty(&s)?.as_bytes())?;
    }
    Ok(())
}

fn face_score(photo: &Path, face: usize, nme: Option<f32>) -> FaceScore {
    FaceScore {
        photo: photo.display().to_string(),
        face,
        nme,
    }
}

/// The faces found by both (same photo file name and place): how many, and each side's mean NME
/// over them (NaN for none).
fn common(ours: &[FaceScore], theirs: &[FaceScore]) -> (usize, f32, f32) {
    let name = |p: &str| Path::new(p).file_name().map(|n| n.to_owned());
    let theirs: BTreeMap<_, f32> = theirs
        .iter()
        .filter_map(|f| Some(((name(&f.photo)?, f.face), f.nme?)))
        .collect();
    let pairs: Vec<(f32, f32)> = ours
        .iter()
        .filter_map(|f| Some((f.nme?, *theirs.get(&(name(&f.photo)?, f.face))?)))
        .collect();
    let n = pairs.len();
    let mean = |v: f32| v / n as f32;
    (
        n,
        mean(pairs.iter().map(|p| p.0).sum()),
        mean(pairs.iter().map(|p| p.1).sum()),
    )
}

/// A photo and the points of each of its annotated faces.
type AnnotatedPhoto = (PathBuf, Vec<Vec<fkd_core::PixelPoint>>);

/// Every photo under `folders` with `.pts` beside it, and its annotated faces; copies of one
/// photo (same bytes) are one photo with all their faces.
fn annotated_photos(folders: &[PathBuf]) -> anyhow::Result<Vec<AnnotatedPhoto>> {
    let mut by_content: BTreeMap<(u64, u64), AnnotatedPhoto> = BTreeMap::new();
    for folder in folders {
        let mut files = Vec::new();
        collect(folder, &mut files)?;
        files.sort();
        for image in files {
            let pts = image.with_extension("pts");
            if !pts.is_file() {
                continue;
            }
            let points = fkd_data::pts::read_pts(&pts)?;
            let bytes =
                std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            by_content
                .entry((h.finish(), bytes.len() as u64))
                .or_insert_with(|| (image.clone(), Vec::new()))
                .1
                .push(points);
        }
    }
    let mut photos: Vec<_> = by_content.into_values().collect();
    photos.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(photos)
}

/// Image files (JPEG, PNG) in `dir` and below.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Faces pair by photo file name and place; a face either side missed is left out.
    #[test]
    fn common_faces_pair_by_photo_and_place() {
        let f = |photo: &str, face, nme| FaceScore {
            photo: photo.into(),
            face,
            nme,
        };
        let ours = [
            f("/a/x.jpg", 0, Some(0.02)),
            f("/a/x.jpg", 1, Some(0.04)),
            f("/a/y.png", 0, None),
            f("/a/z.png", 0, Some(0.5)),
        ];
        let theirs = [
            f("/b/x.jpg", 1, Some(0.06)),
            f("/b/x.jpg", 0, None),
            f("/b/y.png", 0, Some(0.03)),
            f("/b/z.png", 0, Some(0.1)),
        ];
        let (n, a, b) = common(&ours, &theirs);
        assert_eq!(n, 2);
        assert!(
            (a - 0.27).abs() < 1e-6 && (b - 0.08).abs() < 1e-6,
            "{a} {b}"
        );
        assert!(common(&ours[2..3], &theirs).1.is_nan());
    }
}
