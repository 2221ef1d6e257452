//! What is in a data folder: every annotation set found under it, parsed and checked against
//! its images. `cargo xtask data check` prints this; a user runs it after unpacking data to
//! learn, before any training, whether every file is readable.

use crate::boxes::{read_box_list, read_manifest, read_named_boxes};
use crate::dataset::{DataSet, LoadPolicy, Sample, check_face, for_each_xml_face, list_files};
use crate::img::image_size;
use crate::pts::read_pts;
use crate::{DataError, Result};
use fkd_core::Layout;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// One annotation set found under the data root.
#[derive(Debug)]
pub struct Row {
    /// The kind of set ("IMM .asf", "dlib XML", "300-W .pts", "300-W boxes", "crop manifest").
    pub kind: &'static str,
    /// Where it is, relative to the data root.
    pub path: PathBuf,
    /// Distinct images referenced (including rejected ones).
    pub images: usize,
    /// Faces accepted.
    pub faces: usize,
    /// The distinct numbers of points per accepted face (0: a box without landmarks).
    pub points_per_face: BTreeSet<usize>,
    /// Every file rejected, with why.
    pub rejected: Vec<DataError>,
}

impl Row {
    /// `58`, `68`, `0/68` (some faces are boxes only), or `-` when there are no landmarks.
    pub fn points_label(&self) -> String {
        if self.points_per_face.is_empty() {
            return "-".into();
        }
        let v: Vec<String> = self.points_per_face.iter().map(|n| n.to_string()).collect();
        v.join("/")
    }
}

/// How deep below the root [`scan`] looks for data.
const MAX_DEPTH: usize = 6;

/// Finds and checks every annotation set below `root`: folders of IMM `.asf` files, dlib/iBUG
/// XML files, folders of `.pts` files (each paired with the image of the same stem), 300-W box
/// lists (`bounding_boxes_*.csv`, with `*_names.txt` when present) and crop manifests
/// (`manifest_*.csv`). Bad files are reported in their row, not returned as errors: only an
/// unreadable root is an error.
pub fn scan(root: &Path) -> Result<Vec<Row>> {
    if !root.is_dir() {
        return Err(DataError::Dataset {
            path: root.to_path_buf(),
            reason: "no such data folder".into(),
        });
    }
    let mut dirs = Vec::new();
    collect_dirs(root, 0, &mut dirs)?;
    dirs.sort();
    let mut rows = Vec::new();
    for dir in &dirs {
        let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).to_path_buf();
        if !list_files(dir, "asf")?.is_empty() {
            rows.push(imm_row(dir, rel(dir)));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DataError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in &files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".xml") && is_dlib_xml(f) {
                rows.push(xml_row(f, rel(f)));
            } else if name.starts_with("bounding_boxes_") && name.ends_with(".csv") {
                rows.push(box_row(f, rel(f)));
            } else if name.starts_with("manifest_") && name.ends_with(".csv") {
                rows.push(manifest_row(f, rel(f)));
            }
        }
        let pts: Vec<PathBuf> = list_files(dir, "pts")?;
        if !pts.is_empty() {
            rows.push(pts_row(pts, rel(dir)));
        }
    }
    Ok(rows)
}

fn collect_dirs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    out.push(dir.to_path_buf());
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if path.is_dir() && !hidden {
            collect_dirs(&path, depth + 1, out)?;
        }
    }
    Ok(())
}

/// Whether an XML file is a dlib image data set (its root element is `<dataset>`).
fn is_dlib_xml(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 1024];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    String::from_utf8_lossy(&head[..n]).contains("<dataset")
}

fn from_dataset(kind: &'static str, path: PathBuf, loaded: Result<DataSet>) -> Row {
    match loaded {
        Ok(ds) => Row {
            kind,
            path,
            images: distinct_images(&ds.samples) + ds.skipped.len(),
            faces: ds.samples.len(),
            points_per_face: ds.samples.iter().map(|s| s.points.len()).collect(),
            rejected: ds.skipped,
        },
        Err(e) => Row {
            kind,
            path,
            images: 0,
            faces: 0,
            points_per_face: BTreeSet::new(),
            rejected: vec![e],
        },
    }
}

