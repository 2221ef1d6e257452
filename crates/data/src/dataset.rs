//! Data sets: lists of annotated faces read from an IMM folder or a dlib/iBUG XML file,
//! checked against their images, with the splits the write-up uses.
//!
//! A [`DataSet`] holds [`Sample`]s: an image path, its size (read from the header, not decoded),
//! the face's points in the image's pixels and, for XML sets, the face box. Loading checks every
//! sample (image present and readable, points finite and near the image, box overlapping it) and
//! applies a [`LoadPolicy`]: stop at the first bad sample, or skip it, count it and log a warning.

use crate::asf::read_asf;
use crate::dlib_xml::{DlibXmlReader, XmlImage};
use crate::img::image_size;
use crate::{DataError, Result};
use fkd_core::{FaceBox, ImageSize, Layout, PixelPoint};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// What a loader does with a sample that fails its checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadPolicy {
    /// Fail the whole load with the first bad sample's error (the default: bad data is a bug
    /// in the data set that the user should see).
    #[default]
    Strict,
    /// Leave the bad sample out, log a warning, and keep its error in [`DataSet::skipped`].
    Skip,
}

/// One annotated face.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The image file.
    pub image: PathBuf,
    /// The image's size in pixels (from its header).
    pub size: ImageSize,
    /// The face's landmarks in the image's pixel coordinates, in layout order. Empty for a face
    /// that has a box but no annotation (test sets).
    pub points: Vec<PixelPoint>,
    /// The face box, where the annotation gives one.
    pub bbox: Option<FaceBox>,
    /// The IMM person number (1–40); `None` for other data sets.
    pub person: Option<u32>,
    /// A short name for reports: `01-1m` for IMM, `afw/123.jpg#0` for XML faces.
    pub id: String,
    /// Pixels of this image per pixel of the photo its points were annotated on, horizontally:
    /// below 1 for a face cut out of a larger photo and scaled down (a crop manifest's
    /// `scale_x`, see [`DataSet::attach_manifest`]), else 1. An offset that belongs to the
    /// annotation rather than to the image (a model card's annotation offset) is given in the
    /// annotated photo's pixels and scales by it.
    pub photo_scale: f32,
}

impl Sample {
    /// Whether the face has landmarks (training and validation faces do; test faces may not).
    pub fn is_annotated(&self) -> bool {
        !self.points.is_empty()
    }
}

/// A list of faces in one layout, with the samples a [`LoadPolicy::Skip`] load left out.
#[derive(Debug)]
pub struct DataSet {
    /// Name for reports ("imm", or the XML file's stem).
    pub name: String,
    /// The landmark layout of every annotated sample.
    pub layout: Layout,
    /// The faces, in file order.
    pub samples: Vec<Sample>,
    /// Why each skipped sample was left out (empty under [`LoadPolicy::Strict`]).
    pub skipped: Vec<DataError>,
}

/// Persons of the IMM database used for training by the write-up; 33–40 validate.
pub const IMM_TRAIN_PERSONS: std::ops::RangeInclusive<u32> = 1..=32;

/// How far outside its image a landmark may lie before it is rejected, as a fraction of the
/// image's size. 300-W and dlib annotate occluded jaw points a little outside the frame, so only
/// points that cannot belong to the image are errors.
const POINT_MARGIN: f32 = 0.5;

impl DataSet {
    /// Reads the IMM face database from `dir`: every `*.asf` file with its host image
    /// (`NN-Tg.jpg`), 58 points converted from relative to pixel coordinates.
    pub fn imm(dir: &Path, policy: LoadPolicy) -> Result<DataSet> {
        let mut asf_files = list_files(dir, "asf")?;
        asf_files.sort();
        if asf_files.is_empty() {
            return Err(DataError::Dataset {
                path: dir.to_path_buf(),
                reason: "no .asf files: this is not the IMM face database folder".into(),
            });
        }
        let results: Vec<Result<Sample>> = asf_files.par_iter().map(|f| imm_sample(f)).collect();
        let (samples, skipped) = apply_policy(results, policy)?;
        Ok(DataSet {
            name: "imm".into(),
            layout: Layout::IMM58,
            samples,
            skipped,
        })
    }

