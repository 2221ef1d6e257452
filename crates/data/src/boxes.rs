//! 300-W face box lists and crop manifests.
//!
//! - Box lists (`bounding_boxes_*_{gt,det}.csv`): one `xmin ymin xmax ymax` row per image, with
//!   no image name; a separate name list (one name per line) says which image row `i` is for.
//!   Rows are matched by position, so a blank line in the middle is an error, not skipped.
//! - Crop manifests (`manifest_300w_*.csv`): for each pre-cropped image, where the crop came from
//!   in its source image and how it was scaled, so crop-space points can be mapped back.

use crate::{DataError, Result};
use fkd_core::{FaceBox, ImageSize, PixelPoint};
use std::collections::HashMap;
use std::path::Path;

/// One row of a crop manifest: how a crop was cut out of its source image and scaled.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestRow {
    /// The crop's file, relative to the manifest's folder.
    pub file: String,
    /// Size of the source image the crop was cut from.
    pub source_size: ImageSize,
    /// The cut-out rectangle (left, top, width, height) in source pixels.
    pub crop: FaceBox,
    /// Size of the crop as stored (after scaling).
    pub out_size: ImageSize,
    /// Horizontal scale from source to crop pixels (`out_w / crop_w`).
    pub scale_x: f32,
    /// Vertical scale from source to crop pixels (`out_h / crop_h`).
    pub scale_y: f32,
}

impl ManifestRow {
    /// Maps a point in the crop's pixels back to the source image's pixels.
    pub fn to_source(&self, p: PixelPoint) -> PixelPoint {
        PixelPoint::new(
            p.x / self.scale_x + self.crop.left,
            p.y / self.scale_y + self.crop.top,
        )
    }
}

/// The lines of a file with their 1-based numbers, without trailing blank lines; a blank line
/// before the last content line is an error, because rows are matched by position.
fn positional_lines<'a>(text: &'a str, path: &Path) -> Result<Vec<(usize, &'a str)>> {
    let mut lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .collect();
    while lines.last().is_some_and(|(_, line)| line.is_empty()) {
        lines.pop();
    }
    if let Some(&(line, _)) = lines.iter().find(|(_, line)| line.is_empty()) {
        return Err(DataError::malformed(
            path,
            line,
            "blank line inside a list whose rows are matched by position",
        ));
    }
    Ok(lines)
}

/// Reads a whole file as UTF-8 text with [`text_from_bytes`].
fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    text_from_bytes(bytes, path)
}

/// A file's bytes as UTF-8 text, without a leading byte-order mark (U+FEFF, written by some
/// Windows editors): left in, it would become part of the first box's `xmin` or the first name.
/// Bytes that are not UTF-8 are a [`DataError::Malformed`] naming `path` and the line.
pub fn text_from_bytes(mut bytes: Vec<u8>, path: &Path) -> Result<String> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        DataError::malformed(path, line, "not UTF-8 text")
    })
}

/// Parses a finite number, naming the field in the error.
fn number(s: &str, what: &str, path: &Path, line: usize) -> Result<f32> {
    let value: f32 = s
        .parse()
        .map_err(|_| DataError::malformed(path, line, format!("{what} {s:?} is not a number")))?;
    if !value.is_finite() {
        return Err(DataError::Coordinate {
            path: path.to_path_buf(),
            line,
            value,
            reason: format!("({what}) is not finite"),
        });
    }
    Ok(value)
}

/// Reads a 300-W box list: one `xmin ymin xmax ymax` row per line, separated by spaces (or
/// commas). A box must have a positive, finite width and height.
pub fn read_box_list(path: &Path) -> Result<Vec<FaceBox>> {
    let text = read_text(path)?;
    parse_box_list(&text, path)
}

/// Parses the text of a box list (see [`read_box_list`]); `path` is only used in errors.
pub fn parse_box_list(text: &str, path: &Path) -> Result<Vec<FaceBox>> {
    const NAMES: [&str; 4] = ["xmin", "ymin", "xmax", "ymax"];
    positional_lines(text, path)?
        .into_iter()
        .map(|(line, content)| {
            let fields: Vec<&str> = content
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|f| !f.is_empty())
                .collect();
            if fields.len() != 4 {
                return Err(DataError::malformed(
                    path,
                    line,
                    format!("expected `xmin ymin xmax ymax`, found {content:?}"),
                ));
            }
            let mut v = [0.0f32; 4];
            for (k, slot) in v.iter_mut().enumerate() {
                *slot = number(fields[k], NAMES[k], path, line)?;
            }
            let [xmin, ymin, xmax, ymax] = v;
            if xmax <= xmin || ymax <= ymin {
                return Err(DataError::malformed(
                    path,
                    line,
                    format!("empty box: xmin {xmin} xmax {xmax}, ymin {ymin} ymax {ymax}"),
                ));
            }
            let bbox = FaceBox::from_corners(xmin, ymin, xmax, ymax);
            if !bbox.is_valid() {
                // Corners near ±f32::MAX are finite, but their difference is not.
                return Err(DataError::malformed(
                    path,
                    line,
                    format!(
                        "box too large: width {} x height {} is not finite",
                        bbox.width, bbox.height
                    ),
                ));
            }
            Ok(bbox)
        })
        .collect()
}

