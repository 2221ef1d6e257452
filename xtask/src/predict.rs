//! `cargo xtask predict`: run a trained checkpoint on photos. Each image (or every image in a
//! folder) is cropped to its face boxes (from a dlib XML or one `--box`; Parts 1–2 take the
//! whole photo), the net predicts the points, and they are drawn on the photo (PNG) and written
//! as JSON in the photo's pixels. The checkpoint's `model.json` says which part made it.

use crate::progress::bar_style;
use crate::runner::{self, ModelCard, Part};
use anyhow::{Context, bail};
use fkd_core::{FaceBox, Layout, PixelPoint};
use fkd_data::batch::Loader;
use fkd_data::dataset::Sample;
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
    match card.part.as_str() {
        "part1" => with_part(&crate::part1::part(), &card, args),
        "part2" => with_part(&crate::part2::part(), &card, args),
        "part3" => with_part(
            &crate::part3::Part3::from_card(&card, &args.checkpoint)?,
            &card,
            args,
        ),
        "part4" => with_part(
            &crate::part4::Part4::from_card(&card, &args.checkpoint)?,
            &card,
            args,
        ),
        other => bail!(
            "{}: a checkpoint of {other:?}, which `predict` does not know",
            args.checkpoint.display()
        ),
    }
}

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

fn with_part<P: Part>(part: &P, card: &ModelCard, args: &PredictArgs) -> anyhow::Result<()> {
    let needs_box = card.enlarge.is_some();

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
    let mut samples = Vec::new();
    let mut owner = Vec::new();
    for (k, file) in files.iter().enumerate() {
        let size = fkd_data::img::image_size(file)?;
        let boxes: Vec<Option<FaceBox>> = if !needs_box {
            vec![None]
        } else if let Some(b) = one_box {
            vec![Some(b)]
        } else if let Some(map) = &by_xml {
            let found = map
                .get(file)
                .or_else(|| file.file_name().and_then(|n| map.get(Path::new(n))))
                .filter(|b| !b.is_empty());
            match found {
                Some(b) => b.iter().copied().map(Some).collect(),
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
        };
        for (j, bbox) in boxes.into_iter().enumerate() {
            samples.push(Sample {
                image: file.clone(),
                size,
                points: Vec::new(),
                bbox,
                person: None,
                id: format!("{}#{j}", file.display()),
            });
            owner.push(k);
        }
    }
    // The net is loaded once every input is known to be usable: a bad input fails fast.
    let device = crate::device_arg(args.device.as_deref())?;
    let net = runner::load_net(part, &args.checkpoint, &device)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    // Predict in chunks, so the bar moves; each chunk decodes and crops in parallel.
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(samples.len() as u64)
        .with_style(bar_style())
        .with_message("faces");
    let mut points: Vec<Vec<PixelPoint>> = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(64) {
        let loader = Loader::new(chunk.to_vec(), part.step(None), 16).on(device.clone());
        let preds = if card.flip_test {
            fkd_train::predict_flip(&net, &loader)?
        } else {
            fkd_train::predict(&net, &loader)?
        };
        for p in &preds {
            points.push(runner::source_points(part, p)?);
        }
        bar.inc(chunk.len() as u64);
    }
    let predicted = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    // Draw and write, image by image.
    let layout = part.whole_face().then(|| part.layout());
    let mut out = Vec::with_capacity(files.len());
    for (k, file) in files.iter().enumerate() {
        let faces: Vec<usize> = (0..samples.len()).filter(|&i| owner[i] == k).collect();
        let img = fkd_data::img::load_gray(file)?;
        let sets: Vec<(&[PixelPoint], image::Rgb<u8>)> = faces
            .iter()
            .map(|&i| (points[i].as_slice(), fkd_viz::PREDICTION))
            .collect();
        let stem = file
            .file_stem()
            .map_or_else(|| format!("image{k}"), |s| s.to_string_lossy().into_owned());
        let drawn = format!("{k:04}_{stem}.png");
        fkd_viz::save_png(
            &fkd_viz::draw_landmarks(&img, &sets, layout.as_ref(), 1),
            args.out.join(&drawn),
        )?;
        out.push(ImageOut {
            image: file.display().to_string(),
            drawn,
            faces: faces
                .iter()
                .map(|&i| FaceOut {
                    bbox: samples[i].bbox.map(|b| [b.left, b.top, b.width, b.height]),
                    points: points[i].iter().map(|p| [p.x, p.y]).collect(),
                })
                .collect(),
        });
    }
    let json = args.out.join("predictions.json");
    fkd_core::io::write_bytes_atomic(&json, serde_json::to_string_pretty(&out)?.as_bytes())?;
    let total = started.elapsed().as_secs_f64();
    println!(
        "{} faces in {} images: {:.1} faces/s predicted (decode, crop, network), {:.1} images/s \
         with drawing; {}",
        samples.len(),
        files.len(),
        samples.len() as f64 / predicted.max(1e-9),
        files.len() as f64 / total.max(1e-9),
        json.display()
    );
    Ok(())
}
