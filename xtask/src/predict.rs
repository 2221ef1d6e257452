//! `cargo xtask predict`: run a trained checkpoint on photos. Each image (or every image in a
//! folder) is cropped to its face boxes (from a dlib XML or one `--box`; Parts 1–2 take the
//! whole photo), the net predicts the points, and they are drawn on the photo (PNG) and written
//! as JSON in the photo's pixels. The checkpoint's `model.json` says which part made it.

use crate::progress::bar_style;
use anyhow::{Context, bail};
use fkd_core::{FaceBox, Layout, PixelPoint};
use fkd_data::img::GrayImage;
use fkd_landmarker::{Landmarker, ModelCard};
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
    /// Images, or folders of images (JPEG, PNG, PPM/PGM).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Face boxes: a dlib XML whose `<image file=…>` entries name the images (relative to the
    /// XML's folder, or by file name).
    #[arg(long, value_name = "XML", conflicts_with = "face_box")]
    pub boxes: Option<PathBuf>,
    /// One face box for every image: left,top,width,height in pixels.
    #[arg(long = "box", value_name = "X,Y,W,H", value_delimiter = ',')]
    pub face_box: Option<Vec<f32>>,
    /// Output folder for the drawn PNGs and `predictions.json`.
    #[arg(long, default_value = "runs/predict")]
    pub out: PathBuf,
    /// Device: cpu, cuda / metal in a build with that feature, or auto (the build's GPU if the
    /// machine has one, else the CPU) [default: auto].
    #[arg(long)]
    pub device: Option<String>,
}

/// One face's prediction, in the photo's pixels.
#[derive(Serialize)]
struct FaceOut {
    /// The face box used, `[left, top, width, height]` (none for whole-photo parts).
    bbox: Option<[f32; 4]>,
    /// `[x, y]` per point, in layout order.
    points: Vec<[f32; 2]>,
}

/// One image's faces.
#[derive(Serialize)]
struct ImageOut {
    image: String,
    drawn: String,
    faces: Vec<FaceOut>,
}

/// Image file extensions `predict` reads from a folder.
const EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "ppm", "pgm", "pnm"];

pub fn run(args: &PredictArgs) -> anyhow::Result<()> {
    let card = ModelCard::beside(&args.checkpoint)?;

    // Every face to predict, checked before any work: an image without a box is an error.
    let files = images(&args.inputs)?;
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
    let mut boxes: Vec<Vec<FaceBox>> = Vec::with_capacity(files.len());
    for file in &files {
        // The header alone: a file that is no image is named before any weights are read.
        fkd_data::img::image_size(file)?;
        boxes.push(if !card.crops_faces() {
            Vec::new()
        } else if let Some(b) = one_box {
            vec![b]
        } else if let Some(map) = &by_xml {
            let found = map
                .get(file)
                .or_else(|| file.file_name().and_then(|n| map.get(Path::new(n))))
                .filter(|b| !b.is_empty());
            match found {
                Some(b) => b.clone(),
                None => bail!(
                    "{}: no face box for this image in {} (give --box x,y,w,h, or add it to the XML)",
                    file.display(),
                    args.boxes.as_deref().unwrap_or(Path::new("")).display()
                ),
            }
        } else {
            bail!(
                "{}: no face box: a {} checkpoint crops faces, so give --boxes XML or --box x,y,w,h",
                file.display(),
                card.part
            );
        });
    }
    // The net is loaded once every input is known to be usable: a bad input fails fast.
    let device = crate::device_arg(args.device.as_deref())?;
    let landmarker = Landmarker::load(&args.checkpoint, &device)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let layout = card.whole_face().then(|| card.layout());

    // Photos in chunks, so the bar moves: each chunk is decoded in parallel and its faces
    // batched across photos.
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(files.len() as u64)
        .with_style(bar_style())
        .with_message("photos");
    let mut out = Vec::with_capacity(files.len());
    let mut n_faces = 0;
    for (c, chunk) in files.chunks(PHOTOS_AT_ONCE).enumerate() {
        let first = c * PHOTOS_AT_ONCE;
        let photos = chunk
            .par_iter()
            .map(|f| fkd_data::img::load_gray(f))
            .collect::<Result<Vec<_>, _>>()?;
        let pairs: Vec<(&GrayImage, &[FaceBox])> = photos
            .iter()
            .zip(&boxes[first..first + chunk.len()])
            .map(|(p, b)| (p, b.as_slice()))
            .collect();
        let predicted = landmarker.predict_batch(&pairs)?;
        for (j, ((file, img), faces)) in chunk.iter().zip(&photos).zip(predicted).enumerate() {
            let k = first + j;
            let sets: Vec<(&[PixelPoint], image::Rgb<u8>)> = faces
                .iter()
                .map(|f| (f.points.as_slice(), fkd_viz::PREDICTION))
                .collect();
            let stem = file
                .file_stem()
                .map_or_else(|| format!("image{k}"), |s| s.to_string_lossy().into_owned());
            let drawn = format!("{k:04}_{stem}.png");
            fkd_viz::save_png(
                &fkd_viz::draw_landmarks(img, &sets, layout.as_ref(), 1),
                args.out.join(&drawn),
            )?;
            n_faces += faces.len();
            out.push(ImageOut {
                image: file.display().to_string(),
                drawn,
                faces: faces
                    .iter()
                    .map(|f| FaceOut {
                        bbox: f.bbox.map(|b| [b.left, b.top, b.width, b.height]),
                        points: f.points.iter().map(|p| [p.x, p.y]).collect(),
                    })
                    .collect(),
            });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let json = args.out.join("predictions.json");
    fkd_core::io::write_bytes_atomic(&json, serde_json::to_string_pretty(&out)?.as_bytes())?;
    let total = started.elapsed().as_secs_f64();
    println!(
        "{n_faces} faces in {} images: {:.1} faces/s, {:.1} images/s (decode, crop, network, \
         drawing); {}",
        files.len(),
        n_faces as f64 / total.max(1e-9),
        files.len() as f64 / total.max(1e-9),
        json.display()
    );
    Ok(())
}

/// Photos decoded and predicted together (their faces share the net's batches).
const PHOTOS_AT_ONCE: usize = 32;

/// Every image named on the command line, folders expanded (sorted, not recursive).
fn images(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("reading {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                bail!(
                    "{}: no images (.jpg, .png, .ppm) in this folder",
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
