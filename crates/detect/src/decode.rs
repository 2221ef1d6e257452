//! From the net's outputs to faces, as OpenCV's `FaceDetectorYN` does it: a face per cell whose
//! score √(cls·obj) reaches the threshold, its box and 5 points from the cell's offsets (the
//! cell's top-left corner is the prior, no half-pixel shift), then greedy non-maximum
//! suppression on the boxes truncated to whole pixels.

use crate::net::LevelOutput;
use candle_core::{DType, Result};
use fkd_core::{FaceBox, PixelPoint};

/// One detected face, in the pixels of the image the net saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// The face box.
    pub bbox: FaceBox,
    /// √(class score · objectness), in `[0, 1]`.
    pub score: f32,
    /// The subject's right eye, left eye, nose tip, right and left mouth corners.
    pub points: [PixelPoint; 5],
}

/// Every candidate of image `n` whose score is at least `threshold`, level by level (stride 8,
/// 16, 32), cells row-major: the order OpenCV's stable sort breaks ties in.
pub fn candidates(levels: &[LevelOutput], n: usize, threshold: f32) -> Result<Vec<Detection>> {
    let mut out = Vec::new();
    for level in levels {
        let rows = |t: &candle_core::Tensor| -> Result<Vec<Vec<f32>>> {
            LevelOutput::cells(&t.narrow(0, n, 1)?)?
                .squeeze(0)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()
        };
        let (cls, obj, bbox, kps) = (
            rows(&level.cls)?,
            rows(&level.obj)?,
            rows(&level.bbox)?,
            rows(&level.kps)?,
        );
        let (_, _, _, cols) = level.cls.dims4()?;
        let s = level.stride as f32;
        for (idx, (((c, o), b), k)) in cls.iter().zip(&obj).zip(&bbox).zip(&kps).enumerate() {
            let score = (c[0].clamp(0.0, 1.0) * o[0].clamp(0.0, 1.0)).sqrt();
            if score < threshold {
                continue;
            }
            let (r, col) = ((idx / cols) as f32, (idx % cols) as f32);
            let (cx, cy) = ((col + b[0]) * s, (r + b[1]) * s);
            let (w, h) = (b[2].exp() * s, b[3].exp() * s);
            let points = std::array::from_fn(|p| {
                PixelPoint::new((k[2 * p] + col) * s, (k[2 * p + 1] + r) * s)
            });
            out.push(Detection {
                bbox: FaceBox::new(cx - w / 2.0, cy - h / 2.0, w, h),
                score,
                points,
            });
        }
    }
    Ok(out)
}

/// Greedy non-maximum suppression as OpenCV's `NMSBoxes`: candidates with a score above
/// `threshold` (strictly), by descending score (stable), the first `top_k`, each kept while its
/// overlap (IoU of the boxes truncated to whole pixels) with every kept one is at most `iou`.
/// A single candidate is returned as it is.
pub fn nms(mut faces: Vec<Detection>, threshold: f32, iou: f32, top_k: usize) -> Vec<Detection> {
    if faces.len() <= 1 {
        return faces;
    }
    faces.retain(|f| f.score > threshold);
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    faces.truncate(top_k);
    let rect = |b: &FaceBox| [b.left as i64, b.top as i64, b.width as i64, b.height as i64];
    let mut kept: Vec<Detection> = Vec::new();
    for f in faces {
        let a = rect(&f.bbox);
        if kept
            .iter()
            .all(|k| overlap(a, rect(&k.bbox)) <= f64::from(iou))
        {
            kept.push(f);
        }
    }
    kept
}

/// `1 − jaccardDistance` of two integer rectangles `[x, y, w, h]`, as OpenCV computes it.
fn overlap(a: [i64; 4], b: [i64; 4]) -> f64 {
    let (x0, y0) = (a[0].max(b[0]), a[1].max(b[1]));
    let (x1, y1) = (
        (a[0] + a[2]).min(b[0] + b[2]),
        (a[1] + a[3]).min(b[1] + b[3]),
    );
    let inter = if x1 > x0 && y1 > y0 {
        (x1 - x0) * (y1 - y0)
    } else {
        0
    };
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union <= 0 {
        return 0.0;
    }
    inter as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, w: f32, score: f32) -> Detection {
        Detection {
            bbox: FaceBox::new(x, y, w, w),
            score,
            points: [PixelPoint::new(0.0, 0.0); 5],
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_and_distinct_ones() {
        let kept = nms(
            vec![
                face(10.0, 10.0, 50.0, 0.8),
                face(12.0, 11.0, 50.0, 0.95),
                face(200.0, 10.0, 40.0, 0.7),
                face(201.0, 12.0, 40.0, 0.3),
            ],
            0.5,
            0.3,
            5000,
        );
        let scores: Vec<f32> = kept.iter().map(|f| f.score).collect();
        assert_eq!(scores, [0.95, 0.7]);
        // One candidate: returned as it is, even under the threshold (OpenCV skips NMS).
        assert_eq!(nms(vec![face(0.0, 0.0, 5.0, 0.1)], 0.5, 0.3, 10).len(), 1);
    }

    #[test]
    fn overlap_is_iou_of_integer_rectangles() {
        assert_eq!(overlap([0, 0, 10, 10], [0, 0, 10, 10]), 1.0);
        assert_eq!(overlap([0, 0, 10, 10], [10, 0, 10, 10]), 0.0);
        assert!((overlap([0, 0, 10, 10], [5, 0, 10, 10]) - 50.0 / 150.0).abs() < 1e-12);
    }
}
