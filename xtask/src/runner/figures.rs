//! The report's figures: the loader's samples, loss and metric curves, the learning-rate study,
//! the best and worst validation faces, learned filters, the error curve and the part's own.

use super::part::{ExtraFigures, Part};
use super::train::Run;
use anyhow::Context;
use candle_core::Device;
use fkd_core::{ImageSize, PixelPoint};
use fkd_data::batch::Loader;
use fkd_data::dataset::{DataSet, Sample};
use fkd_data::img::GrayImage;
use fkd_data::prepare::Prepare;
use fkd_landmarker::Net;
use fkd_viz::{Curve, PREDICTION, TRUTH};
use std::path::Path;

/// A grid of training samples exactly as the loader gives them (augmented), truth in blue.
pub(super) fn samples_figure<P: Part, S: Prepare>(
    part: &P,
    loader: &Loader<S>,
    path: &Path,
) -> anyhow::Result<()> {
    let n = loader.samples().len().min(8);
    let idx: Vec<usize> = loader.order(0).into_iter().take(n).collect();
    let batch = loader.batch(&idx, 0)?;
    let (_, _, h, w) = batch.images.dims4()?;
    let size = ImageSize::new(w as u32, h as u32);
    let images = batch
        .images
        .to_device(&Device::Cpu)?
        .flatten_from(1)?
        .to_vec2::<f32>()?;
    let targets = batch.targets.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
    let scale = if size.width <= 80 {
        3
    } else if size.width <= 160 {
        2
    } else {
        1
    };
    let layout = part.whole_face().then(|| part.layout());
    let card = part.card();
    let mut tiles = Vec::new();
    for (img, t) in images.into_iter().zip(targets) {
        let g = GrayImage::new(size.width, size.height, img)
            .context("a batch image of the wrong size")?;
        let pts = card.decode(&t, size);
        tiles.push(fkd_viz::draw_landmarks(
            &g,
            &[(&pts, TRUTH)],
            layout.as_ref(),
            scale,
        ));
    }
    fkd_viz::save_png(&fkd_viz::grid(&tiles, 4, 4), path)?;
    Ok(())
}

/// The report's figures, as paths relative to the output folder.
pub(super) struct Figures {
    pub(super) loss: String,
    pub(super) metric: Option<String>,
    pub(super) lr_study: Option<String>,
    pub(super) good: String,
    pub(super) bad: String,
    pub(super) filters: Option<String>,
    pub(super) ced: Option<String>,
    pub(super) extra: Option<ExtraFigures>,
    pub(super) good_ids: Vec<String>,
    pub(super) bad_ids: Vec<String>,
}

/// Largest side of a face shown in the best/worst figures.
pub(super) const SHOWN_SIDE: u32 = 320;

impl Figures {
    /// Draws every figure of the report into `out`; `main` is the run they show.
    pub(super) fn draw<P: Part>(
        part: &P,
        runs: &[Run],
        main: &Run,
        valid: &DataSet,
        out: &Path,
        loss_label: &str,
    ) -> anyhow::Result<Figures> {
        let loss = "loss.png".to_string();
        fkd_viz::loss_curves(
            out.join(&loss),
            &loss_curves(main, ""),
            &format!("{loss_label} loss, lr {:e}", main.lr),
            true,
        )?;
        let (good_ids, bad_ids) = faces_figures(part, main, valid, out)?;
        Ok(Figures {
            loss,
            metric: metric_figure(part, runs, out)?,
            lr_study: lr_study_figure(runs, out, loss_label)?,
            good: "good.png".into(),
            bad: "bad.png".into(),
            filters: Some(filters_figure(&main.net, out)?),
            ced: if part.whole_face() {
                Some(ced_figure(runs, out)?)
            } else {
                None
            },
            extra: part.extra_figures(&main.net, &valid.samples, out)?,
            good_ids,
            bad_ids,
        })
    }
}

/// A run's training and validation loss per epoch, named with `suffix`.
fn loss_curves(r: &Run, suffix: &str) -> Vec<Curve> {
    let e = &r.history.epochs;
    vec![
        Curve::new(
            format!("train{suffix}"),
            e.iter()
                .map(|x| (x.epoch as f32 + 1.0, x.train_loss as f32))
                .collect(),
        ),
        Curve::new(
            format!("validation{suffix}"),
            e.iter()
                .filter_map(|x| Some((x.epoch as f32 + 1.0, x.valid_loss? as f32)))
                .collect(),
        ),
    ]
}

/// The part's validation metric per epoch, one curve per run (none when nothing was scored).
fn metric_figure<P: Part>(part: &P, runs: &[Run], out: &Path) -> anyhow::Result<Option<String>> {
    let curves: Vec<Curve> = runs
        .iter()
        .map(|r| {
            Curve::new(
                format!("lr {:e}", r.lr),
                r.history
                    .epochs
                    .iter()
                    .filter_map(|x| Some((x.epoch as f32 + 1.0, x.valid_metric? as f32)))
                    .collect(),
            )
        })
        .filter(|c| !c.values.is_empty())
        .collect();
    if curves.is_empty() {
        return Ok(None);
    }
    fkd_viz::epoch_curves(
        out.join("metric.png"),
        &curves,
        &format!("validation {} per epoch", part.select_by().name()),
        part.select_by().name(),
        true,
    )?;
    Ok(Some("metric.png".to_string()))
}

