//! The ranges augmentation draws from, as a serde-able [`AugmentConfig`], and their validation.
//!
//! `AugmentConfig::default()` is the write-up's Part 2 recipe: rotation ±15°, shift ±10 px at
//! 640×480, a mild isotropic scale, brightness and contrast jitter, and flips half of the time.
//! Shifts are fractions of the image size, so the same config suits any input resolution.

use crate::warp::Fill;
use serde::{Deserialize, Serialize};

/// A closed range `[min, max]` to draw a factor from uniformly (`min == max` fixes it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
}

impl Interval {
    /// The range `[min, max]`.
    pub const fn new(min: f32, max: f32) -> Self {
        Self { min, max }
    }

    /// The one-value range `[v, v]`.
    pub const fn fixed(v: f32) -> Self {
        Self::new(v, v)
    }

    /// `min + u·(max − min)` for `u` in `[0, 1)`: exactly `min` when the range is one value.
    pub fn at(&self, u: f32) -> f32 {
        self.min + u * (self.max - self.min)
    }
}

/// Random occlusion: with probability `prob`, one rectangle of the augmented image, each side a
/// fraction drawn from `size` of the image's side, placed anywhere inside it, is painted one
/// flat gray drawn uniformly, as a hand, a microphone or hair hides part of a face. The points
/// stay where they are: the net learns to place a hidden point from the rest of the face.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Occlusion {
    /// Probability of one rectangle per sample, in `[0, 1]`; 0 turns occlusion off.
    pub prob: f32,
    /// Each side of the rectangle as a fraction of the image's, within `(0, 1]`.
    pub size: Interval,
}

impl Default for Occlusion {
    /// Off; when turned on, sides of 10–40 % of the image's.
    fn default() -> Self {
        Self {
            prob: 0.0,
            size: Interval::new(0.1, 0.4),
        }
    }
}

/// What augmentation may do to a sample, drawn independently per sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Rotation is uniform in `±rotation_deg` degrees.
    pub rotation_deg: f32,
    /// Horizontal shift is uniform in `±shift_x × width` pixels.
    pub shift_x: f32,
    /// Vertical shift is uniform in `±shift_y × height` pixels.
    pub shift_y: f32,
    /// Isotropic scale factor.
    pub scale: Interval,
    /// Extra horizontal scale factor (a wider or narrower face).
    pub stretch_x: Interval,
    /// Extra vertical scale factor (a longer or shorter face).
    pub stretch_y: Interval,
    /// Added to every pixel: uniform in `±brightness` (pixel values span `[-0.5, 0.5]`).
    pub brightness: f32,
    /// Factor applied to each pixel's difference from the image mean.
    pub contrast: Interval,
    /// Probability of a horizontal flip, in `[0, 1]`.
    pub flip_prob: f32,
    /// What pixels brought in from outside the image read.
    pub fill: Fill,
    /// Random occlusion (off unless its probability is above 0).
    pub occlusion: Occlusion,
}

impl Default for AugmentConfig {
    /// The write-up's Part 2 settings (stretch off: the write-up only proposed it, see
    /// [`AugmentConfig::with_stretch`]).
    fn default() -> Self {
        Self {
            rotation_deg: 15.0,
            // ±10 px of the write-up's 640×480 originals.
            shift_x: 10.0 / 640.0,
            shift_y: 10.0 / 480.0,
            scale: Interval::new(0.95, 1.05),
            stretch_x: Interval::fixed(1.0),
            stretch_y: Interval::fixed(1.0),
            brightness: 0.1,
            contrast: Interval::new(0.8, 1.2),
            flip_prob: 0.5,
            fill: Fill::Edge,
            occlusion: Occlusion::default(),
        }
    }
}

