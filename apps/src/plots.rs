//! Evaluation plots: per-class precision-recall curves (small multiples) and a per-class AP bar
//! chart, each as PNG and SVG.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// The font text is drawn with in PNGs (DejaVu Sans, embedded; SVGs name the family only).
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// One class's curve and AP.
#[derive(Debug, Clone)]
pub struct ClassCurve {
    /// Class name.
    pub name: String,
    /// AP in percent.
    pub ap: f64,
    /// `(recall, precision)` points in ranking order.
    pub points: Vec<(f64, f64)>,
}

/// The precision-recall curve of one class: ranking by score (ties: lower index first), at most
/// `max_points` points.
pub fn pr_curve(scores: &[f32], targets: &[f32], max_points: usize) -> Vec<(f64, f64)> {
    let positives = targets.iter().filter(|t| **t == 1.0).count();
    if positives == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let step = (order.len() / max_points.max(1)).max(1);
    let mut tp = 0usize;
    let mut points = Vec::new();
    for (rank, &i) in order.iter().enumerate() {
        tp += usize::from(targets[i] == 1.0);
        if rank % step == 0 || rank + 1 == order.len() {
            points.push((tp as f64 / positives as f64, tp as f64 / (rank + 1) as f64));
        }
    }
    points
}

fn draw_error<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    curves: &[ClassCurve],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_error)?;
    let cols = (curves.len() as f64).sqrt().ceil().max(1.0) as usize;
    let rows = curves.len().div_ceil(cols).max(1);
    for (area, curve) in root.split_evenly((rows, cols)).iter().zip(curves) {
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{} (AP {:.1})", curve.name, curve.ap), (FAMILY, 14))
            .margin(6)
            .x_label_area_size(22)
            .y_label_area_size(30)
            .build_cartesian_2d(0.0..1.0, 0.0..1.05)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_labels(3)
            .y_labels(3)
            .label_style((FAMILY, 10))
            .disable_mesh()
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series(LineSeries::new(curve.points.iter().copied(), &BLUE))
            .map_err(draw_error)?;
    }
    root.present().map_err(draw_error)
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curves: &[ClassCurve]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_error)?;
    let mut sorted: Vec<&ClassCurve> = curves.iter().collect();
    sorted.sort_by(|a, b| a.ap.total_cmp(&b.ap));
    let n = sorted.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption("Average precision per class (%)", (FAMILY, 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(140)
        .build_cartesian_2d(0.0..100.0, (0..n).into_segmented())
        .map_err(draw_error)?;
    let names: Vec<String> = sorted.iter().map(|c| c.name.clone()).collect();
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .label_style((FAMILY, 11))
        .draw()
        .map_err(draw_error)?;
    chart
        .draw_series(sorted.iter().enumerate().map(|(i, c)| {
            Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (c.ap, SegmentValue::Exact(i + 1)),
                ],
                BLUE.mix(0.6).filled(),
            )
        }))
        .map_err(draw_error)?;
    root.present().map_err(draw_error)
}

fn write_png(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    draw: impl Fn(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<PathBuf> {
    let mut pixels = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw(&root)?;
    }
    let path = dir.join(format!("{name}.png"));
    image::RgbImage::from_raw(size.0, size.1, pixels)
        .context("plot buffer size")?
        .save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn write_svg(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    draw: impl Fn(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.svg"));
    {
        let root = SVGBackend::new(&path, size).into_drawing_area();
        draw(&root)?;
    }
    Ok(path)
}

/// Writes `pr_curves.{png,svg}` and `ap_per_class.{png,svg}` into `dir`.
pub fn write_plots(dir: &Path, curves: &[ClassCurve]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Registering again keeps working; it fails only for an invalid font file.
    plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the embedded font is invalid"))?;
    let cols = (curves.len() as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (curves.len() as u32).div_ceil(cols).max(1);
    let grid = (220 * cols, 200 * rows);
    let bars = (720, 60 + 22 * curves.len().max(1) as u32);
    Ok(vec![
        write_png(dir, "pr_curves", grid, |root| draw_curves(root, curves))?,
        write_svg(dir, "pr_curves", grid, |root| draw_curves(root, curves))?,
        write_png(dir, "ap_per_class", bars, |root| draw_bars(root, curves))?,
        write_svg(dir, "ap_per_class", bars, |root| draw_bars(root, curves))?,
    ])
}
