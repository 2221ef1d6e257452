//! Line charts as PNG: loss per epoch (train and validation, or several runs of the learning-rate
//! study on one plot) and cumulative error distributions (fraction of faces whose error is at
//! most x), drawn with plotters into an in-memory buffer and saved with [`save_png`].

use crate::{Result, VizError, ensure_font, save_png};
use image::RgbImage;
use plotters::backend::{BitMapBackend, DrawingBackend, RGBPixel};
use plotters::chart::{ChartBuilder, SeriesLabelPosition};
use plotters::coord::Shift;
use plotters::coord::combinators::{BindKeyPoints, IntoLogRange};
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::drawing::{DrawingArea, DrawingAreaErrorKind, IntoDrawingArea};
use plotters::element::{Circle, PathElement};
use plotters::series::LineSeries;
use plotters::style::{BLACK, Color, IntoFont, RGBColor, WHITE};
use std::ops::Range;
use std::path::Path;

/// Width and height in pixels of every chart.
pub const PLOT_SIZE: (u32, u32) = (800, 500);

/// Series colours, in order (Tableau 10), so the nth curve has the same colour in every figure.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Curves with at most this many points also get a marker per point (a few epochs read better).
const MARKER_LIMIT: usize = 60;

/// A drawing area on an in-memory RGB buffer.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a, RGBPixel>, Shift>;

/// The error plotters' bitmap drawing operations return.
pub(crate) type DrawErr =
    DrawingAreaErrorKind<<BitMapBackend<'static, RGBPixel> as DrawingBackend>::ErrorType>;

/// One named curve: `(x, y)` points joined in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Legend entry.
    pub label: String,
    /// Points, e.g. `(epoch, loss)` or `(error, fraction of faces)`.
    pub values: Vec<(f32, f32)>,
}

impl Curve {
    /// A curve from a label and its points.
    pub fn new(label: impl Into<String>, values: Vec<(f32, f32)>) -> Self {
        Self {
            label: label.into(),
            values,
        }
    }

    /// The cumulative error distribution of per-face `errors`: a step curve from `(0, 0)` that
    /// rises by `1/n` at each error. Non-finite errors (failed faces) count in `n` but are never
    /// reached, so the curve ends below 1 when there are any.
    pub fn cumulative(label: impl Into<String>, errors: &[f32]) -> Self {
        let n = errors.len().max(1) as f32;
        let mut finite: Vec<f32> = errors.iter().copied().filter(|e| e.is_finite()).collect();
        finite.sort_by(f32::total_cmp);
        let mut values = Vec::with_capacity(2 * finite.len() + 1);
        values.push((0.0, 0.0));
        for (i, &e) in finite.iter().enumerate() {
            values.push((e, i as f32 / n));
            values.push((e, (i + 1) as f32 / n));
        }
        Self::new(label, values)
    }
}

/// Writes a chart of loss per epoch (`values` are `(epoch, loss)`) to `path` as a
/// [`PLOT_SIZE`] PNG, one line per curve with a legend. With `log_y` the loss axis is
/// logarithmic and non-positive losses are left out. Non-finite points are always left out.
pub fn loss_curves(
    path: impl AsRef<Path>,
    series: &[Curve],
    title: &str,
    log_y: bool,
) -> Result<()> {
    epoch_curves(path, series, title, "loss", log_y)
}