/// Reads a name list: one image name per line, each name once.
pub fn read_name_list(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    parse_name_list(&text, path)
}

/// Parses the text of a name list (see [`read_name_list`]); `path` is only used in errors.
pub fn parse_name_list(text: &str, path: &Path) -> Result<Vec<String>> {
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut names = Vec::new();
    for (line, name) in positional_lines(text, path)? {
        if let Some(first) = first_seen.insert(name, line) {
            return Err(DataError::malformed(
                path,
                line,
                format!("{name:?} is listed again (first on line {first})"),
            ));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// Reads a box list and its name list and pairs them row by row.
pub fn read_named_boxes(boxes: &Path, names: &Path) -> Result<Vec<(String, FaceBox)>> {
    let box_list = read_box_list(boxes)?;
    let name_list = read_name_list(names)?;
    if box_list.len() != name_list.len() {
        return Err(DataError::Dataset {
            path: boxes.to_path_buf(),
            reason: format!(
                "{} boxes, but the name list {} has {} names",
                box_list.len(),
                names.display(),
                name_list.len()
            ),
        });
    }
    Ok(name_list.into_iter().zip(box_list).collect())
}

/// Reads a crop manifest (`manifest_300w_*.csv`). Columns are found by their header names, so
/// their order and extra columns do not matter. Each row is checked: sizes positive, the crop
/// inside its source image, and the scales reproducing the output size to within half a pixel.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>> {
    let text = read_text(path)?;
    parse_manifest(&text, path)
}

/// The manifest columns fkd needs.
const MANIFEST_COLUMNS: [&str; 11] = [
    "file",
    "src_w",
    "src_h",
    "crop_left",
    "crop_top",
    "crop_w",
    "crop_h",
    "out_w",
    "out_h",
    "scale_x",
    "scale_y",
];

/// Parses the text of a crop manifest (see [`read_manifest`]); `path` is only used in errors.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Vec<ManifestRow>> {
    let lines = positional_lines(text, path)?;
    let Some((&(header_line, header), rows)) = lines.split_first() else {
        return Err(DataError::malformed(
            path,
            0,
            "empty manifest: no header line",
        ));
    };
    let header: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut col = [0usize; MANIFEST_COLUMNS.len()];
    for (slot, name) in col.iter_mut().zip(MANIFEST_COLUMNS) {
        *slot = header.iter().position(|h| *h == name).ok_or_else(|| {
            DataError::malformed(
                path,
                header_line,
                format!("no {name:?} column in the header"),
            )
        })?;
    }
    rows.iter()
        .map(|&(line, content)| {
            let fields: Vec<&str> = content.split(',').map(str::trim).collect();
            if fields.len() != header.len() {
                return Err(DataError::malformed(
                    path,
                    line,
                    format!("{} fields, the header has {}", fields.len(), header.len()),
                ));
            }
            let field = |k: usize| fields[col[k]];
            let size = |k: usize| -> Result<u32> {
                match field(k).parse::<u32>() {
                    Ok(v) if v > 0 => Ok(v),
                    _ => Err(DataError::malformed(
                        path,
                        line,
                        format!(
                            "{} {:?} is not a positive integer",
                            MANIFEST_COLUMNS[k],
                            field(k)
                        ),
                    )),
                }
            };
            let real = |k: usize| number(field(k), MANIFEST_COLUMNS[k], path, line);

            let file = field(0);
            if file.is_empty() {
                return Err(DataError::malformed(path, line, "empty file name"));
            }
            let source_size = ImageSize::new(size(1)?, size(2)?);
            let crop = FaceBox::new(real(3)?, real(4)?, real(5)?, real(6)?);
            let out_size = ImageSize::new(size(7)?, size(8)?);
            let (scale_x, scale_y) = (real(9)?, real(10)?);

            let inside = crop.left >= 0.0
                && crop.top >= 0.0
                && crop.width > 0.0
                && crop.height > 0.0
                && crop.right() <= source_size.width as f32
                && crop.bottom() <= source_size.height as f32;
            if !inside {
                return Err(DataError::malformed(
                    path,
                    line,
                    format!("crop {crop} is not inside the {source_size} source image"),
                ));
            }
            // The scales are rounded in the file; they must still give the stored size.
            let off_x = (scale_x * crop.width - out_size.width as f32).abs();
            let off_y = (scale_y * crop.height - out_size.height as f32).abs();
            if off_x > 0.5 || off_y > 0.5 {
                return Err(DataError::malformed(
                    path,
                    line,
                    format!("scales {scale_x} x {scale_y} do not turn crop {crop} into {out_size}"),
                ));
            }
            Ok(ManifestRow {
                file: file.to_owned(),
                source_size,
                crop,
                out_size,
                scale_x,
                scale_y,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/boxes")
            .join(name)
    }

    const HEADER: &str = "file,source,source_path,src_w,src_h,crop_left,crop_top,crop_w,crop_h,out_w,out_h,scale_x,scale_y";

    #[test]
    fn named_boxes_pair_rows() {
        let named = read_named_boxes(&fixture("boxes.csv"), &fixture("names.txt")).unwrap();
        assert_eq!(
            named,
            vec![
                ("a.png".to_owned(), FaceBox::new(10.0, 20.0, 100.0, 80.0)),
                ("b.png".to_owned(), FaceBox::new(1.5, 2.5, 2.0, 3.0)),
                ("c.png".to_owned(), FaceBox::new(0.0, 0.0, 5.0, 5.0)),
            ]
        );
    }

    #[test]
    fn count_mismatch_is_dataset_error_naming_both() {
        let e = read_named_boxes(&fixture("boxes.csv"), &fixture("names_short.txt")).unwrap_err();
        match e {
            DataError::Dataset { path, reason } => {
                assert_eq!(path, fixture("boxes.csv"));
                assert!(reason.contains("names_short.txt"), "{reason}");
                assert!(reason.contains("3 boxes"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_box_is_malformed() {
        let e = read_box_list(&fixture("empty_box.csv")).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 2, .. }), "{e:?}");
    }

    #[test]
    fn box_rows_are_checked() {
        let p = Path::new("inline.csv");
        let e = parse_box_list("1 2 3\n", p).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 1, .. }), "{e:?}");
        let e = parse_box_list("1 2 3 4\n1 2 x 4\n", p).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 2, .. }), "{e:?}");
        let e = parse_box_list("1 2 3 4\n1 2 inf 4\n", p).unwrap_err();
        assert!(matches!(e, DataError::Coordinate { line: 2, .. }), "{e:?}");
        let e = parse_box_list("1 2 3 4\n\n1 2 3 4\n", p).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 2, .. }), "{e:?}");
        assert_eq!(parse_box_list("1,2,3,4\n\n\n", p).unwrap().len(), 1);
        // Finite corners whose difference overflows f32 (found by the `box_list` fuzz target).
        let e = parse_box_list("1 2 3 4\n-3e38 0 3e38 1\n", p).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 2, .. }), "{e:?}");
        let e = parse_box_list("0 -3e38 1 3e38\n", p).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn duplicate_names_are_malformed() {
        let e = parse_name_list("a.png\nb.png\na.png\n", Path::new("n.txt")).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 3, .. }), "{e:?}");
    }

    #[test]
    fn manifest_rows_map_back_to_source() {
        // The fixture's columns are in another order than the real manifests', with one
        // unused column: they are found by name.
        let rows = read_manifest(&fixture("manifest.csv")).unwrap();
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(r.file, "afw/x_1.jpg");
        assert_eq!(r.source_size, ImageSize::new(1000, 800));
        assert_eq!(r.crop, FaceBox::new(100.0, 50.0, 400.0, 400.0));
        assert_eq!(r.out_size, ImageSize::new(200, 200));
        assert_eq!(
            r.to_source(PixelPoint::new(10.0, 20.0)),
            PixelPoint::new(120.0, 90.0)
        );
        assert_eq!(rows[1].file, "helen/y.jpg");
        assert_eq!(rows[1].scale_y, 1.0);
    }

    #[test]
    fn manifest_header_is_checked_by_name() {
        let p = Path::new("m.csv");
        let e = parse_manifest("file,src_w\nx.jpg,3\n", p).unwrap_err();
        match e {
            DataError::Malformed { line, reason, .. } => {
                assert_eq!(line, 1);
                assert!(reason.contains("\"src_h\""), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let e = parse_manifest("", p).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 0, .. }), "{e:?}");
    }

    #[test]
    fn manifest_rows_are_checked() {
        let p = Path::new("m.csv");
        let good = "x.jpg,s,s.png,100,100,10,10,50,50,25,25,0.5,0.5";
        assert_eq!(
            parse_manifest(&format!("{HEADER}\n{good}\n"), p)
                .unwrap()
                .len(),
            1
        );
        for (bad, what) in [
            ("x.jpg,s,s.png,100,100,10,10,50,50,25,25,0.5", "field count"),
            ("x.jpg,s,s.png,0,100,10,10,50,50,25,25,0.5,0.5", "zero size"),
            (
                "x.jpg,s,s.png,100,100,60,10,50,50,25,25,0.5,0.5",
                "crop outside",
            ),
            ("x.jpg,s,s.png,100,100,10,10,50,50,25,25,0.6,0.5", "scale"),
            (
                "x.jpg,s,s.png,100,100,10,10,50,50,25,25,abc,0.5",
                "non-number",
            ),
            (",s,s.png,100,100,10,10,50,50,25,25,0.5,0.5", "empty file"),
        ] {
            let e = parse_manifest(&format!("{HEADER}\n{good}\n{bad}\n"), p).unwrap_err();
            assert!(
                matches!(e, DataError::Malformed { line: 3, .. }),
                "{what}: {e:?}"
            );
        }
    }

    #[test]
    fn missing_file_is_io() {
        let e = read_box_list(&fixture("no_such_file.csv")).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    }
}
