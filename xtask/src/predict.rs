//! `cargo xtask predict`: run a trained checkpoint on photos. Each photo (or every photo in a
//! folder and below) is read upright (its EXIF orientation applied); its faces come from the
//! YuNet detector, or from a dlib XML or one `--box` (Parts 1–2 take the whole photo); the net
//! predicts their points, which are drawn on the colour photo (PNG) and written as JSON in the
//! upright photo's pixels. An unreadable file is named and counted, and the run goes on (exit
//! code 1 at the end). The checkpoint's `model.json` says which part made it.

use crate::progress::bar_style;
use anyhow::{Context, bail};
use fkd_core::{FaceBox, Layout, PixelPoint};
use fkd_data::img::GrayImage;
use fkd_data::photo::Photo;
use fkd_detect::{Detector, DetectorConfig};
use fkd_landmarker::{Landmarker, ModelCard, PhotoFace};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `cargo xtask predict`.
#[derive(clap::Args, Clone, Debug)]
pub struct PredictArgs {
    /// A trained checkpoint (`best.safetensors`, with its `model.json` beside it).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Photos, or folders of photos (JPEG, PNG, PPM/PGM; folders are walked recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Face boxes: a dlib XML whose `<image file=…>` entries name the images (relative to the
    /// XML's folder, or by file name). Without boxes, faces are found by the detector.
    #[arg(long, value_name = "XML", conflicts_with = "face_box")]
    pub boxes: Option<PathBuf>,
    /// One face box for every image: left,top,width,height in the upright photo's pixels.
    #[arg(long = "box", value_name = "X,Y,W,H", value_delimiter = ',')]
    pub face_box: Option<Vec<f32>>,
    /// The face detector's weights [default: DATA/models/yunet/yunet_n.pth, which `cargo
    /// xtask data fetch yunet` downloads].
    #[arg(long, value_name = "FILE")]
    pub detector: Option<PathBuf>,
    #[command(flatten)]
    pub root: crate::DataRoot,
    /// The detector's score threshold (√(class · objectness)).
    #[arg(long, default_value_t = 0.7)]
    pub score: f32,
    /// Detected faces smaller than this (their box's longer side, in the photo's pixels) are
    /// left out.
    #[arg(long, default_value_t = 0.0, value_name = "PIXELS")]
    pub min_face: f32,
    /// Only the photos of shard K of N (1-based): a photo's shard comes from a hash of its
    /// path, so N jobs given the same inputs share them with no coordination, each writing
    /// `predictions-K-of-N.json`.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Write only `predictions.json`, no drawn PNGs (for large folders).
    #[arg(long)]
    pub no_draw: bool,
    /// Output folder for the drawn PNGs and `predictions.json`.
    #[arg(long, default_value = "runs/predict")]
    pub out: PathBuf,
    /// Device: cpu, cuda / metal in a build with that feature, or auto (the build's GPU if the
    /// machine has one, else the CPU) [default: auto].
    #[arg(long)]
    pub device: Option<String>,
}

/// `--shard K/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub k: u64,
    pub n: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: need K/N with 1 ≤ K ≤ N");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (u64, u64) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if k == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

impl Shard {
    /// Whether `path` falls in this shard: FNV-1a of its text, mod N.
    fn holds(&self, path: &Path) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in path.to_string_lossy().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        h % self.n == self.k - 1
    }
}

/// One face's prediction, in the upright photo's pixels.
#[derive(Serialize)]
struct FaceOut {
    /// The face box, `[left, top, width, height]`: the detector's, or the one given (none for
    /// whole-photo parts).
    bbox: Option<[f32; 4]>,
    /// The detector's score.
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
    /// The detector's 5 points: right eye, left eye, nose tip, right and left mouth corners.
    #[serde(skip_serializing_if = "Option::is_none")]
    points5: Option<Vec<[f32; 2]>>,
    /// `[x, y]` per landmark, in layout order.
    points: Vec<[f32; 2]>,
}

/// One photo's faces.
#[derive(Serialize)]
struct ImageOut {
    image: String,
    /// The upright photo's size (after its EXIF orientation), `[width, height]`.
    size: [u32; 2],
    /// The EXIF orientation applied (1: none).
    orientation: u8,
    /// The drawn PNG in the output folder (none with `--no-draw`).
    #[serde(skip_serializing_if = "Option::is_none")]
    drawn: Option<String>,
    faces: Vec<FaceOut>,
}

/// Image file extensions `predict` reads from a folder.
const EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "ppm", "pgm", "pnm"];

/// Where a photo's faces come from.
enum Faces {
    /// The whole photo (Parts 1–2).
    Whole,
    /// These boxes.
    Boxes(Vec<FaceBox>),
    /// The detector.
    Detect,
}