fn distinct_images(samples: &[Sample]) -> usize {
    samples
        .iter()
        .map(|s| &s.image)
        .collect::<BTreeSet<_>>()
        .len()
}

fn imm_row(dir: &Path, rel: PathBuf) -> Row {
    from_dataset("IMM .asf", rel, DataSet::imm(dir, LoadPolicy::Skip))
}

/// A dlib XML file, streamed: only counts, the distinct image names and the rejections are
/// kept, so a file of any size is checked in bounded memory (measured: 100,000 images of 68
/// points, see docs/architecture.md).
fn xml_row(xml: &Path, rel: PathBuf) -> Row {
    let mut row = Row {
        kind: "dlib XML",
        path: rel,
        images: 0,
        faces: 0,
        points_per_face: BTreeSet::new(),
        rejected: Vec::new(),
    };
    let mut images = HashSet::new();
    let streamed = for_each_xml_face(xml, Layout::IBUG68, |face| {
        match face {
            Ok(s) => {
                row.faces += 1;
                row.points_per_face.insert(s.points.len());
                images.insert(s.image);
            }
            Err(e) => row.rejected.push(e),
        }
        Ok(())
    });
    // Images with an accepted face, and those of the faces rejected.
    row.images = images.len() + row.rejected.len();
    if let Err(e) = streamed {
        row.rejected.push(e);
    } else if row.faces == 0 && row.rejected.is_empty() {
        row.rejected.push(DataError::Dataset {
            path: xml.to_path_buf(),
            reason: "no faces in this file".into(),
        });
    }
    row
}

/// A folder of `.pts` files, each with an image of the same stem beside it.
fn pts_row(files: Vec<PathBuf>, rel: PathBuf) -> Row {
    let results: Vec<Result<usize>> = files
        .par_iter()
        .map(|pts| {
            let points = read_pts(pts)?;
            let image = ["jpg", "png", "ppm", "jpeg", "pgm", "bmp"]
                .iter()
                .map(|e| pts.with_extension(e))
                .find(|p| p.is_file())
                .ok_or_else(|| DataError::Dataset {
                    path: pts.clone(),
                    reason: "no image with this name (.jpg, .png, .ppm) beside it".into(),
                })?;
            let size = image_size(&image)?;
            check_face(pts, 0, size, &points, None)?;
            Ok(points.len())
        })
        .collect();
    let mut row = Row {
        kind: "300-W .pts",
        path: rel,
        images: files.len(),
        faces: 0,
        points_per_face: BTreeSet::new(),
        rejected: Vec::new(),
    };
    for r in results {
        match r {
            Ok(n) => {
                row.faces += 1;
                row.points_per_face.insert(n);
            }
            Err(e) => row.rejected.push(e),
        }
    }
    row
}

/// A 300-W box list, named through `<prefix>_names.txt` where that file exists.
fn box_row(csv: &Path, rel: PathBuf) -> Row {
    let names = csv.to_string_lossy();
    let names = names
        .strip_suffix("_gt.csv")
        .or_else(|| names.strip_suffix("_det.csv"))
        .map(|p| PathBuf::from(format!("{p}_names.txt")))
        .filter(|p| p.is_file());
    let n = match names {
        Some(names) => read_named_boxes(csv, &names).map(|v| v.len()),
        None => read_box_list(csv).map(|v| v.len()),
    };
    counted("300-W boxes", rel, n)
}

fn manifest_row(csv: &Path, rel: PathBuf) -> Row {
    counted("crop manifest", rel, read_manifest(csv).map(|v| v.len()))
}

fn counted(kind: &'static str, path: PathBuf, n: Result<usize>) -> Row {
    let (images, rejected) = match n {
        Ok(n) => (n, vec![]),
        Err(e) => (0, vec![e]),
    };
    Row {
        kind,
        path,
        images,
        faces: images,
        // Box lists and manifests carry no landmarks.
        points_per_face: BTreeSet::new(),
        rejected,
    }
}