/// Every run's losses together (the learning-rate study), when there are several runs.
fn lr_study_figure(runs: &[Run], out: &Path, loss_label: &str) -> anyhow::Result<Option<String>> {
    if runs.len() < 2 {
        return Ok(None);
    }
    let all: Vec<Curve> = runs
        .iter()
        .flat_map(|r| loss_curves(r, &format!(" lr {:e}", r.lr)))
        .collect();
    fkd_viz::loss_curves(
        out.join("lr_study.png"),
        &all,
        &format!("learning-rate study ({loss_label})"),
        true,
    )?;
    Ok(Some("lr_study.png".to_string()))
}

/// The best and worst validation faces of the main run (`good.png`, `bad.png`): truth blue,
/// prediction red. Returns their captions.
fn faces_figures<P: Part>(
    part: &P,
    main: &Run,
    valid: &DataSet,
    out: &Path,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let preds = &main.best.preds;
    let mut order: Vec<usize> = (0..preds.len()).collect();
    order.sort_by(|&a, &b| preds[a].1.total_cmp(&preds[b].1));
    let layout = part.whole_face().then(|| part.layout());
    let card = part.card();
    let pick = |ids: &[usize]| -> anyhow::Result<(image::RgbImage, Vec<String>)> {
        let mut tiles = Vec::new();
        let mut captions = Vec::new();
        for &i in ids {
            let s = &valid.samples[i];
            let (img, map) = shown_face(s)?;
            let moved =
                |p: &[PixelPoint]| -> Vec<PixelPoint> { p.iter().map(|&q| map.apply(q)).collect() };
            let truth = moved(&card.truth(&s.points));
            let pred = moved(&preds[i].0);
            tiles.push(fkd_viz::draw_landmarks(
                &img,
                &[(&truth, TRUTH), (&pred, PREDICTION)],
                layout.as_ref(),
                1,
            ));
            let nme = main
                .best
                .nmes
                .as_ref()
                .and_then(|n| n.get(i))
                .map(|n| format!(", NME {:.1}%", 100.0 * n))
                .unwrap_or_default();
            captions.push(format!("{}: {:.1} px{nme}", s.id, preds[i].1));
        }
        let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
        Ok((
            fkd_viz::captioned_grid(&tiles, &refs, ids.len().max(1), 6)?,
            captions,
        ))
    };
    let k = order.len().min(part.shown_faces());
    let (good_img, good_ids) = pick(&order[..k])?;
    let worst: Vec<usize> = order[order.len() - k..].iter().rev().copied().collect();
    let (bad_img, bad_ids) = pick(&worst)?;
    fkd_viz::save_png(&good_img, out.join("good.png"))?;
    fkd_viz::save_png(&bad_img, out.join("bad.png"))?;
    Ok((good_ids, bad_ids))
}

/// The first conv's learned filters as a grid of grey tiles.
fn filters_figure(net: &Net, out: &Path) -> anyhow::Result<String> {
    let w = net.conv1_weights().to_device(&Device::Cpu)?;
    let dims = w.dims4()?;
    let weights = w.flatten_all()?.to_vec1::<f32>()?;
    let grid = fkd_viz::filter_grid(&weights, [dims.0, dims.1, dims.2, dims.3], 8)?;
    fkd_viz::save_png(&grid, out.join("filters.png"))?;
    Ok("filters.png".to_string())
}

/// The cumulative NME distribution of every run's best weights.
fn ced_figure(runs: &[Run], out: &Path) -> anyhow::Result<String> {
    let series: Vec<Curve> = runs
        .iter()
        .filter_map(|r| {
            let errs = r.best.nmes.as_ref()?;
            Some(Curve::cumulative(format!("lr {:e}", r.lr), errs))
        })
        .collect();
    fkd_viz::ced_curve(out.join("ced.png"), &series, "NME (inter-ocular)", 0.2)?;
    Ok("ced.png".to_string())
}

/// A face as the figures show it: a photo of at most twice [`SHOWN_SIDE`] whole (IMM's 640×480
/// at half size), a larger one as the square around its face with a margin; scaled to at most
/// [`SHOWN_SIDE`] pixels. With the map from source pixels to the shown image.
pub(super) fn shown_face(s: &Sample) -> anyhow::Result<(GrayImage, fkd_core::Affine)> {
    let img = fkd_data::img::load_gray(&s.image)?;
    let longest = s.size.width.max(s.size.height).max(1);
    let face = s.bbox.or_else(|| fkd_core::FaceBox::around(&s.points));
    match face {
        Some(b) if longest > 2 * SHOWN_SIDE => {
            let crop = fkd_data::crop::Crop::around(b, 1.4, SHOWN_SIDE);
            let shown = crop.apply(&img, 0.0);
            let back = crop
                .to_source_map()
                .inverse()
                .context("an empty face box")?;
            Ok((shown, back))
        }
        _ => {
            let k = (SHOWN_SIDE as f32 / longest as f32).min(1.0);
            let (w, h) = (
                ((s.size.width as f32 * k).round() as u32).max(1),
                ((s.size.height as f32 * k).round() as u32).max(1),
            );
            Ok((
                img.resize(w, h),
                fkd_core::Affine::scaling(f64::from(k), f64::from(k)),
            ))
        }
    }
}
