//! The landmark layouts fkd works with: IMM's 58 points and iBUG/300-W's 68 points.
//!
//! A [`Layout`] knows how many points a face has, how they form contours ([`Path`]s, which give
//! the connectivity drawn in figures), which point is the mirror image of which (so a horizontal
//! flip can permute left and right points), and which points define the inter-ocular distance
//! that NME is normalised by. "Left" and "right" are the *subject's*: the subject's right eye
//! appears on the left of a frontal photo.

use crate::geometry::{PixelPoint, centroid};

/// One contour of a layout: the points `start .. start + len`, joined in order, and closed back
/// to `start` when `closed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    /// What the contour outlines ("jaw", "right eye", ...).
    pub name: &'static str,
    /// Index of its first point.
    pub start: usize,
    /// Number of points.
    pub len: usize,
    /// Whether the last point joins the first.
    pub closed: bool,
}

impl Path {
    /// The point indices of this path.
    pub fn indices(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.len
    }
}

/// Which points define the inter-ocular distance of a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ocular {
    /// The distance between two named points (iBUG 68: outer eye corners 36 and 45).
    Corners(usize, usize),
    /// The distance between the centroids of two paths (IMM 58: the two eye contours).
    PathCentres(usize, usize),
}

/// A landmark layout: point count, contours, mirror permutation and inter-ocular reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Short name ("imm58", "ibug68").
    pub name: &'static str,
    /// Number of points per face.
    pub n_points: usize,
    /// Contours, covering every point exactly once, in index order.
    pub paths: &'static [Path],
    /// `mirror[i]` is the point that `i` becomes under a horizontal flip. An involution.
    pub mirror: &'static [usize],
    /// The points that define the inter-ocular distance.
    pub ocular: Ocular,
}

/// Named points of the IMM 58-point layout.
pub mod imm {
    /// The nose tip regressed by Part 1 of the write-up (`[-6]` in its code).
    pub const NOSE_TIP: usize = 52;
    /// Path index of the subject's left eye (points 13–20, on the right of the photo).
    pub const LEFT_EYE_PATH: usize = 1;
    /// Path index of the subject's right eye (points 21–28, on the left of the photo).
    pub const RIGHT_EYE_PATH: usize = 2;
}

/// Named points of the iBUG 300-W 68-point layout (0-based).
pub mod ibug {
    /// Outer corner of the subject's right eye (left in the photo).
    pub const RIGHT_EYE_OUTER: usize = 36;
    /// Outer corner of the subject's left eye (right in the photo).
    pub const LEFT_EYE_OUTER: usize = 45;
    /// Nose tip.
    pub const NOSE_TIP: usize = 30;
}

const fn path(name: &'static str, start: usize, len: usize, closed: bool) -> Path {
    Path {
        name,
        start,
        len,
        closed,
    }
}

const IMM58_PATHS: [Path; 7] = [
    path("jaw", 0, 13, false),
    path("left eye", 13, 8, true),
    path("right eye", 21, 8, true),
    path("left eyebrow", 29, 5, false),
    path("right eyebrow", 34, 5, false),
    path("mouth", 39, 8, true),
    path("nose", 47, 11, false),
];

/// Found by reflecting the mean frontal IMM shape about its vertical axis and pairing each point
/// with its nearest neighbour; the integration tests check it against the real data again.
const IMM58_MIRROR: [usize; 58] = [
    12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, // jaw
    21, 22, 23, 24, 25, 26, 27, 28, // left eye -> right eye
    13, 14, 15, 16, 17, 18, 19, 20, // right eye -> left eye
    34, 35, 36, 37, 38, // left brow -> right brow
    29, 30, 31, 32, 33, // right brow -> left brow
    43, 42, 41, 40, 39, 46, 45, 44, // mouth
    57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, // nose
];

const IBUG68_PATHS: [Path; 9] = [
    path("jaw", 0, 17, false),
    path("right eyebrow", 17, 5, false),
    path("left eyebrow", 22, 5, false),
    path("nose bridge", 27, 4, false),
    path("nostrils", 31, 5, false),
    path("right eye", 36, 6, true),
    path("left eye", 42, 6, true),
    path("outer lips", 48, 12, true),
    path("inner lips", 60, 8, true),
];

/// The standard 300-W flip permutation.
const IBUG68_MIRROR: [usize; 68] = [
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, // jaw
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17, // brows
    27, 28, 29, 30, // nose bridge
    35, 34, 33, 32, 31, // nostrils
    45, 44, 43, 42, 47, 46, // right eye -> left eye
    39, 38, 37, 36, 41, 40, // left eye -> right eye
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, // outer lips
    64, 63, 62, 61, 60, 67, 66, 65, // inner lips
];

impl Layout {
    /// The IMM face database's 58 points in 7 paths (jaw, eyes, brows, mouth, nose).
    pub const IMM58: Layout = Layout {
        name: "imm58",
        n_points: 58,
        paths: &IMM58_PATHS,
        mirror: &IMM58_MIRROR,
        ocular: Ocular::PathCentres(imm::LEFT_EYE_PATH, imm::RIGHT_EYE_PATH),
    };

