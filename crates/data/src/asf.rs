//! IMM `.asf` (AAM shape file) parsing: the 58-point annotations of the IMM Face Database.
//!
//! A file holds, after `#` comment and blank lines are dropped: the number of points, one line
//! per point (`<path#> <type> <x rel> <y rel> <point#> <connects from> <connects to>`, some
//! files add `<user1> <user2> <user3>`), and the host image's file name. Coordinates are
//! relative to the image's width and height, so they are read as [`NormPoint`]s.

use crate::{DataError, Result};
use fkd_core::{ImageSize, NormPoint, PixelPoint};
use std::path::Path;

/// How far outside `[0, 1]` a relative coordinate may lie: annotators click on the border, and
/// rounding can put such a click a hair outside the image.
const REL_TOLERANCE: f32 = 0.01;

/// The most points reserved up front: the declared count comes from the file and must not
/// decide an allocation before the lines are there.
const MAX_PREALLOC: usize = 1024;

/// The UTF-8 encoding of U+FEFF, which some editors put at the start of a text file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Fields of a point line without the optional user fields.
const BASE_FIELDS: usize = 7;
/// Fields of a point line with the three user fields.
const USER_FIELDS: usize = 10;

/// One landmark of an `.asf` file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AsfPoint {
    /// The contour (path) the point belongs to.
    pub path: usize,
    /// The point type (AAM flags: outer edge, closed path, ...).
    pub kind: u32,
    /// Position as fractions of the host image's width and height.
    pub rel: NormPoint,
    /// The point's number, equal to its position in the file.
    pub index: usize,
    /// The point this one is joined from.
    pub from: usize,
    /// The point this one is joined to.
    pub to: usize,
}

/// The contents of one `.asf` file.
#[derive(Clone, Debug, PartialEq)]
pub struct AsfShape {
    /// The points, in file order (which is point-number order).
    pub points: Vec<AsfPoint>,
    /// The host image's file name as written (relative to the `.asf`'s folder), if given.
    pub host_image: Option<String>,
    /// Whether the point lines carry the three extra `<user1> <user2> <user3>` fields.
    pub has_user_fields: bool,
}

impl AsfShape {
    /// The points' relative positions.
    pub fn norm_points(&self) -> Vec<NormPoint> {
        self.points.iter().map(|p| p.rel).collect()
    }

    /// The points in the pixels of a host image of `size`.
    pub fn pixel_points(&self, size: ImageSize) -> Vec<PixelPoint> {
        self.points.iter().map(|p| p.rel.to_pixel(size)).collect()
    }
}

/// Reads an `.asf` file. The bytes are decoded as latin-1, the encoding of the original files,
/// so a stray non-ASCII byte (in a comment, say) never makes a file unreadable. A leading UTF-8
/// byte-order mark (a file re-saved by a Windows editor) is dropped, not read as three latin-1
/// characters in front of the first line.
pub fn read_asf(path: &Path) -> Result<AsfShape> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_asf(&text_from_bytes(&bytes), path)
}

/// An `.asf` file's bytes as text, as [`read_asf`] reads them: a leading UTF-8 byte-order
/// mark dropped, every other byte latin-1.
pub fn text_from_bytes(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Parses the text of an `.asf` file; `path` is only used in error messages.
pub fn parse_asf(text: &str, path: &Path) -> Result<AsfShape> {
    // Content lines with their 1-based numbers; comments and blank lines carry nothing.
    let mut lines = text.lines().enumerate().filter_map(|(i, line)| {
        let trimmed = line.trim();
        (!trimmed.is_empty() && !trimmed.starts_with('#')).then_some((i + 1, trimmed))
    });

    let (count_line, count_text) = lines
        .next()
        .ok_or_else(|| DataError::malformed(path, 0, "no point-count line"))?;
    let declared: usize = count_text.parse().map_err(|_| {
        DataError::malformed(
            path,
            count_line,
            format!("expected the number of points, found {count_text:?}"),
        )
    })?;

    let mut points = Vec::with_capacity(declared.min(MAX_PREALLOC));
    let mut point_lines = Vec::with_capacity(declared.min(MAX_PREALLOC));
    let mut field_count = None;
    let mut host_image = None;
    for (line_no, line) in lines.by_ref() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let n = fields.len();
        if n == BASE_FIELDS || n == USER_FIELDS {
            match field_count {
                None => field_count = Some(n),
                Some(first) if first != n => {
                    return Err(DataError::malformed(
                        path,
                        line_no,
                        format!("point line has {n} fields but earlier point lines have {first}"),
                    ));
                }
                Some(_) => {}
            }
            let point = parse_point(&fields, points.len(), path, line_no)?;
            points.push(point);
            point_lines.push(line_no);
        } else if n == 1 || points.len() >= declared {
            // The point section is over: this is the host image name, which may contain spaces.
            host_image = Some(line.to_owned());
            break;
        } else {
            return Err(DataError::malformed(
                path,
                line_no,
                format!("a point line has {BASE_FIELDS} or {USER_FIELDS} fields, found {n}"),
            ));
        }
    }
    if points.len() != declared {
        return Err(DataError::PointCount {
            path: path.to_path_buf(),
            line: count_line,
            expected: declared,
            found: points.len(),
        });
    }
    // Checked only once the count is right: with a wrong count, the count is the real problem.
    for (p, &line_no) in points.iter().zip(&point_lines) {
        for (name, target) in [("connects from", p.from), ("connects to", p.to)] {
            if target >= declared {
                return Err(DataError::malformed(
                    path,
                    line_no,
                    format!("<{name}> {target} is not one of the {declared} points"),
                ));
            }
        }
    }
    if let Some((line_no, line)) = lines.next() {
        return Err(DataError::malformed(
            path,
            line_no,
            format!("unexpected {line:?} after the host image name"),
        ));
    }
    Ok(AsfShape {
        points,
        host_image,
        has_user_fields: field_count == Some(USER_FIELDS),
    })
}

