//! The corpus of broken inputs in `fixtures/broken/`, one table row per file: each file is
//! loaded with the loader a user would hit, and must either be refused with the right
//! [`DataError`] variant, a message that names the file, and the line where the format has
//! lines, or be accepted (CRLF line ends, a UTF-8 BOM, a 16-bit PNG, ...) and load to what its
//! clean twin loads to. No file may panic, hang or allocate what its header claims: every row
//! must finish well within [`TIME_LIMIT`]. `fixtures/broken/make_images.py` writes the images.

use fkd_core::layout::{Ocular, Path as Contour};
use fkd_core::{FaceBox, ImageSize, Layout, PixelPoint};
use fkd_data::DataError;
use fkd_data::asf::{AsfShape, read_asf};
use fkd_data::boxes::read_box_list;
use fkd_data::dataset::{DataSet, LoadPolicy, Sample};
use fkd_data::dlib_xml::{XmlImage, read_dlib_xml};
use fkd_data::img::{GrayImage, image_size, load_gray};
use fkd_data::pts::read_pts;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Far more than any row needs (each takes milliseconds); a loader that expanded an entity
/// bomb or decoded a 3.6-gigapixel image would not make it.
const TIME_LIMIT: Duration = Duration::from_secs(5);

/// The XML fixtures annotate 3 points per face, to keep the files small.
const TRI3: Layout = Layout {
    name: "tri3",
    n_points: 3,
    paths: &[Contour {
        name: "face",
        start: 0,
        len: 3,
        closed: true,
    }],
    mirror: &[1, 0, 2],
    ocular: Ocular::Corners(0, 1),
};

/// The loader a user would hit for each kind of file.
#[derive(Clone, Copy, Debug)]
enum Loader {
    /// `asf::read_asf`.
    Asf,
    /// `pts::read_pts`.
    Pts,
    /// `boxes::read_box_list`.
    Boxes,
    /// `dlib_xml::read_dlib_xml` with 3 points per box.
    Xml,
    /// `DataSet::dlib_xml` (3 points, strict): the XML checked against its images.
    Faces,
    /// `img::load_gray`.
    Gray,
    /// `img::image_size` (header only).
    Size,
}

/// What a loader returned.
#[derive(Debug, PartialEq)]
enum Loaded {
    Asf(AsfShape),
    Points(Vec<PixelPoint>),
    Boxes(Vec<FaceBox>),
    Xml(Vec<XmlImage>),
    Faces(Vec<Sample>),
    Image(GrayImage),
    Size(ImageSize),
}

impl Loader {
    fn load(self, path: &Path) -> Result<Loaded, DataError> {
        Ok(match self {
            Loader::Asf => Loaded::Asf(read_asf(path)?),
            Loader::Pts => Loaded::Points(read_pts(path)?),
            Loader::Boxes => Loaded::Boxes(read_box_list(path)?),
            Loader::Xml => Loaded::Xml(read_dlib_xml(path, TRI3.n_points)?),
            Loader::Faces => {
                Loaded::Faces(DataSet::dlib_xml(path, TRI3, LoadPolicy::Strict)?.samples)
            }
            Loader::Gray => Loaded::Image(load_gray(path)?),
            Loader::Size => Loaded::Size(image_size(path)?),
        })
    }
}

/// The variants of [`DataError`] a file can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Io,
    Malformed,
    PointCount,
    Coordinate,
    Image,
    BoxOutside,
}

fn kind(e: &DataError) -> Option<Kind> {
    Some(match e {
        DataError::Io { .. } => Kind::Io,
        DataError::Malformed { .. } => Kind::Malformed,
        DataError::PointCount { .. } => Kind::PointCount,
        DataError::Coordinate { .. } => Kind::Coordinate,
        DataError::Image { .. } => Kind::Image,
        DataError::BoxOutside { .. } => Kind::BoxOutside,
        _ => return None,
    })
}

fn line(e: &DataError) -> Option<usize> {
    match e {
        DataError::Malformed { line, .. }
        | DataError::PointCount { line, .. }
        | DataError::Coordinate { line, .. } => Some(*line),
        _ => None,
    }
}

