//! The Kaggle-style submission of the course's Part 3: one row per coordinate,
//! `Id,Predicted`, with `Id = face · 2K + 2 · point + (0 for x, 1 for y)` from 0, for faces of
//! `K` points in their photos' pixels.

use crate::error::Result;
use fkd_core::PixelPoint;
use std::fmt::Write as _;
use std::path::Path;

/// The CSV text for `faces` (in submission order).
pub fn kaggle_csv(faces: &[Vec<PixelPoint>]) -> String {
    let per_face: usize = faces.first().map_or(0, Vec::len);
    let mut out = String::with_capacity(20 * 2 * per_face * faces.len() + 16);
    out.push_str("Id,Predicted\n");
    let mut id = 0usize;
    for face in faces {
        for p in face {
            for v in [p.x, p.y] {
                // Writing to a String cannot fail.
                let _ = writeln!(out, "{id},{v}");
                id += 1;
            }
        }
    }
    out
}

/// Writes [`kaggle_csv`] of `faces` to `path`, atomically.
pub fn write_kaggle_csv(path: &Path, faces: &[Vec<PixelPoint>]) -> Result<()> {
    fkd_core::io::write_bytes_atomic(path, kaggle_csv(faces).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_faces_points_and_axes() {
        let face = |k: f32| -> Vec<PixelPoint> {
            (0..68).map(|i| PixelPoint::new(k + i as f32, -k)).collect()
        };
        let csv = kaggle_csv(&[face(0.0), face(1000.0)]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 2 * 136);
        assert_eq!(lines[0], "Id,Predicted");
        assert_eq!(lines[1], "0,0");
        assert_eq!(lines[2], "1,-0");
        // Face 1, point 3, y: id 136 + 7.
        assert_eq!(lines[1 + 143], "143,-1000");
        assert_eq!(lines[1 + 142], "142,1003");
    }
}