/// Parses one point line of 7 or 10 fields; `position` is the point's 0-based place in the file.
fn parse_point(fields: &[&str], position: usize, path: &Path, line: usize) -> Result<AsfPoint> {
    const NAMES: [&str; USER_FIELDS] = [
        "path#",
        "type",
        "x rel",
        "y rel",
        "point#",
        "connects from",
        "connects to",
        "user1",
        "user2",
        "user3",
    ];
    let bad = |k: usize| {
        DataError::malformed(
            path,
            line,
            format!(
                "field {} <{}> is not a number: {:?}",
                k + 1,
                NAMES[k],
                fields[k]
            ),
        )
    };
    let int = |k: usize| fields[k].parse::<usize>().map_err(|_| bad(k));
    let real = |k: usize| fields[k].parse::<f32>().map_err(|_| bad(k));

    let point_path = int(0)?;
    let kind = fields[1].parse::<u32>().map_err(|_| bad(1))?;
    let x = real(2)?;
    let y = real(3)?;
    let index = int(4)?;
    let from = int(5)?;
    let to = int(6)?;
    for k in BASE_FIELDS..fields.len() {
        // The user fields are unused, but a file with garbage there is a broken file.
        real(k)?;
    }

    for value in [x, y] {
        let reason = if !value.is_finite() {
            "is not finite"
        } else if !(-REL_TOLERANCE..=1.0 + REL_TOLERANCE).contains(&value) {
            "is outside [0, 1]"
        } else {
            continue;
        };
        return Err(DataError::Coordinate {
            path: path.to_path_buf(),
            line,
            value,
            reason: reason.into(),
        });
    }
    if index != position {
        return Err(DataError::malformed(
            path,
            line,
            format!("point number {index} on the line of point {position}"),
        ));
    }
    Ok(AsfPoint {
        path: point_path,
        kind,
        rel: NormPoint::new(x, y),
        index,
        from,
        to,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/asf")
            .join(name)
    }

    /// The error of reading a fixture that must fail.
    fn fail(name: &str) -> DataError {
        match read_asf(&fixture(name)) {
            Ok(shape) => panic!("{name} parsed to {} points", shape.points.len()),
            Err(e) => e,
        }
    }

    #[test]
    fn seven_field_file() {
        let shape = read_asf(&fixture("seven_fields.asf")).unwrap();
        assert!(!shape.has_user_fields);
        assert_eq!(shape.host_image.as_deref(), Some("99-1m.jpg"));
        assert_eq!(shape.points.len(), 4);
        assert_eq!(
            shape.points[1],
            AsfPoint {
                path: 0,
                kind: 4,
                rel: NormPoint::new(0.5, 0.25),
                index: 1,
                from: 0,
                to: 2,
            }
        );
        assert_eq!(shape.points[3].path, 1);
        assert_eq!(shape.points[3].kind, 0);
        let px = shape.pixel_points(ImageSize::new(640, 480));
        assert_eq!(px[1], PixelPoint::new(320.0, 120.0));
        assert_eq!(shape.norm_points()[0], NormPoint::new(0.25, 0.5));
    }

    #[test]
    fn ten_field_file() {
        let shape = read_asf(&fixture("ten_fields.asf")).unwrap();
        assert!(shape.has_user_fields);
        assert_eq!(shape.points.len(), 4);
        assert_eq!(shape.host_image.as_deref(), Some("99-5f.jpg"));
        assert_eq!(shape.points[2].rel, NormPoint::new(0.75, 0.5));
    }

    #[test]
    fn full_58_point_file() {
        let shape = read_asf(&fixture("full_58.asf")).unwrap();
        assert_eq!(shape.points.len(), 58);
        assert!(!shape.has_user_fields);
        for (i, p) in shape.points.iter().enumerate() {
            assert_eq!(p.index, i);
        }
        assert_eq!(shape.points[57].path, 6);
    }

    #[test]
    fn latin1_byte_in_comment_is_read() {
        // 0xE6 ('æ' in latin-1) is not valid UTF-8 on its own.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.asf");
        std::fs::write(&path, b"# by Stegmann \xe6\n1\n0 0 0.5 0.5 0 0 0\nx.jpg\n").unwrap();
        let shape = read_asf(&path).unwrap();
        assert_eq!(shape.points.len(), 1);
        assert_eq!(shape.host_image.as_deref(), Some("x.jpg"));
    }

    #[test]
    fn truncated_file_is_point_count_at_declaration() {
        let e = fail("truncated.asf");
        assert!(
            matches!(
                e,
                DataError::PointCount {
                    line: 2,
                    expected: 4,
                    found: 2,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn wrong_count_is_point_count() {
        // Declares 3 but holds 4 point lines.
        let e = fail("wrong_count.asf");
        assert!(
            matches!(
                e,
                DataError::PointCount {
                    line: 2,
                    expected: 3,
                    found: 4,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn eight_fields_is_malformed() {
        let e = fail("bad_fields.asf");
        assert!(matches!(e, DataError::Malformed { line: 5, .. }), "{e:?}");
    }

    #[test]
    fn nine_and_eleven_fields_are_malformed() {
        let p = Path::new("inline.asf");
        for extra in ["0 0", "0 0 0 0"] {
            let text = format!("1\n0 0 0.5 0.5 0 0 0 {extra}\nx.jpg\n");
            let e = parse_asf(&text, p).unwrap_err();
            assert!(matches!(e, DataError::Malformed { line: 2, .. }), "{e:?}");
        }
    }

    #[test]
    fn nan_is_not_finite() {
        let e = fail("non_finite.asf");
        match e {
            DataError::Coordinate {
                line,
                value,
                reason,
                ..
            } => {
                assert_eq!(line, 6);
                assert!(value.is_nan());
                assert_eq!(reason, "is not finite");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn out_of_range_coordinate() {
        let e = fail("out_of_range.asf");
        match e {
            DataError::Coordinate {
                line,
                value,
                reason,
                ..
            } => {
                assert_eq!(line, 5);
                assert_eq!(value, 1.5);
                assert_eq!(reason, "is outside [0, 1]");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_overshoot_is_tolerated() {
        let text = "1\n0 0 1.005 -0.004 0 0 0\nx.jpg\n";
        let shape = parse_asf(text, Path::new("inline.asf")).unwrap();
        assert_eq!(shape.points[0].rel, NormPoint::new(1.005, -0.004));
    }

    #[test]
    fn missing_count_is_malformed() {
        let e = fail("missing_count.asf");
        assert!(matches!(e, DataError::Malformed { line: 3, .. }), "{e:?}");
        let e = parse_asf("# only comments\n\n", Path::new("empty.asf")).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 0, .. }), "{e:?}");
    }

    #[test]
    fn non_number_field_is_malformed() {
        let text = "1\n0 four 0.5 0.5 0 0 0\nx.jpg\n";
        let e = parse_asf(text, Path::new("inline.asf")).unwrap_err();
        match e {
            DataError::Malformed { line, reason, .. } => {
                assert_eq!(line, 2);
                assert!(reason.contains("<type>"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn point_number_must_match_position() {
        let text = "2\n0 0 0.5 0.5 0 0 1\n0 0 0.5 0.5 5 0 1\nx.jpg\n";
        let e = parse_asf(text, Path::new("inline.asf")).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 3, .. }), "{e:?}");
    }

    #[test]
    fn connection_must_name_a_point() {
        let text = "2\n0 0 0.5 0.5 0 0 1\n0 0 0.5 0.5 1 0 2\nx.jpg\n";
        let e = parse_asf(text, Path::new("inline.asf")).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 3, .. }), "{e:?}");
    }

    #[test]
    fn mixed_field_counts_are_malformed() {
        let text = "2\n0 0 0.5 0.5 0 0 1\n0 0 0.5 0.5 1 0 1 0 0 0\nx.jpg\n";
        let e = parse_asf(text, Path::new("inline.asf")).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 3, .. }), "{e:?}");
    }

    #[test]
    fn host_image_is_optional_and_single() {
        let shape = parse_asf("1\n0 0 0.5 0.5 0 0 0\n", Path::new("a.asf")).unwrap();
        assert_eq!(shape.host_image, None);
        let e = parse_asf("1\n0 0 0.5 0.5 0 0 0\nx.jpg\ny.jpg\n", Path::new("a.asf")).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 4, .. }), "{e:?}");
    }

    #[test]
    fn missing_file_is_io() {
        let e = fail("no_such_file.asf");
        assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    }
}