pub fn run(args: &PredictArgs) -> anyhow::Result<()> {
    let card = ModelCard::beside(&args.checkpoint)?;
    let mut failed: Vec<String> = Vec::new();
    let report = |file: &Path, e: &dyn std::fmt::Display, failed: &mut Vec<String>| {
        eprintln!("skipped {}: {e}", file.display());
        failed.push(file.display().to_string());
    };

    // Every photo, checked before any weights are read: an unreadable one is reported and
    // left out; a photo that a box source has no box for is an error.
    let mut files = images(&args.inputs)?;
    if let Some(shard) = args.shard {
        files.retain(|f| shard.holds(f));
    }
    let by_xml = args.boxes.as_deref().map(xml_boxes).transpose()?;
    let one_box = match args.face_box.as_deref() {
        Some(&[x, y, w, h]) if w > 0.0 && h > 0.0 && [x, y, w, h].iter().all(|v| v.is_finite()) => {
            Some(FaceBox::new(x, y, w, h))
        }
        Some(b) => {
            bail!("--box {b:?}: need left,top,width,height with a positive width and height")
        }
        None => None,
    };
    let mut work: Vec<(PathBuf, Faces)> = Vec::with_capacity(files.len());
    for file in files {
        // The header alone: a file that is no image is named before any weights are read.
        if let Err(e) = fkd_data::img::image_size(&file) {
            report(&file, &e, &mut failed);
            continue;
        }
        let faces = if !card.crops_faces() {
            Faces::Whole
        } else if let Some(b) = one_box {
            Faces::Boxes(vec![b])
        } else if let Some(map) = &by_xml {
            let found = map
                .get(&file)
                .or_else(|| file.file_name().and_then(|n| map.get(Path::new(n))))
                .filter(|b| !b.is_empty());
            match found {
                Some(b) => Faces::Boxes(b.clone()),
                None => bail!(
                    "{}: no face box for this image in {} (give --box x,y,w,h, add it to the \
                     XML, or leave out --boxes to detect faces)",
                    file.display(),
                    args.boxes.as_deref().unwrap_or(Path::new("")).display()
                ),
            }
        } else {
            Faces::Detect
        };
        work.push((file, faces));
    }
    // The nets are loaded once every input is known.
    let device = crate::device_arg(args.device.as_deref())?;
    let mut landmarker = Landmarker::load(&args.checkpoint, &device)?;
    if work.iter().any(|(_, f)| matches!(f, Faces::Detect)) {
        let weights = args
            .detector
            .clone()
            .unwrap_or_else(|| args.root.path().join("models/yunet/yunet_n.pth"));
        if !weights.is_file() {
            bail!(
                "{}: no face detector weights there; run `cargo xtask data fetch yunet` (or \
                 give --detector FILE, or face boxes with --boxes XML or --box x,y,w,h)",
                weights.display()
            );
        }
        let config = DetectorConfig {
            score: args.score,
            ..DetectorConfig::default()
        };
        landmarker =
            landmarker.with_detector(Detector::load(&weights, &device)?.with_config(config));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let layout = card.whole_face().then(|| card.layout());

    // Photos in chunks, so the bar moves: each chunk is decoded in parallel and its faces
    // batched across photos.
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(work.len() as u64)
        .with_style(bar_style())
        .with_message("photos");
    let mut out = Vec::with_capacity(work.len());
    let mut n_faces = 0;
    for chunk in work.chunks(PHOTOS_AT_ONCE) {
        let decoded: Vec<_> = chunk
            .par_iter()
            .map(|(f, _)| fkd_data::photo::load_photo(f))
            .collect();
        let mut photos: Vec<(&PathBuf, &Faces, Photo)> = Vec::with_capacity(chunk.len());
        for ((file, faces), photo) in chunk.iter().zip(decoded) {
            match photo {
                Ok(p) => photos.push((file, faces, p)),
                Err(e) => report(file, &e, &mut failed),
            }
        }
        for (file, photo, found) in predict_chunk(&landmarker, &photos, args.min_face)? {
            let sets: Vec<(&[PixelPoint], image::Rgb<u8>)> = found
                .iter()
                .map(|f| (f.points.as_slice(), fkd_viz::PREDICTION))
                .collect();
            let k = out.len();
            let stem = file
                .file_stem()
                .map_or_else(|| format!("image{k}"), |s| s.to_string_lossy().into_owned());
            let drawn = if args.no_draw {
                None
            } else {
                let name = format!("{k:04}_{stem}.png");
                fkd_viz::save_png(
                    &fkd_viz::draw_landmarks_rgb(&photo.rgb, &sets, layout.as_ref(), 1),
                    args.out.join(&name),
                )?;
                Some(name)
            };
            n_faces += found.len();
            let xy = |p: &PixelPoint| [p.x, p.y];
            out.push(ImageOut {
                image: file.display().to_string(),
                size: [photo.rgb.width(), photo.rgb.height()],
                orientation: photo.orientation,
                drawn,
                faces: found
                    .iter()
                    .map(|f| FaceOut {
                        bbox: f.bbox.map(|b| [b.left, b.top, b.width, b.height]),
                        score: f.score,
                        points5: f.points5.as_ref().map(|p| p.iter().map(xy).collect()),
                        points: f.points.iter().map(xy).collect(),
                    })
                    .collect(),
            });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let name = match args.shard {
        Some(s) => format!("predictions-{}-of-{}.json", s.k, s.n),
        None => "predictions.json".to_string(),
    };
    let json = args.out.join(name);
    fkd_core::io::write_bytes_atomic(&json, serde_json::to_string_pretty(&out)?.as_bytes())?;
    let total = started.elapsed().as_secs_f64();
    println!(
        "{n_faces} faces in {} photos: {:.1} photos/s, {:.1} faces/s (decode, detect, crop, \
         network{}); {}",
        out.len(),
        out.len() as f64 / total.max(1e-9),
        n_faces as f64 / total.max(1e-9),
        if args.no_draw { "" } else { ", drawing" },
        json.display()
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} files could not be read (named above)",
            failed.len(),
            failed.len() + out.len()
        );
    }
    Ok(())
}

/// One predicted face of a photo, however its box was found.
struct Found {
    bbox: Option<FaceBox>,
    score: Option<f32>,
    points5: Option<Vec<PixelPoint>>,
    points: Vec<PixelPoint>,
}

/// The faces of a chunk of decoded photos: given boxes and whole photos batched together, the
/// detected ones through the detector.
fn predict_chunk<'a>(
    landmarker: &Landmarker,
    photos: &'a [(&'a PathBuf, &'a Faces, Photo)],
    min_face: f32,
) -> anyhow::Result<Vec<(&'a PathBuf, &'a Photo, Vec<Found>)>> {
    let given: Vec<(&GrayImage, &[FaceBox])> = photos
        .iter()
        .filter_map(|(_, faces, p)| match faces {
            Faces::Whole => Some((&p.gray, &[][..])),
            Faces::Boxes(b) => Some((&p.gray, b.as_slice())),
            Faces::Detect => None,
        })
        .collect();
    let mut given = landmarker.predict_batch(&given)?.into_iter();
    let to_detect: Vec<&Photo> = photos
        .iter()
        .filter(|(_, f, _)| matches!(f, Faces::Detect))
        .map(|(_, _, p)| p)
        .collect();
    let mut detected = if to_detect.is_empty() {
        Vec::new()
    } else {
        landmarker.detect_and_predict_batch(&to_detect, min_face)?
    }
    .into_iter();
    let mut out = Vec::with_capacity(photos.len());
    for (file, faces, photo) in photos {
        let found = match faces {
            Faces::Detect => detected
                .next()
                .unwrap_or_default()
                .into_iter()
                .map(|f: PhotoFace| Found {
                    bbox: Some(f.detection.bbox),
                    score: Some(f.detection.score),
                    points5: Some(f.detection.points.to_vec()),
                    points: f.points,
                })
                .collect(),
            _ => given
                .next()
                .unwrap_or_default()
                .into_iter()
                .map(|f| Found {
                    bbox: f.bbox,
                    score: None,
                    points5: None,
                    points: f.points,
                })
                .collect(),
        };
        out.push((*file, photo, found));
    }
    Ok(out)
}