    /// Reads a dlib/iBUG XML file (`labels_ibug_300W_train.xml` and kin): one sample per
    /// `<box>` not marked `ignore`. Image paths are resolved against the XML's folder.
    /// Boxes without parts become unannotated samples (test files give boxes only).
    pub fn dlib_xml(xml: &Path, layout: Layout, policy: LoadPolicy) -> Result<DataSet> {
        let (mut samples, mut skipped) = (Vec::new(), Vec::new());
        for_each_xml_face(xml, layout, |face| {
            keep(face, policy, &mut samples, &mut skipped)
        })?;
        if samples.is_empty() {
            return Err(DataError::Dataset {
                path: xml.to_path_buf(),
                reason: "no faces in this file".into(),
            });
        }
        let name = xml
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(DataSet {
            name,
            layout,
            samples,
            skipped,
        })
    }

    /// Reads a crop manifest (`manifest_*.csv`, [`crate::boxes::read_manifest`]) and sets each
    /// sample's [`Sample::photo_scale`] from the row of its image (rows name files relative to
    /// the manifest's folder). A sample whose image has no row keeps its scale: it is a photo,
    /// not a crop. Returns how many samples matched a row.
    pub fn attach_manifest(&mut self, manifest: &Path) -> Result<usize> {
        let base = manifest.parent().unwrap_or(Path::new("."));
        let scales: std::collections::HashMap<PathBuf, f32> =
            crate::boxes::read_manifest(manifest)?
                .into_iter()
                .map(|row| (base.join(&row.file), row.scale_x))
                .collect();
        let mut matched = 0;
        for s in &mut self.samples {
            if let Some(&scale) = scales.get(&s.image) {
                s.photo_scale = scale;
                matched += 1;
            }
        }
        Ok(matched)
    }

    /// Number of faces.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no faces.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The write-up's IMM split: persons 1–32 train, 33–40 validate (192 / 48 images).
    /// Samples without a person number go to training.
    pub fn split_imm_persons(&self) -> (DataSet, DataSet) {
        self.partition(|s| s.person.is_none_or(|p| IMM_TRAIN_PERSONS.contains(&p)))
    }

    /// A seeded random split: `valid_fraction` of the faces (rounded) validate, the rest train.
    /// The same seed gives the same split on every machine. Faces of one image stay together,
    /// so a photo with several faces never leaks across the split.
    pub fn split_seeded(&self, valid_fraction: f64, seed: u64) -> (DataSet, DataSet) {
        let mut images: Vec<&Path> = self.samples.iter().map(|s| s.image.as_path()).collect();
        images.dedup();
        images.sort();
        images.dedup();
        images.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n_valid = ((images.len() as f64) * valid_fraction.clamp(0.0, 1.0)).round() as usize;
        let valid: std::collections::HashSet<&Path> = images[..n_valid].iter().copied().collect();
        self.partition(|s| !valid.contains(s.image.as_path()))
    }

    /// Splits into (those where `train` holds, the rest), keeping order.
    fn partition(&self, train: impl Fn(&Sample) -> bool) -> (DataSet, DataSet) {
        let (a, b): (Vec<Sample>, Vec<Sample>) =
            self.samples.iter().cloned().partition(|s| train(s));
        let with = |suffix: &str, samples| DataSet {
            name: format!("{}-{suffix}", self.name),
            layout: self.layout,
            samples,
            skipped: Vec::new(),
        };
        (with("train", a), with("valid", b))
    }
}

/// One IMM sample from its `.asf` file: the host image must exist beside it.
fn imm_sample(asf: &Path) -> Result<Sample> {
    let shape = read_asf(asf)?;
    if shape.points.len() != Layout::IMM58.n_points {
        return Err(DataError::PointCount {
            path: asf.to_path_buf(),
            line: 0,
            expected: Layout::IMM58.n_points,
            found: shape.points.len(),
        });
    }
    let image = match &shape.host_image {
        Some(name) => asf.with_file_name(name),
        None => asf.with_extension("jpg"),
    };
    let size = image_size(&image)?;
    let points = shape.pixel_points(size);
    let stem = asf
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let person = stem.split('-').next().and_then(|p| p.parse::<u32>().ok());
    if person.is_none() {
        return Err(DataError::Dataset {
            path: asf.to_path_buf(),
            reason: "IMM file names start with the person number, as in 01-1m.asf".into(),
        });
    }
    Ok(Sample {
        image,
        size,
        points,
        bbox: None,
        person,
        id: stem,
        photo_scale: 1.0,
    })
}

