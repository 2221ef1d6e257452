//! From a detector's face box to the box the landmark nets crop around. The 68-point nets were
//! trained on crops of the tight box of each face's landmarks (enlarged by the card's crop
//! factor); a detector's box sits elsewhere (YuNet's runs from the forehead to the chin and is
//! a little wider). [`BoxMap`] moves and scales a detection box to where the tight box of the
//! same face lies on average, a map fitted on the training photos ([`BoxMap::fit`],
//! `cargo xtask calibrate-detector`).

use fkd_core::FaceBox;
use serde::{Deserialize, Serialize};

/// A map from a detection box to a landmark box: the centre moves by (`dx`·w, `dy`·h) and the
/// sides scale by `sx` and `sy`, where w and h are the detection's width and height.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxMap {
    /// Horizontal shift of the centre, in detection widths.
    pub dx: f32,
    /// Vertical shift of the centre, in detection heights.
    pub dy: f32,
    /// Width of the landmark box over the detection's.
    pub sx: f32,
    /// Height of the landmark box over the detection's.
    pub sy: f32,
}

/// YuNet-n's boxes (fkd-detect at its defaults) to the tight boxes of 300-W's 68 points: the
/// medians over the 2,012 faces of the 300-W training photos, every one matched to a detection
/// (`cargo xtask calibrate-detector`; mean IoU with the landmark box 0.880 mapped, 0.691 as
/// detected). YuNet's box runs higher (the forehead) and is taller than the points' box.
pub const YUNET_TO_IBUG68: BoxMap = BoxMap {
    dx: 0.0070,
    dy: 0.1318,
    sx: 1.0301,
    sy: 0.7386,
};

impl BoxMap {
    /// The identity map.
    pub const IDENTITY: BoxMap = BoxMap {
        dx: 0.0,
        dy: 0.0,
        sx: 1.0,
        sy: 1.0,
    };

    /// Where the map puts the landmark box of a face detected at `det`.
    pub fn apply(&self, det: FaceBox) -> FaceBox {
        let c = det.center();
        let (w, h) = (det.width * self.sx, det.height * self.sy);
        let (cx, cy) = (c.x + self.dx * det.width, c.y + self.dy * det.height);
        FaceBox::new(cx - w / 2.0, cy - h / 2.0, w, h)
    }

    /// The map whose four numbers are the medians over `pairs` of (detection, landmark box):
    /// robust to the few faces a detector boxes badly. `None` without pairs.
    pub fn fit(pairs: &[(FaceBox, FaceBox)]) -> Option<BoxMap> {
        if pairs.is_empty() {
            return None;
        }
        let median = |f: &dyn Fn(&(FaceBox, FaceBox)) -> f32| {
            let mut v: Vec<f32> = pairs.iter().map(f).collect();
            v.sort_by(f32::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                0.5 * (v[n / 2 - 1] + v[n / 2])
            }
        };
        Some(BoxMap {
            dx: median(&|(d, t)| (t.center().x - d.center().x) / d.width),
            dy: median(&|(d, t)| (t.center().y - d.center().y) / d.height),
            sx: median(&|(d, t)| t.width / d.width),
            sy: median(&|(d, t)| t.height / d.height),
        })
    }
}

/// Intersection over union of two boxes (0 for boxes without area).
pub fn iou(a: FaceBox, b: FaceBox) -> f32 {
    let w = (a.right().min(b.right()) - a.left.max(b.left)).max(0.0);
    let h = (a.bottom().min(b.bottom()) - a.top.max(b.top)).max(0.0);
    let inter = w * h;
    let union = a.width * a.height + b.width * b.height - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fitted_map_takes_detections_to_their_landmark_boxes() {
        // Landmark boxes 10 % narrower, 5 % shorter, centred 3 % of the width right and 8 %
        // of the height lower than the detections, at different places and sizes.
        let truth = BoxMap {
            dx: 0.03,
            dy: 0.08,
            sx: 0.9,
            sy: 0.95,
        };
        let pairs: Vec<(FaceBox, FaceBox)> =
            [(10.0, 20.0, 100.0, 120.0), (300.0, 40.0, 60.0, 70.0)]
                .iter()
                .map(|&(x, y, w, h)| {
                    let d = FaceBox::new(x, y, w, h);
                    (d, truth.apply(d))
                })
                .collect();
        let fitted = BoxMap::fit(&pairs).unwrap_or(BoxMap::IDENTITY);
        for (d, t) in &pairs {
            assert!(iou(fitted.apply(*d), *t) > 0.999);
        }
        assert!(BoxMap::fit(&[]).is_none());
        assert_eq!(BoxMap::IDENTITY.apply(pairs[0].0), pairs[0].0);
    }
}