/// What a row expects.
enum Want {
    /// Refused with this variant, at this line (`None`: the variant has no line), with a
    /// message that names `names` (the row's own file when empty) and contains `says`.
    Refused {
        kind: Kind,
        line: Option<usize>,
        names: &'static str,
        says: &'static str,
    },
    /// Accepted, loading to exactly what the named clean file loads to.
    SameAs(&'static str),
    /// Accepted, and the check holds.
    Holds(fn(&Loaded) -> bool),
}

/// Refused at `line` with a message containing `says`.
const fn at(kind: Kind, line: usize, says: &'static str) -> Want {
    Want::Refused {
        kind,
        line: Some(line),
        names: "",
        says,
    }
}

/// Refused by a variant without a line, naming `names` (empty: the row's file).
const fn whole(kind: Kind, names: &'static str, says: &'static str) -> Want {
    Want::Refused {
        kind,
        line: None,
        names,
        says,
    }
}

use Kind::*;
use Loader::*;

/// `(file in fixtures/broken, loader, expected outcome)`.
#[rustfmt::skip]
const CASES: &[(&str, Loader, Want)] = &[
    // IMM .asf: 3 points, relative coordinates.
    ("asf_clean.asf", Asf, Want::Holds(asf_clean)),
    ("asf_crlf.asf", Asf, Want::SameAs("asf_clean.asf")),
    ("asf_bom.asf", Asf, Want::SameAs("asf_clean.asf")),
    ("asf_empty.asf", Asf, at(Malformed, 0, "no point-count line")),
    ("asf_truncated.asf", Asf, at(PointCount, 2, "expected 3 points, found 2")),
    ("asf_wrong_count.asf", Asf, at(PointCount, 1, "expected 4 points, found 3")),
    ("asf_huge_count.asf", Asf, at(PointCount, 2, "found 1")),
    ("asf_nan.asf", Asf, at(Coordinate, 4, "not finite")),
    ("asf_inf.asf", Asf, at(Coordinate, 3, "not finite")),
    ("asf_negative.asf", Asf, at(Coordinate, 5, "outside [0, 1]")),
    ("asf_far_outside.asf", Asf, at(Coordinate, 3, "outside [0, 1]")),
    // 300-W .pts: pixel coordinates, not checked against an image here.
    ("pts_clean.pts", Pts, Want::Holds(pts_clean)),
    ("pts_crlf.pts", Pts, Want::SameAs("pts_clean.pts")),
    ("pts_bom.pts", Pts, Want::SameAs("pts_clean.pts")),
    ("pts_truncated_header.pts", Pts, at(Malformed, 1, "file ends before")),
    ("pts_truncated.pts", Pts, at(PointCount, 2, "expected 3 points, found 2")),
    ("pts_wrong_count.pts", Pts, at(PointCount, 2, "expected 68 points, found 3")),
    ("pts_huge_count.pts", Pts, at(PointCount, 2, "found 1")),
    ("pts_nan.pts", Pts, at(Coordinate, 5, "not finite")),
    ("pts_inf.pts", Pts, at(Coordinate, 6, "not finite")),
    // 300-W annotates occluded points a little outside the frame.
    ("pts_negative.pts", Pts, Want::Holds(pts_negative)),
    // 300-W box lists.
    ("boxes_clean.csv", Boxes, Want::Holds(boxes_clean)),
    ("boxes_crlf.csv", Boxes, Want::SameAs("boxes_clean.csv")),
    ("boxes_bom.csv", Boxes, Want::SameAs("boxes_clean.csv")),
    ("boxes_truncated.csv", Boxes, at(Malformed, 2, "expected `xmin ymin xmax ymax`")),
    ("boxes_nan.csv", Boxes, at(Coordinate, 2, "(ymin) is not finite")),
    ("boxes_inf.csv", Boxes, at(Coordinate, 2, "(xmax) is not finite")),
    // Finite corners, but xmax - xmin overflows f32 (found by the `box_list` fuzz target).
    ("boxes_overflow.csv", Boxes, at(Malformed, 2, "box too large")),
    // A detector's box may stick out of the image.
    ("boxes_negative.csv", Boxes, Want::Holds(boxes_negative)),
    // dlib XML, parsed alone.
    ("xml_clean.xml", Xml, Want::Holds(xml_clean)),
    ("xml_crlf.xml", Xml, Want::SameAs("xml_clean.xml")),
    ("xml_bom.xml", Xml, Want::SameAs("xml_clean.xml")),
    ("xml_truncated.xml", Xml, at(Malformed, 7, "file ends inside <box>")),
    ("xml_wrong_count.xml", Xml, at(PointCount, 5, "expected 3 points, found 2")),
    ("xml_nan.xml", Xml, at(Coordinate, 7, "(<part> attribute x) is not finite")),
    ("xml_inf.xml", Xml, at(Coordinate, 8, "(<part> attribute y) is not finite")),
    ("xml_unknown_tag.xml", Xml, at(Malformed, 6, "unexpected <keypoint> inside <box>")),
    ("xml_box_no_top.xml", Xml, at(Malformed, 5, "<box> has no \"top\" attribute")),
    ("xml_part_no_x.xml", Xml, at(Malformed, 7, "<part> has no \"x\" attribute")),
    ("xml_part_no_name.xml", Xml, at(Malformed, 8, "<part> has no \"name\" attribute")),
    ("xml_duplicate_part.xml", Xml, at(Malformed, 7, "part \"00\" appears twice")),
    // Entities declared in a DOCTYPE are never expanded: the reference is refused.
    ("xml_entity_bomb.xml", Xml, at(Malformed, 14, "unknown entity &i;")),
    ("xml_entity_bomb_attr.xml", Xml, at(Malformed, 14, "unrecognized entity `i`")),
    ("xml_external_entity.xml", Xml, at(Malformed, 6, "unknown entity &secret;")),
    // dlib XML checked against its images.
    ("xml_clean.xml", Faces, Want::Holds(faces_clean)),
    ("xml_crlf.xml", Faces, Want::SameAs("xml_clean.xml")),
    ("xml_negative.xml", Faces, Want::Holds(faces_negative)),
    ("xml_far_outside.xml", Faces, at(Coordinate, 5, "lies far outside the 8x8 image")),
    ("xml_box_outside.xml", Faces, whole(BoxOutside, "", "lies outside")),
    ("xml_missing_image.xml", Faces, whole(Io, "no_such_face.pgm", "")),
    ("xml_huge_image.xml", Faces, whole(Image, "img_huge.png", "pixel limit")),
    // Images.
    ("face.pgm", Gray, Want::Holds(gray_face)),
    ("img_gray16.png", Gray, Want::Holds(gray_16bit)),
    ("img_gray16.png", Size, Want::Holds(size_3x2)),
    ("img_cmyk.jpg", Gray, Want::Holds(gray_cmyk)),
    ("img_cmyk.jpg", Size, Want::Holds(size_8x8)),
    // The header is whole, so the size can be read; the pixels cannot.
    ("img_truncated.png", Gray, whole(Image, "", "")),
    ("img_truncated.png", Size, Want::Holds(size_3x2)),
    ("img_huge.png", Gray, whole(Image, "", "pixel limit")),
    ("img_huge.png", Size, whole(Image, "", "pixel limit")),
    ("img_huge.pgm", Gray, whole(Image, "", "pixel limit")),
    ("img_huge.pgm", Size, whole(Image, "", "pixel limit")),
    ("img_zero_size.png", Gray, whole(Image, "", "")),
    ("img_zero_size.png", Size, whole(Image, "", "")),
    ("img_zero_size.pgm", Gray, whole(Image, "", "has no pixels")),
    ("img_zero_size.pgm", Size, whole(Image, "", "has no pixels")),
    ("../images/not_an_image.jpg", Gray, whole(Image, "", "")),
    ("../images/not_an_image.jpg", Size, whole(Image, "", "")),
    ("img_missing.png", Gray, whole(Io, "", "")),
    ("img_missing.png", Size, whole(Io, "", "")),
];

fn asf_clean(l: &Loaded) -> bool {
    matches!(l, Loaded::Asf(s) if s.points.len() == 3
        && s.points[1].rel == fkd_core::NormPoint::new(0.5, 0.25)
        && s.host_image.as_deref() == Some("face.pgm"))
}

fn pts_clean(l: &Loaded) -> bool {
    let want = [(2.0, 3.0), (5.0, 3.0), (4.0, 6.0)].map(|(x, y)| PixelPoint::new(x, y));
    matches!(l, Loaded::Points(p) if p[..] == want)
}

fn pts_negative(l: &Loaded) -> bool {
    matches!(l, Loaded::Points(p) if p.len() == 3
        && p[0] == PixelPoint::new(-2.5, 3.0)
        && p[1] == PixelPoint::new(5.0, -0.75))
}

fn boxes_clean(l: &Loaded) -> bool {
    matches!(l, Loaded::Boxes(b) if b[..] == [
        FaceBox::from_corners(10.0, 20.0, 110.0, 100.0),
        FaceBox::from_corners(1.5, 2.5, 3.5, 5.5),
    ])
}

fn boxes_negative(l: &Loaded) -> bool {
    matches!(l, Loaded::Boxes(b) if b.len() == 2
        && b[0] == FaceBox::from_corners(-10.0, -20.0, 110.0, 100.0))
}

fn xml_clean(l: &Loaded) -> bool {
    let want = [(2.0, 3.0), (5.0, 3.0), (4.0, 6.0)].map(|(x, y)| PixelPoint::new(x, y));
    matches!(l, Loaded::Xml(images) if images.len() == 1
        && images[0].file == "face.pgm"
        && images[0].boxes.len() == 1
        && images[0].boxes[0].bbox == FaceBox::new(1.0, 1.0, 6.0, 6.0)
        && images[0].boxes[0].points.as_deref() == Some(&want[..]))
}

fn faces_clean(l: &Loaded) -> bool {
    matches!(l, Loaded::Faces(s) if s.len() == 1
        && s[0].size == ImageSize::new(8, 8)
        && s[0].points.len() == 3
        && s[0].image.ends_with("face.pgm"))
}

fn faces_negative(l: &Loaded) -> bool {
    matches!(l, Loaded::Faces(s) if s.len() == 1
        && s[0].points[0] == PixelPoint::new(-1.5, -2.0))
}

fn gray_face(l: &Loaded) -> bool {
    matches!(l, Loaded::Image(g) if g.size() == ImageSize::new(8, 8)
        && g.get(1, 0) == Some(4.0 / 255.0 - 0.5))
}

fn gray_16bit(l: &Loaded) -> bool {
    // Samples 0, 0x8000, 0xFFFF / 1, 0x0101, 0x1234, at full 16-bit precision.
    let want = [0u16, 0x8000, 0xFFFF, 1, 0x0101, 0x1234].map(|v| f32::from(v) / 65535.0 - 0.5);
    matches!(l, Loaded::Image(g) if g.size() == ImageSize::new(3, 2) && g.data() == want)
}

fn gray_cmyk(l: &Loaded) -> bool {
    // Every block of the file is flat, so the whole image is one grey value.
    matches!(l, Loaded::Image(g) if g.size() == ImageSize::new(8, 8)
        && g.data().iter().all(|&v| (-0.5..=0.5).contains(&v) && v == g.data()[0]))
}

fn size_3x2(l: &Loaded) -> bool {
    *l == Loaded::Size(ImageSize::new(3, 2))
}

fn size_8x8(l: &Loaded) -> bool {
    *l == Loaded::Size(ImageSize::new(8, 8))
}

fn dir() -> PathBuf {
    crate::fixtures().join("broken")
}

/// Runs one row; `Err` says how it failed.
fn check(file: &str, loader: Loader, want: &Want) -> Result<(), String> {
    let path = dir().join(file);
    let start = Instant::now();
    let got = loader.load(&path);
    let took = start.elapsed();
    if took > TIME_LIMIT {
        return Err(format!("took {took:?}"));
    }
    match (want, got) {
        (
            Want::Refused {
                kind: want_kind,
                line: want_line,
                names,
                says,
            },
            Err(e),
        ) => {
            let msg = e.to_string();
            let name = if names.is_empty() {
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                (*names).to_owned()
            };
            if kind(&e) != Some(*want_kind) {
                return Err(format!("expected {want_kind:?}, got {e:?}"));
            }
            if line(&e) != *want_line {
                return Err(format!("expected line {want_line:?}, got {e:?}"));
            }
            if !msg.contains(&name) {
                return Err(format!("message does not name {name}: {msg}"));
            }
            if !msg.contains(says) {
                return Err(format!("message does not say {says:?}: {msg}"));
            }
            Ok(())
        }
        (Want::Refused { kind, .. }, Ok(got)) => {
            Err(format!("expected {kind:?}, but it loaded: {got:?}"))
        }
        (_, Err(e)) => Err(format!("expected it to load, got {e:?}: {e}")),
        (Want::SameAs(clean), Ok(got)) => {
            let want = loader
                .load(&dir().join(clean))
                .map_err(|e| format!("the clean file {clean} does not load: {e}"))?;
            if got == want {
                Ok(())
            } else {
                Err(format!("loads to {got:?}, but {clean} loads to {want:?}"))
            }
        }
        (Want::Holds(test), Ok(got)) => {
            if test(&got) {
                Ok(())
            } else {
                Err(format!("loaded, but not as expected: {got:?}"))
            }
        }
    }
}

#[test]
fn every_broken_file_is_refused_or_accepted_as_the_table_says() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|(file, loader, want)| {
            check(file, *loader, want)
                .err()
                .map(|why| format!("{file} ({loader:?}): {why}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fixture_file_has_a_row_and_stays_small() {
    let mut unlisted = Vec::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let size = std::fs::metadata(&path).unwrap().len();
        if name == "make_images.py" {
            continue;
        }
        assert!(size <= 1024, "{name} is {size} bytes");
        if !CASES.iter().any(|(file, _, _)| *file == name) {
            unlisted.push(name);
        }
    }
    assert!(unlisted.is_empty(), "no row for {unlisted:?}");
}