/// Checks one face against its image: finite points near the image, a box that overlaps it.
pub(crate) fn check_face(
    file: &Path,
    line: usize,
    size: ImageSize,
    points: &[PixelPoint],
    bbox: Option<FaceBox>,
) -> Result<()> {
    let (w, h) = (size.width as f32, size.height as f32);
    for p in points {
        for (v, extent) in [(p.x, w), (p.y, h)] {
            if !v.is_finite() {
                return Err(DataError::Coordinate {
                    path: file.to_path_buf(),
                    line,
                    value: v,
                    reason: "is not finite".into(),
                });
            }
            if v < -POINT_MARGIN * extent || v > (1.0 + POINT_MARGIN) * extent {
                return Err(DataError::Coordinate {
                    path: file.to_path_buf(),
                    line,
                    value: v,
                    reason: format!("lies far outside the {size} image"),
                });
            }
        }
    }
    if let Some(b) = bbox {
        if !b.is_valid() {
            return Err(DataError::malformed(
                file,
                line,
                format!("face box {b} has no area"),
            ));
        }
        if !b.overlaps(size) {
            return Err(DataError::BoxOutside {
                path: file.to_path_buf(),
                bbox: b,
                size,
            });
        }
    }
    Ok(())
}

/// Keeps the good samples; under `Strict` returns the first error, under `Skip` logs and
/// collects the errors.
/// How many `<image>` entries of a dlib XML file are checked together: the file is read as a
/// stream, so the memory a load needs is its result plus one such chunk, whatever the file's
/// size.
const XML_CHUNK: usize = 2048;

/// Streams the faces of a dlib XML file (every `<box>` not marked `ignore`, image paths resolved
/// against the XML's folder, each checked against its image's header) to `sink`, in file order:
/// `Ok(sample)` or the error that rejects the face. An error of the file itself (malformed XML,
/// wrong part count) or one that `sink` returns stops the stream and is returned. Images are
/// checked in parallel a chunk at a time.
pub(crate) fn for_each_xml_face(
    xml: &Path,
    layout: Layout,
    mut sink: impl FnMut(Result<Sample>) -> Result<()>,
) -> Result<()> {
    let base = xml.parent().unwrap_or(Path::new("."));
    let mut reader = DlibXmlReader::open(xml, layout.n_points)?;
    let mut chunk = Vec::with_capacity(XML_CHUNK);
    loop {
        chunk.clear();
        for image in reader.by_ref().take(XML_CHUNK) {
            chunk.push(image?);
        }
        if chunk.is_empty() {
            return Ok(());
        }
        let faces: Vec<Vec<Result<Sample>>> = chunk
            .par_iter()
            .map(|entry| xml_faces(xml, base, entry))
            .collect();
        for face in faces.into_iter().flatten() {
            sink(face)?;
        }
    }
}

/// The faces of one `<image>` entry, or the error of its image.
fn xml_faces(xml: &Path, base: &Path, entry: &XmlImage) -> Vec<Result<Sample>> {
    let image = base.join(&entry.file);
    let size = match image_size(&image) {
        Ok(size) => size,
        Err(e) => return vec![Err(e)],
    };
    entry
        .boxes
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.ignore)
        .map(|(k, b)| {
            let points = b.points.clone().unwrap_or_default();
            check_face(xml, b.line, size, &points, Some(b.bbox))?;
            Ok(Sample {
                image: image.clone(),
                size,
                points,
                bbox: Some(b.bbox),
                person: None,
                id: format!("{}#{k}", entry.file),
                photo_scale: 1.0,
            })
        })
        .collect()
}

pub(crate) fn apply_policy<T>(
    results: Vec<Result<T>>,
    policy: LoadPolicy,
) -> Result<(Vec<T>, Vec<DataError>)> {
    let mut good = Vec::with_capacity(results.len());
    let mut bad = Vec::new();
    for r in results {
        keep(r, policy, &mut good, &mut bad)?;
    }
    Ok((good, bad))
}

