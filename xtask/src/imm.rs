//! Parts 1 and 2 as one [`Part`]: regress IMM landmarks from a downscaled grayscale photo with
//! a small CNN (the write-up's NoseNet and FaceNet), persons 1–32 training, 33–40 validating,
//! errors in the pixels of the 640×480 photos. `part1.rs` and `part2.rs` choose the net, the
//! points and the recipe.

use crate::runner::{Defaults, Part, RunArgs, SelectBy, Split};
use fkd_augment::{AugmentedResize, Augmenter};
use fkd_core::ImageSize;
use fkd_data::dataset::DataSet;
use fkd_landmarker::ModelCard;
use fkd_models::ConvRegressorConfig;

/// A whole-image IMM part: which net, which points, which recipe, and the report's words.
pub struct ImmPart {
    /// `part1` or `part2`.
    pub name: &'static str,
    /// Report title.
    pub title: &'static str,
    /// The write-up's framing of the task.
    pub intro: &'static str,
    /// `nose` or `face`: the net's name in the model card.
    pub arch: &'static str,
    /// The network.
    pub net: ConvRegressorConfig,
    /// Which points the net regresses (`None`: all 58).
    pub select: Option<Vec<usize>>,
    /// The recipe when the command line says nothing.
    pub defaults: Defaults,
}

impl Part for ImmPart {
    type Step = AugmentedResize;

    fn name(&self) -> &'static str {
        self.name
    }

    fn title(&self) -> &'static str {
        self.title
    }

    fn intro(&self) -> String {
        self.intro.to_string()
    }

    fn defaults(&self) -> Defaults {
        self.defaults.clone()
    }

    fn select_by(&self) -> SelectBy {
        if self.whole_face() {
            SelectBy::Nme
        } else {
            SelectBy::MeanPx
        }
    }

    fn input(&self) -> ImageSize {
        ImageSize::new(self.net.input.1 as u32, self.net.input.0 as u32)
    }

    fn load(&self, args: &RunArgs) -> anyhow::Result<Split> {
        let dir = crate::data::ensure(&fkd_data::fetch::IMM, &args.root.path(), args.offline)?;
        let imm = DataSet::imm(&dir, args.policy())?;
        let (train, valid) = imm.split_imm_persons();
        let (w, h) = (self.net.input.1, self.net.input.0);
        Ok(Split {
            description: format!(
                "IMM face database ({}): persons 1–32 train ({} faces), persons 33–40 validate \
                 ({} faces). Images are converted to grayscale in [-0.5, 0.5] and resized to \
                 {w}×{h}; targets are the points in normalised coordinates (x/W, y/H).",
                dir.display(),
                train.len().min(args.limit.unwrap_or(usize::MAX)),
                valid.len().min(args.limit.unwrap_or(usize::MAX)),
            ),
            train,
            valid,
        })
    }

    fn step(&self, augmenter: Option<Augmenter>) -> AugmentedResize {
        AugmentedResize::new(self.input(), self.select.clone(), augmenter)
    }

    fn card(&self) -> ModelCard {
        let input = self.input();
        ModelCard {
            part: self.name.into(),
            arch: self.arch.into(),
            input: [input.width, input.height],
            points: self.select.as_ref().map_or(58, Vec::len),
            enlarge: None,
            flip_test: false,
            heatmap: None,
            select: self.select.clone(),
            annotation_offset: None,
        }
    }

    fn error_units(&self) -> &'static str {
        "the pixels of the original 640×480 photos"
    }
}