/// [`loss_curves`] for any per-epoch `quantity` (the y axis's name, e.g. "NME").
pub fn epoch_curves(
    path: impl AsRef<Path>,
    series: &[Curve],
    title: &str,
    quantity: &str,
    log_y: bool,
) -> Result<()> {
    let path = path.as_ref();
    let series: Vec<Curve> = series
        .iter()
        .map(|c| Curve {
            label: c.label.clone(),
            values: c
                .values
                .iter()
                .copied()
                .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0))
                .collect(),
        })
        .collect();
    let xs = span(series.iter().flat_map(|c| c.values.iter().map(|p| p.0)));
    let ys = span(series.iter().flat_map(|c| c.values.iter().map(|p| p.1)));
    let x_range = pad_linear(xs.unwrap_or((0.0, 1.0)), 0.0);
    let y_label = if log_y {
        format!("{quantity} (log scale)")
    } else {
        quantity.to_string()
    };
    let spec = ChartSpec {
        title,
        x_label: "epoch",
        y_label: &y_label,
        legend: SeriesLabelPosition::UpperRight,
    };
    let mut img = RgbImage::new(PLOT_SIZE.0, PLOT_SIZE.1);
    draw_on(&mut img, path, |area| {
        if log_y {
            let (lo, hi) = ys.unwrap_or((0.1, 1.0));
            let (lo, hi) = (lo / 1.25, hi * 1.25);
            // plotters labels only whole decades and what lies above the first one: too few
            // labels when the losses span one or two decades.
            let y = (lo..hi).log_scale().with_key_points(log_ticks(lo, hi));
            draw_chart(area, &spec, x_range, y, &series)
        } else {
            let y = pad_linear(ys.unwrap_or((0.0, 1.0)), 0.05);
            draw_chart(area, &spec, x_range, y, &series)
        }
    })?;
    save_png(&img, path)
}

/// Writes the cumulative error distribution chart of `series` to `path` as a [`PLOT_SIZE`] PNG:
/// fraction of faces (0 to 1) against error from 0 to `max_x`, labelled `x_label` (e.g.
/// "NME (inter-ocular)" or "error (pixels)"). Curves are step curves as
/// [`Curve::cumulative`] makes them, cut at `max_x`. A `max_x` that is not positive and finite
/// is replaced by the largest error.
pub fn ced_curve(
    path: impl AsRef<Path>,
    series: &[Curve],
    x_label: &str,
    max_x: f32,
) -> Result<()> {
    let path = path.as_ref();
    let max_x = if max_x.is_finite() && max_x > 0.0 {
        max_x
    } else {
        span(series.iter().flat_map(|c| c.values.iter().map(|p| p.0)))
            .map(|(_, hi)| hi)
            .filter(|&hi| hi > 0.0)
            .unwrap_or(1.0)
    };
    let series: Vec<Curve> = series
        .iter()
        .map(|c| Curve::new(c.label.clone(), clip_step(&c.values, max_x)))
        .collect();
    let spec = ChartSpec {
        title: "Cumulative error distribution",
        x_label,
        y_label: "fraction of faces",
        legend: SeriesLabelPosition::LowerRight,
    };
    let mut img = RgbImage::new(PLOT_SIZE.0, PLOT_SIZE.1);
    draw_on(&mut img, path, |area| {
        draw_chart(area, &spec, 0.0..max_x, 0.0f32..1.0, &series)
    })?;
    save_png(&img, path)
}

/// Runs `draw` on a plotters drawing area over `img` (with the embedded font registered),
/// naming `path` in any error.
pub(crate) fn draw_on(
    img: &mut RgbImage,
    path: &Path,
    draw: impl FnOnce(&Area<'_>) -> std::result::Result<(), DrawErr>,
) -> Result<()> {
    ensure_font()?;
    let plot_err = |message: String| VizError::Plot {
        path: path.to_path_buf(),
        message,
    };
    let (w, h) = img.dimensions();
    let backend = BitMapBackend::<RGBPixel>::with_buffer_and_format(img.as_mut(), (w, h))
        .map_err(|e| plot_err(e.to_string()))?;
    let area = backend.into_drawing_area();
    draw(&area)
        .and_then(|()| area.present())
        .map_err(|e| plot_err(e.to_string()))
}

/// Titles and legend placement of a chart.
struct ChartSpec<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    legend: SeriesLabelPosition,
}