/// [`apply_policy`] for one result: a good sample joins `good`; a bad one is the returned error
/// ([`LoadPolicy::Strict`]) or is logged and joins `bad` ([`LoadPolicy::Skip`]).
fn keep<T>(
    result: Result<T>,
    policy: LoadPolicy,
    good: &mut Vec<T>,
    bad: &mut Vec<DataError>,
) -> Result<()> {
    match result {
        Ok(s) => good.push(s),
        Err(e) if policy == LoadPolicy::Skip => {
            tracing::warn!("skipping a sample: {e}");
            bad.push(e);
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The files in `dir` (not recursive) with extension `ext`, unsorted.
pub(crate) fn list_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case(ext))
        {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(image: &str, person: Option<u32>) -> Sample {
        Sample {
            image: PathBuf::from(image),
            size: ImageSize::new(10, 10),
            points: vec![PixelPoint::new(1.0, 1.0)],
            bbox: None,
            person,
            id: image.into(),
            photo_scale: 1.0,
        }
    }

    fn set(samples: Vec<Sample>) -> DataSet {
        DataSet {
            name: "t".into(),
            layout: Layout::IMM58,
            samples,
            skipped: vec![],
        }
    }

    #[test]
    fn imm_person_split() {
        let ds = set((1..=40)
            .map(|p| sample(&format!("{p}.jpg"), Some(p)))
            .collect());
        let (train, valid) = ds.split_imm_persons();
        assert_eq!((train.len(), valid.len()), (32, 8));
        assert!(valid.samples.iter().all(|s| s.person.unwrap() >= 33));
        assert_eq!(valid.name, "t-valid");
    }

    #[test]
    fn seeded_split_is_reproducible_and_keeps_images_together() {
        let mut samples: Vec<Sample> = (0..50).map(|i| sample(&format!("{i}.jpg"), None)).collect();
        samples.push(sample("7.jpg", None)); // a second face in image 7
        let ds = set(samples);
        let (t1, v1) = ds.split_seeded(0.2, 42);
        let (t2, v2) = ds.split_seeded(0.2, 42);
        assert_eq!(v1.samples, v2.samples);
        assert_eq!(t1.samples, t2.samples);
        assert_eq!(t1.len() + v1.len(), 51);
        assert_eq!(
            v1.samples
                .iter()
                .map(|s| &s.image)
                .collect::<std::collections::HashSet<_>>()
                .len(),
            10
        );
        let in_valid = v1
            .samples
            .iter()
            .filter(|s| s.image == Path::new("7.jpg"))
            .count();
        assert!(in_valid == 0 || in_valid == 2);
        let (_, v3) = ds.split_seeded(0.2, 43);
        assert_ne!(v1.samples, v3.samples);
    }

    #[test]
    fn face_checks_name_the_problem() {
        let f = Path::new("a.xml");
        let size = ImageSize::new(100, 100);
        let ok = [PixelPoint::new(-10.0, 120.0)];
        assert!(check_face(f, 3, size, &ok, None).is_ok());
        let far = [PixelPoint::new(400.0, 1.0)];
        assert!(matches!(
            check_face(f, 3, size, &far, None),
            Err(DataError::Coordinate { line: 3, .. })
        ));
        let nan = [PixelPoint::new(f32::NAN, 1.0)];
        assert!(matches!(
            check_face(f, 4, size, &nan, None),
            Err(DataError::Coordinate { line: 4, .. })
        ));
        let outside = FaceBox::new(200.0, 0.0, 10.0, 10.0);
        assert!(matches!(
            check_face(f, 5, size, &[], Some(outside)),
            Err(DataError::BoxOutside { .. })
        ));
    }

    #[test]
    fn policy_strict_stops_skip_counts() {
        let rs = || vec![Ok(1), Err(DataError::malformed("x", 2, "bad")), Ok(3)];
        assert!(apply_policy(rs(), LoadPolicy::Strict).is_err());
        let (good, bad) = apply_policy(rs(), LoadPolicy::Skip).unwrap();
        assert_eq!(good, vec![1, 3]);
        assert_eq!(bad.len(), 1);
    }
}
