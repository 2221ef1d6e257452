//! What distinguishes one part of the write-up from another: the [`Part`] trait (data, loader
//! step, model card, recipe, report words), and what a part hands the runner ([`Split`],
//! [`ExtraFigures`]).

use super::args::{Defaults, RunArgs, SelectBy};
use candle_nn::{VarBuilder, VarMap};
use fkd_augment::Augmenter;
use fkd_core::{ImageSize, Layout};
use fkd_data::dataset::{DataSet, Sample};
use fkd_data::prepare::Prepare;
use fkd_landmarker::{ModelCard, Net};
use std::path::Path;

/// Training and validation faces, and how the report describes the split.
pub struct Split {
    pub train: DataSet,
    pub valid: DataSet,
    /// The report's "Data" paragraph.
    pub description: String,
}

/// A report section of a part's own figures.
pub struct ExtraFigures {
    /// The section's heading.
    pub heading: String,
    /// `(file in the run folder, caption)`, in order.
    pub figures: Vec<(String, String)>,
}

/// What distinguishes one part of the write-up from another.
pub trait Part {
    /// The loader step that turns a sample into (input, target).
    type Step: Prepare;

    /// `part1` … `part4`.
    fn name(&self) -> &'static str;
    /// Report title.
    fn title(&self) -> &'static str;
    /// The write-up's framing of the task, for the report's first paragraph.
    fn intro(&self) -> String;
    /// The layout of the data set's annotations.
    fn layout(&self) -> Layout {
        self.card().layout()
    }
    /// Whether the net predicts every point of the layout (then figures draw contours, NME is
    /// reported and the flip test applies).
    fn whole_face(&self) -> bool {
        self.card().whole_face()
    }
    /// The recipe when the command line says nothing.
    fn defaults(&self) -> Defaults;
    /// What picks the best epoch.
    fn select_by(&self) -> SelectBy;
    /// The network input size.
    fn input(&self) -> ImageSize;
    /// Loads the training and validation faces.
    fn load(&self, args: &RunArgs) -> anyhow::Result<Split>;
    /// The loader step, augmenting with `augmenter` (training) or not (validation).
    fn step(&self, augmenter: Option<Augmenter>) -> Self::Step;
    /// Builds the network on `vb`: the net the part's card names.
    fn build(&self, vb: VarBuilder<'_>) -> anyhow::Result<Net> {
        Ok(Net::build(&self.card(), vb)?)
    }
    /// Sets initial weights other than the seeded ones (e.g. `--init FILE`), before training
    /// starts (not when resuming).
    fn init(&self, _varmap: &VarMap) -> anyhow::Result<()> {
        Ok(())
    }
    /// The card that identifies this part's trained models: which net, what it reads, how
    /// its outputs decode and which points they are (fkd-landmarker rebuilds the net from it).
    fn card(&self) -> ModelCard;
    /// Extra report text under the network summary (the write-up's architecture notes).
    fn network_notes(&self) -> Option<String> {
        None
    }
    /// Figures of the part's own (e.g. Part 4's heatmaps), written into `out` for the trained
    /// `net` and the validation faces.
    fn extra_figures(
        &self,
        _net: &Net,
        _valid: &[Sample],
        _out: &Path,
    ) -> anyhow::Result<Option<ExtraFigures>> {
        Ok(None)
    }
    /// How many training faces the batch-norm statistics are recomputed from before each
    /// validation ("precise BN", `--bn-stats`); 0 for a net without batch norm.
    fn bn_stats_faces(&self) -> usize {
        0
    }
    /// How many best and worst validation faces the report shows.
    fn shown_faces(&self) -> usize {
        2
    }
    /// How the report names the unit of the pixel errors.
    fn error_units(&self) -> &'static str;
    /// What the loss compares, for the report ("normalised coordinates", "heatmaps").
    fn loss_target(&self) -> &'static str {
        "normalised coordinates"
    }
    /// Whether the loss compares heatmaps with targets in [0, 1] (what `--loss awing` needs).
    fn heatmap_targets(&self) -> bool {
        false
    }
}
