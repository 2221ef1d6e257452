//! 300-W / menpo `.pts` landmark files: `version: 1`, `n_points: N`, `{`, `N` lines of `x y`
//! in pixels, `}`. The parser is strict about that order, because a file that deviates from it
//! is more likely damaged than written in a dialect.

use crate::{DataError, Result};
use fkd_core::PixelPoint;
use std::path::Path;

/// The most points reserved up front, so a bogus header cannot trigger a huge allocation.
const MAX_PREALLOC: usize = 1024;

/// Reads a `.pts` file (UTF-8 or plain ASCII).
pub fn read_pts(path: &Path) -> Result<Vec<PixelPoint>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        DataError::malformed(path, line, "not UTF-8 text")
    })?;
    parse_pts(text, path)
}

/// Parses the text of a `.pts` file; `path` is only used in error messages. A leading byte-order
/// mark (U+FEFF, written by some Windows editors) is not part of the `version` line.
pub fn parse_pts(text: &str, path: &Path) -> Result<Vec<PixelPoint>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Blank lines carry nothing; every other line has a fixed role.
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty());
    let last_line = text.lines().count();
    let mut next = |what: &str| {
        lines.next().ok_or_else(|| {
            DataError::malformed(path, last_line, format!("file ends before {what}"))
        })
    };

    let (line, text_version) = next("the `version: 1` line")?;
    if header_value(text_version, "version") != Some("1") {
        return Err(DataError::malformed(
            path,
            line,
            format!("expected `version: 1`, found {text_version:?}"),
        ));
    }
    let (count_line, count_text) = next("the `n_points:` line")?;
    let declared: usize = header_value(count_text, "n_points")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            DataError::malformed(
                path,
                count_line,
                format!("expected `n_points: <count>`, found {count_text:?}"),
            )
        })?;
    let (line, brace) = next("`{`")?;
    if brace != "{" {
        return Err(DataError::malformed(
            path,
            line,
            format!("expected `{{`, found {brace:?}"),
        ));
    }

    let mut points = Vec::with_capacity(declared.min(MAX_PREALLOC));
    let closed = loop {
        let Some((line, content)) = lines.next() else {
            break false;
        };
        if content == "}" {
            break true;
        }
        points.push(parse_point(content, path, line)?);
    };
    if points.len() != declared {
        return Err(DataError::PointCount {
            path: path.to_path_buf(),
            line: count_line,
            expected: declared,
            found: points.len(),
        });
    }
    if !closed {
        return Err(DataError::malformed(
            path,
            last_line,
            "file ends without the closing `}`",
        ));
    }
    if let Some((line, extra)) = lines.next() {
        return Err(DataError::malformed(
            path,
            line,
            format!("unexpected {extra:?} after the closing `}}`"),
        ));
    }
    Ok(points)
}

/// The value of a `key: value` header line, if the line has that key.
fn header_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let (k, v) = line.split_once(':')?;
    (k.trim() == key).then_some(v.trim())
}

/// One `x y` line.
fn parse_point(content: &str, path: &Path, line: usize) -> Result<PixelPoint> {
    let fields: Vec<&str> = content.split_whitespace().collect();
    let &[xs, ys] = fields.as_slice() else {
        return Err(DataError::malformed(
            path,
            line,
            format!("expected `x y`, found {content:?}"),
        ));
    };
    let coord = |s: &str| -> Result<f32> {
        let value: f32 = s
            .parse()
            .map_err(|_| DataError::malformed(path, line, format!("{s:?} is not a number")))?;
        if !value.is_finite() {
            return Err(DataError::Coordinate {
                path: path.to_path_buf(),
                line,
                value,
                reason: "is not finite".into(),
            });
        }
        Ok(value)
    };
    Ok(PixelPoint::new(coord(xs)?, coord(ys)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/pts")
            .join(name)
    }

    fn parse(text: &str) -> Result<Vec<PixelPoint>> {
        parse_pts(text, Path::new("inline.pts"))
    }

    #[test]
    fn reads_ok_file() {
        let pts = read_pts(&fixture("ok.pts")).unwrap();
        assert_eq!(
            pts,
            vec![
                PixelPoint::new(10.5, 20.25),
                PixelPoint::new(30.0, 40.0),
                PixelPoint::new(157.40625, 295.0625),
            ]
        );
    }

    #[test]
    fn wrong_count_names_the_declaration() {
        let e = read_pts(&fixture("wrong_count.pts")).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::PointCount {
                    line: 2,
                    expected: 3,
                    found: 2,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn missing_brace_is_malformed() {
        let e = read_pts(&fixture("no_brace.pts")).unwrap_err();
        match e {
            DataError::Malformed { line, reason, .. } => {
                assert_eq!(line, 6);
                assert!(reason.contains("closing"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nan_is_not_finite() {
        let e = read_pts(&fixture("nan.pts")).unwrap_err();
        match e {
            DataError::Coordinate {
                line,
                value,
                reason,
                ..
            } => {
                assert_eq!(line, 5);
                assert!(value.is_nan());
                assert_eq!(reason, "is not finite");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn infinity_is_not_finite() {
        let e = parse("version: 1\nn_points: 1\n{\n1 inf\n}\n").unwrap_err();
        assert!(
            matches!(e, DataError::Coordinate { line: 4, value, .. } if value == f32::INFINITY),
            "{e:?}"
        );
    }

    #[test]
    fn header_order_is_strict() {
        let e = parse("n_points: 1\nversion: 1\n{\n1 2\n}\n").unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 1, .. }), "{e:?}");
        let e = parse("version: 2\nn_points: 1\n{\n1 2\n}\n").unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 1, .. }), "{e:?}");
        let e = parse("version: 1\nn_points: one\n{\n1 2\n}\n").unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 2, .. }), "{e:?}");
        let e = parse("version: 1\nn_points: 1\n1 2\n}\n").unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 3, .. }), "{e:?}");
        let e = parse("version: 1\n").unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn too_many_points_is_point_count() {
        let e = parse("version: 1\nn_points: 1\n{\n1 2\n3 4\n}\n").unwrap_err();
        assert!(
            matches!(
                e,
                DataError::PointCount {
                    line: 2,
                    expected: 1,
                    found: 2,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn bad_point_lines_are_malformed() {
        let e = parse("version: 1\nn_points: 2\n{\n1 2\n3 4 5\n}\n").unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 5, .. }), "{e:?}");
        let e = parse("version: 1\nn_points: 1\n{\n1 x\n}\n").unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 4, .. }), "{e:?}");
    }

    #[test]
    fn text_after_brace_is_malformed_but_whitespace_is_not() {
        let e = parse("version: 1\nn_points: 1\n{\n1 2\n}\n7 8\n").unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 6, .. }), "{e:?}");
        let ok = parse("version: 1\r\nn_points:  1\r\n{\r\n1 2\r\n}\r\n\r\n  \n").unwrap();
        assert_eq!(ok, vec![PixelPoint::new(1.0, 2.0)]);
    }

    #[test]
    fn non_utf8_is_malformed_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pts");
        std::fs::write(&path, b"version: 1\nn_points: 1\n{\n1 \xff\n}\n").unwrap();
        let e = read_pts(&path).unwrap_err();
        assert!(matches!(e, DataError::Malformed { line: 4, .. }), "{e:?}");
    }

    #[test]
    fn missing_file_is_io() {
        let e = read_pts(&fixture("no_such_file.pts")).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    }
}