/// Draws a white chart with a mesh, axis labels, one coloured line per curve and a legend.
fn draw_chart<Y>(
    area: &Area<'_>,
    spec: &ChartSpec<'_>,
    x: Range<f32>,
    y: Y,
    series: &[Curve],
) -> std::result::Result<(), DrawErr>
where
    Y: AsRangedCoord<Value = f32>,
    Y::CoordDescType: Ranged<ValueType = f32> + ValueFormatter<f32>,
{
    area.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(area)
        .caption(spec.title, ("sans-serif", 24).into_font())
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(spec.x_label)
        .y_desc(spec.y_label)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    for (i, curve) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let style = colour.stroke_width(2);
        chart
            .draw_series(LineSeries::new(curve.values.iter().copied(), style))?
            .label(curve.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        if curve.values.len() <= MARKER_LIMIT {
            chart.draw_series(
                curve
                    .values
                    .iter()
                    .map(|&p| Circle::new(p, 3, colour.filled())),
            )?;
        }
    }
    if series.iter().any(|c| !c.label.is_empty()) {
        chart
            .configure_series_labels()
            .position(spec.legend.clone())
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.5))
            .draw()?;
    }
    Ok(())
}

/// A tick label: plain decimals for ordinary magnitudes, scientific notation otherwise.
fn tick(v: f32) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if (1e-3..1e5).contains(&a) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:.1e}")
    }
}