/// Photos decoded and predicted together (their faces share the net's batches).
pub(crate) const PHOTOS_AT_ONCE: usize = 32;

/// Every image named on the command line, folders walked recursively (sorted).
fn images(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)?;
            found.sort();
            if found.is_empty() {
                bail!(
                    "{}: no images (.jpg, .png, .ppm) in this folder or below",
                    input.display()
                );
            }
            out.extend(found);
        } else if input.is_file() {
            out.push(input.clone());
        } else {
            bail!("{}: no such image or folder", input.display());
        }
    }
    Ok(out)
}

/// The image files in `dir` and every folder below it.
fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            found.push(path);
        }
    }
    Ok(())
}

/// The boxes of a dlib XML by image: full path (resolved against the XML's folder) and file
/// name, so an image given by another path still finds its boxes.
fn xml_boxes(xml: &Path) -> anyhow::Result<HashMap<PathBuf, Vec<FaceBox>>> {
    let base = xml.parent().unwrap_or(Path::new("."));
    let mut map: HashMap<PathBuf, Vec<FaceBox>> = HashMap::new();
    for entry in fkd_data::dlib_xml::read_dlib_xml(xml, Layout::IBUG68.n_points)? {
        let boxes: Vec<FaceBox> = entry
            .boxes
            .iter()
            .filter(|b| !b.ignore)
            .map(|b| b.bbox)
            .collect();
        let path = base.join(&entry.file);
        if let Some(name) = path.file_name() {
            map.entry(PathBuf::from(name))
                .or_default()
                .extend(boxes.iter().copied());
        }
        map.entry(path).or_default().extend(boxes);
    }
    Ok(map)
}