/// Why a config (or the layout given with it) cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AugmentError {
    /// A field is out of its allowed range or not a finite number.
    #[error("augmentation setting `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// The field's name as written in a config file.
        field: &'static str,
        /// The offending value, as written.
        value: String,
        /// What the field must satisfy.
        reason: &'static str,
    },
    /// The layout's mirror permutation cannot be applied to its points.
    #[error("layout `{layout}`: {reason}")]
    InvalidLayout {
        /// The layout's name.
        layout: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl AugmentConfig {
    /// No augmentation at all: [`Augmenter::apply`](crate::Augmenter::apply) returns the image
    /// and points exactly as given.
    pub fn none() -> Self {
        Self {
            rotation_deg: 0.0,
            shift_x: 0.0,
            shift_y: 0.0,
            scale: Interval::fixed(1.0),
            stretch_x: Interval::fixed(1.0),
            stretch_y: Interval::fixed(1.0),
            brightness: 0.0,
            contrast: Interval::fixed(1.0),
            flip_prob: 0.0,
            fill: Fill::Edge,
            occlusion: Occlusion::default(),
        }
    }

    /// This config with independent horizontal and vertical stretch in `0.9–1.1`: what the
    /// write-up proposed for faces of unusual shape.
    pub fn with_stretch(self) -> Self {
        Self {
            stretch_x: Interval::new(0.9, 1.1),
            stretch_y: Interval::new(0.9, 1.1),
            ..self
        }
    }

    /// This config with random occlusion at probability `prob` (sides of the configured size,
    /// 10–40 % of the image's by default; see [`Occlusion`]).
    pub fn with_occlusion(self, prob: f32) -> Self {
        Self {
            occlusion: Occlusion {
                prob,
                ..self.occlusion
            },
            ..self
        }
    }

    /// Checks every field: finite, ranges ordered, magnitudes non-negative, factors positive,
    /// probability in `[0, 1]`.
    pub fn validate(&self) -> Result<(), AugmentError> {
        let bad = |field, value: String, reason| AugmentError::InvalidConfig {
            field,
            value,
            reason,
        };
        let magnitudes = [
            ("rotation_deg", self.rotation_deg, 180.0),
            ("shift_x", self.shift_x, 1.0),
            ("shift_y", self.shift_y, 1.0),
            ("brightness", self.brightness, 1.0),
        ];
        for (field, v, max) in magnitudes {
            if !(v.is_finite() && (0.0..=max).contains(&v)) {
                let reason = match field {
                    "rotation_deg" => "must be a number of degrees in [0, 180]",
                    "brightness" => "must be in [0, 1] (pixel values span 1)",
                    _ => "must be a fraction of the image size in [0, 1]",
                };
                return Err(bad(field, v.to_string(), reason));
            }
        }
        let factors = [
            ("scale", self.scale, false),
            ("stretch_x", self.stretch_x, false),
            ("stretch_y", self.stretch_y, false),
            ("contrast", self.contrast, true),
        ];
        for (field, r, zero_ok) in factors {
            let shown = format!("[{}, {}]", r.min, r.max);
            if !(r.min.is_finite() && r.max.is_finite()) {
                return Err(bad(field, shown, "must be finite"));
            }
            if r.min > r.max {
                return Err(bad(field, shown, "min must not exceed max"));
            }
            if r.min < 0.0 || (r.min == 0.0 && !zero_ok) {
                let reason = if zero_ok {
                    "must not be negative"
                } else {
                    "must be positive (a zero or negative factor collapses or mirrors the image)"
                };
                return Err(bad(field, shown, reason));
            }
        }
        if !(0.0..=1.0).contains(&self.flip_prob) {
            return Err(bad(
                "flip_prob",
                self.flip_prob.to_string(),
                "must be a probability in [0, 1]",
            ));
        }
        let occ = self.occlusion;
        if !(0.0..=1.0).contains(&occ.prob) {
            return Err(bad(
                "occlusion.prob",
                occ.prob.to_string(),
                "must be a probability in [0, 1]",
            ));
        }
        let (lo, hi) = (occ.size.min, occ.size.max);
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(bad(
                "occlusion.size",
                format!("[{lo}, {hi}]"),
                "must be fractions of the side with 0 < min ≤ max ≤ 1",
            ));
        }
        if let Fill::Constant(v) = self.fill
            && !v.is_finite()
        {
            return Err(bad("fill", v.to_string(), "a constant fill must be finite"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_the_write_up_settings_and_valid() {
        let d = AugmentConfig::default();
        assert_eq!(d.rotation_deg, 15.0);
        // ±10 px at 640×480 is ±2.5 px at 160×120.
        assert_eq!(d.shift_x * 160.0, 2.5);
        assert_eq!(d.shift_y * 120.0, 2.5);
        assert_eq!(d.flip_prob, 0.5);
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(AugmentConfig::none().validate(), Ok(()));
        let s = d.with_stretch();
        assert_eq!(s.stretch_x, Interval::new(0.9, 1.1));
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn invalid_settings_are_named() {
        let field_of = |c: AugmentConfig| match c.validate() {
            Err(AugmentError::InvalidConfig { field, .. }) => field,
            other => panic!("expected an invalid config, got {other:?}"),
        };
        let d = AugmentConfig::default();
        assert_eq!(
            field_of(AugmentConfig {
                rotation_deg: -1.0,
                ..d
            }),
            "rotation_deg"
        );
        assert_eq!(
            field_of(AugmentConfig {
                shift_y: f32::NAN,
                ..d
            }),
            "shift_y"
        );
        assert_eq!(
            field_of(AugmentConfig {
                brightness: 2.0,
                ..d
            }),
            "brightness"
        );
        let reversed = Interval::new(1.1, 0.9);
        assert_eq!(
            field_of(AugmentConfig {
                scale: reversed,
                ..d
            }),
            "scale"
        );
        let zero = Interval::new(0.0, 1.0);
        assert_eq!(
            field_of(AugmentConfig {
                stretch_x: zero,
                ..d
            }),
            "stretch_x"
        );
        // A zero contrast (flat image) is allowed; a negative one is not.
        assert_eq!(
            AugmentConfig {
                contrast: zero,
                ..d
            }
            .validate(),
            Ok(())
        );
        let negative = Interval::new(-0.1, 1.0);
        assert_eq!(
            field_of(AugmentConfig {
                contrast: negative,
                ..d
            }),
            "contrast"
        );
        let inf = Interval::new(1.0, f32::INFINITY);
        assert_eq!(
            field_of(AugmentConfig {
                stretch_y: inf,
                ..d
            }),
            "stretch_y"
        );
        assert_eq!(
            field_of(AugmentConfig {
                flip_prob: 1.5,
                ..d
            }),
            "flip_prob"
        );
        let fill = Fill::Constant(f32::NAN);
        assert_eq!(field_of(AugmentConfig { fill, ..d }), "fill");
        let msg = AugmentConfig {
            flip_prob: 1.5,
            ..d
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(
            msg,
            "augmentation setting `flip_prob` = 1.5: must be a probability in [0, 1]"
        );
    }

    /// Occlusion: a probability in [0, 1] and side fractions 0 < min ≤ max ≤ 1, else the
    /// field is named; a partial config fills the size from the default.
    #[test]
    fn occlusion_settings_are_checked() {
        let with = |prob, min, max| AugmentConfig {
            occlusion: Occlusion {
                prob,
                size: Interval::new(min, max),
            },
            ..AugmentConfig::default()
        };
        assert_eq!(with(0.5, 0.1, 0.4).validate(), Ok(()));
        assert_eq!(with(1.0, 1.0, 1.0).validate(), Ok(()));
        for (c, field) in [
            (with(1.5, 0.1, 0.4), "occlusion.prob"),
            (with(f32::NAN, 0.1, 0.4), "occlusion.prob"),
            (with(0.5, 0.0, 0.4), "occlusion.size"),
            (with(0.5, 0.5, 0.2), "occlusion.size"),
            (with(0.5, 0.2, 1.5), "occlusion.size"),
            (with(0.5, f32::NAN, 0.4), "occlusion.size"),
        ] {
            assert!(
                matches!(c.validate(), Err(AugmentError::InvalidConfig { field: f, .. }) if f == field),
                "{c:?}"
            );
        }
        let c: AugmentConfig = serde_json::from_str(r#"{"occlusion": {"prob": 0.5}}"#).unwrap();
        assert_eq!(c.occlusion.prob, 0.5);
        assert_eq!(c.occlusion.size, Occlusion::default().size);
        assert_eq!(AugmentConfig::default().occlusion.prob, 0.0);
    }

    #[test]
    fn serde_fills_missing_fields_with_defaults_and_rejects_unknown_ones() {
        let c: AugmentConfig =
            serde_json::from_str(r#"{"rotation_deg": 5, "fill": {"constant": -0.5}}"#).unwrap();
        assert_eq!(c.rotation_deg, 5.0);
        assert_eq!(c.fill, Fill::Constant(-0.5));
        assert_eq!(c.scale, AugmentConfig::default().scale);
        let edge: AugmentConfig = serde_json::from_str(r#"{"fill": "edge"}"#).unwrap();
        assert_eq!(edge, AugmentConfig::default());
        assert!(serde_json::from_str::<AugmentConfig>(r#"{"rotation": 5}"#).is_err());
        let d = AugmentConfig::default().with_stretch();
        let back: AugmentConfig =
            serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }
}