    /// iBUG 300-W's 68 points (the scheme of dlib's XML files and `.pts` files).
    pub const IBUG68: Layout = Layout {
        name: "ibug68",
        n_points: 68,
        paths: &IBUG68_PATHS,
        mirror: &IBUG68_MIRROR,
        ocular: Ocular::Corners(ibug::RIGHT_EYE_OUTER, ibug::LEFT_EYE_OUTER),
    };

    /// The segments to draw between points: consecutive points of each path, plus the closing
    /// segment of closed paths.
    pub fn edges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.paths.iter().flat_map(|p| {
            let open = p.indices().zip(p.indices().skip(1));
            let close = (p.closed && p.len > 2).then_some((p.start + p.len - 1, p.start));
            open.chain(close)
        })
    }

    /// The path a point belongs to, or `None` for an index past the layout.
    pub fn path_of(&self, point: usize) -> Option<&Path> {
        self.paths.iter().find(|p| p.indices().contains(&point))
    }

    /// The points of a face mirrored horizontally in an image `width` pixels wide: each point's
    /// x becomes `width − x` and the left/right points swap places, so index `i` of the result
    /// is again the layout's point `i`. `points` must hold `n_points` points.
    pub fn flip_horizontal(&self, points: &[PixelPoint], width: f32) -> Vec<PixelPoint> {
        debug_assert_eq!(points.len(), self.n_points);
        self.mirror
            .iter()
            .map(|&src| {
                let p = points[src];
                PixelPoint::new(width - p.x, p.y)
            })
            .collect()
    }

    /// The inter-ocular distance of a face (the NME normaliser), or `None` when `points` does
    /// not hold this layout's number of points.
    pub fn interocular(&self, points: &[PixelPoint]) -> Option<f32> {
        if points.len() != self.n_points {
            return None;
        }
        match self.ocular {
            Ocular::Corners(a, b) => Some(points[a].distance(points[b])),
            Ocular::PathCentres(a, b) => {
                let c = |i: usize| centroid(&points[self.paths[i].indices()]);
                Some(c(a)?.distance(c(b)?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check_layout(layout: &Layout) {
        // Paths tile 0..n_points in order.
        let mut next = 0;
        for p in layout.paths {
            assert_eq!(
                p.start, next,
                "{}: path {} starts late",
                layout.name, p.name
            );
            next += p.len;
        }
        assert_eq!(next, layout.n_points);
        // The mirror is an involution over all points that keeps each point in a path of
        // the same size.
        assert_eq!(layout.mirror.len(), layout.n_points);
        for (i, &m) in layout.mirror.iter().enumerate() {
            assert_eq!(
                layout.mirror[m], i,
                "{}: mirror not an involution at {i}",
                layout.name
            );
            let (pi, pm) = (layout.path_of(i).unwrap(), layout.path_of(m).unwrap());
            assert_eq!(pi.len, pm.len);
        }
    }

    #[test]
    fn layouts_are_consistent() {
        check_layout(&Layout::IMM58);
        check_layout(&Layout::IBUG68);
    }

    #[test]
    fn edge_counts() {
        // IMM: 13+8+8+5+5+8+11 points; open paths give len-1 edges, closed len.
        assert_eq!(Layout::IMM58.edges().count(), 12 + 8 + 8 + 4 + 4 + 8 + 10);
        assert_eq!(
            Layout::IBUG68.edges().count(),
            16 + 4 + 4 + 3 + 4 + 6 + 6 + 12 + 8
        );
        assert!(Layout::IMM58.edges().any(|e| e == (20, 13)));
    }

    #[test]
    fn flip_twice_is_identity_and_keeps_semantics() {
        let layout = Layout::IBUG68;
        let pts: Vec<PixelPoint> = (0..68)
            .map(|i| PixelPoint::new(i as f32, 2.0 * i as f32))
            .collect();
        let once = layout.flip_horizontal(&pts, 100.0);
        // Point 36 of the flipped face comes from point 45 of the original.
        assert_eq!(once[36], PixelPoint::new(100.0 - 45.0, 90.0));
        assert_eq!(layout.flip_horizontal(&once, 100.0), pts);
    }

    #[test]
    fn interocular_distances() {
        let mut pts = vec![PixelPoint::default(); 68];
        pts[36] = PixelPoint::new(10.0, 10.0);
        pts[45] = PixelPoint::new(40.0, 50.0);
        assert_eq!(Layout::IBUG68.interocular(&pts), Some(50.0));
        assert_eq!(Layout::IBUG68.interocular(&pts[..10]), None);

        let mut imm = vec![PixelPoint::default(); 58];
        imm[13..21].fill(PixelPoint::new(100.0, 7.0));
        imm[21..29].fill(PixelPoint::new(40.0, 7.0));
        assert_eq!(Layout::IMM58.interocular(&imm), Some(60.0));
    }
}