/// Tick values for a log axis over `lo..hi` (`0 < lo < hi`): `m·10^k` inside the range with
/// mantissas `m` from 1–9 (under two decades), 1, 2, 5 (under five) or 1 (more).
fn log_ticks(lo: f32, hi: f32) -> Vec<f32> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Vec::new();
    }
    // A difference of logs, as the ratio may overflow.
    let decades = hi.log10() - lo.log10();
    let mantissas: &[f32] = if decades < 2.0 {
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    } else if decades < 5.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let step = if decades > 12.0 {
        (decades / 12.0).ceil() as i32
    } else {
        1
    };
    let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (k0..=k1)
        .filter(|k| (k - k0) % step == 0)
        .flat_map(|k| mantissas.iter().map(move |m| m * 10f32.powi(k)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

/// The smallest and largest of some values, or `None` for none.
fn span(values: impl Iterator<Item = f32>) -> Option<(f32, f32)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// `lo..hi` widened by `frac` of its length on each side, or by 0.5 when it is empty.
fn pad_linear((lo, hi): (f32, f32), frac: f32) -> Range<f32> {
    let d = hi - lo;
    if d > 0.0 {
        lo - frac * d..hi + frac * d
    } else {
        lo - 0.5..hi + 0.5
    }
}

/// The points of a step curve with `x ≤ max_x`, ending with a point at `max_x` at the height the
/// curve has there, so nothing is drawn past the axis.
fn clip_step(values: &[(f32, f32)], max_x: f32) -> Vec<(f32, f32)> {
    let mut out: Vec<(f32, f32)> = values
        .iter()
        .copied()
        .filter(|&(x, y)| x.is_finite() && y.is_finite())
        .take_while(|&(x, _)| x <= max_x)
        .collect();
    if let Some(&(x, y)) = out.last()
        && x < max_x
    {
        out.push((max_x, y));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashSet;

    fn decoded(path: &Path) -> RgbImage {
        image::open(path).unwrap().to_rgb8()
    }

    fn colours(img: &RgbImage) -> HashSet<[u8; 3]> {
        img.pixels().map(|p| p.0).collect()
    }

    fn has_colour_near(img: &RgbImage, c: RGBColor) -> bool {
        img.pixels().any(|p| {
            let [r, g, b] = p.0;
            r.abs_diff(c.0) < 8 && g.abs_diff(c.1) < 8 && b.abs_diff(c.2) < 8
        })
    }

    #[test]
    fn loss_curves_write_a_chart_with_lines_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        let train = Curve::new(
            "train",
            (1..=20).map(|e| (e as f32, 1.0 / e as f32)).collect(),
        );
        let val = Curve::new(
            "validation",
            (1..=20).map(|e| (e as f32, 1.5 / e as f32)).collect(),
        );
        loss_curves(&path, &[train, val], "Part 1: nose tip", true).unwrap();
        let img = decoded(&path);
        assert_eq!(img.dimensions(), PLOT_SIZE);
        let cs = colours(&img);
        assert!(cs.len() > 20, "only {} colours", cs.len());
        assert!(cs.contains(&[255, 255, 255]));
        // Both series' colours are present, and dark (text/axis) pixels.
        assert!(has_colour_near(&img, PALETTE[0]));
        assert!(has_colour_near(&img, PALETTE[1]));
        assert!(img.pixels().any(|p| p.0.iter().all(|&v| v < 60)));
    }

    #[test]
    fn loss_curves_survive_degenerate_data() {
        let dir = tempfile::tempdir().unwrap();
        for (i, log_y) in [true, false].into_iter().enumerate() {
            let path = dir.path().join(format!("d{i}.png"));
            let odd = Curve::new(
                "nan and zero",
                vec![(1.0, f32::NAN), (2.0, 0.0), (3.0, 0.0)],
            );
            loss_curves(
                &path,
                &[odd, Curve::new("empty", vec![])],
                "degenerate",
                log_y,
            )
            .unwrap();
            assert_eq!(decoded(&path).dimensions(), PLOT_SIZE);
        }
        let path = dir.path().join("none.png");
        loss_curves(&path, &[], "nothing", true).unwrap();
        assert_eq!(decoded(&path).dimensions(), PLOT_SIZE);
    }

    #[test]
    fn ced_curve_writes_a_chart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ced.png");
        let a = Curve::cumulative("model A", &[0.01, 0.02, 0.05, 0.2]);
        let b = Curve::cumulative("model B", &[0.03, f32::NAN]);
        ced_curve(&path, &[a, b], "NME", 0.1).unwrap();
        let img = decoded(&path);
        assert_eq!(img.dimensions(), PLOT_SIZE);
        assert!(colours(&img).len() > 20);
        assert!(has_colour_near(&img, PALETTE[0]));
        assert!(has_colour_near(&img, PALETTE[1]));
        ced_curve(&path, &[], "pixels", f32::NAN).unwrap();
        assert_eq!(decoded(&path).dimensions(), PLOT_SIZE);
    }

    #[test]
    fn cumulative_is_a_step_curve_counting_failures() {
        let c = Curve::cumulative("x", &[0.3, 0.1, f32::INFINITY, 0.2]);
        assert_eq!(
            c.values,
            vec![
                (0.0, 0.0),
                (0.1, 0.0),
                (0.1, 0.25),
                (0.2, 0.25),
                (0.2, 0.5),
                (0.3, 0.5),
                (0.3, 0.75)
            ]
        );
        assert_eq!(Curve::cumulative("none", &[]).values, vec![(0.0, 0.0)]);
    }

    #[test]
    fn clip_step_ends_at_max_x() {
        let c = Curve::cumulative("x", &[0.1, 0.2, 0.3]);
        assert_eq!(
            clip_step(&c.values, 0.25),
            vec![
                (0.0, 0.0),
                (0.1, 0.0),
                (0.1, 1.0 / 3.0),
                (0.2, 1.0 / 3.0),
                (0.2, 2.0 / 3.0),
                (0.25, 2.0 / 3.0)
            ]
        );
    }

    #[test]
    fn log_ticks_cover_every_decade() {
        let t = log_ticks(0.0015, 0.04);
        assert_eq!(t.len(), 8 + 4);
        assert!((t[0] - 0.002).abs() < 1e-9 && (t[7] - 0.009).abs() < 1e-9);
        assert!((t[8] - 0.01).abs() < 1e-9 && (t[11] - 0.04).abs() < 1e-9);
        assert_eq!(
            log_ticks(0.5, 2000.0),
            vec![
                0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0
            ]
        );
        // 23 decades: every other power of ten, 1e-10 to 1e10.
        assert_eq!(log_ticks(2e-12, 5e11).len(), 11);
        assert!(log_ticks(0.0, 1.0).is_empty());
    }

    #[test]
    fn ticks_are_compact() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(2.0), "2");
        assert_eq!(tick(0.125), "0.125");
        assert_eq!(tick(0.0001), "1.0e-4");
        assert_eq!(tick(-3.5), "-3.5");
    }
}
