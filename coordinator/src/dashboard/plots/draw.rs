//! Draws one declared plot as SVG with plotters, as `charts.rs` draws the
//! progress charts: scatter marks (sized and coloured by two more values
//! when the plot says so), a line in order of `x`, or a histogram's bars,
//! on linear or logarithmic axes.

use std::ops::Range;

use peergrid_proto::spec::{Plot, PlotKind};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use super::data::{Bin, Point};

const SIZE: (u32, u32) = (720, 400);
const MARK: RGBColor = RGBColor(0x2f, 0x6f, 0xb3);
/// Mark radii, in pixels: without `size`, and the range `size` maps to.
const RADIUS: i32 = 3;
const RADII: (f64, f64) = (2.0, 9.0);

/// What to draw: the plot, its points (scatter, line) or its bins
/// (histogram).
pub struct Figure<'a> {
    pub plot: &'a Plot,
    pub points: &'a [Point],
    pub bins: &'a [Bin],
}

/// The figure as an SVG document (no XML prolog), or a short note when
/// plotters fails.
pub fn svg(figure: &Figure<'_>) -> String {
    let mut svg = String::new();
    let drawn = draw(figure, &mut svg).map_err(|e| e.to_string());
    match drawn {
        Ok(()) => svg,
        Err(e) => {
            tracing::warn!("drawing a plot failed: {e}");
            String::from("<p class=\"small\">plot unavailable</p>")
        }
    }
}

type DrawResult<'a> = Result<(), Box<dyn std::error::Error + 'a>>;

fn draw<'a>(f: &Figure<'_>, out: &'a mut String) -> DrawResult<'a> {
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (x, y) = ranges(f);
    match (f.plot.log_x, f.plot.log_y) {
        (false, false) => marks(&root, f, x, y)?,
        (true, false) => marks(&root, f, x.log_scale(), y)?,
        (false, true) => marks(&root, f, x, y.log_scale())?,
        (true, true) => marks(&root, f, x.log_scale(), y.log_scale())?,
    }
    root.present()?;
    Ok(())
}

/// The axes' ranges: the data's, with a margin (in decades on a
/// logarithmic axis), and a sensible range when there is no data.
fn ranges(f: &Figure<'_>) -> (Range<f64>, Range<f64>) {
    let plot = f.plot;
    match plot.kind {
        PlotKind::Histogram => {
            let x = span(f.bins.iter().flat_map(|b| [b.lo, b.hi]), plot.log_x, 0.0);
            let top = f.bins.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
            let y = if plot.log_y {
                0.5..top * 2.0
            } else {
                0.0..top * 1.1
            };
            (x, y)
        }
        PlotKind::Scatter | PlotKind::Line => (
            span(f.points.iter().map(|p| p.x), plot.log_x, 0.05),
            span(f.points.iter().filter_map(|p| p.y), plot.log_y, 0.05),
        ),
    }
}

/// From the smallest to the largest value, widened by `margin` of the
/// span (of the decades when `log`; values are then positive).
fn span(values: impl Iterator<Item = f64>, log: bool, margin: f64) -> Range<f64> {
    let scale = |v: f64| if log { v.log10() } else { v };
    let unscale = |v: f64| if log { 10f64.powf(v) } else { v };
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(scale(v)), hi.max(scale(v)))
    });
    let (lo, hi) = if !lo.is_finite() || !hi.is_finite() {
        (0.0, 1.0)
    } else if hi > lo {
        let m = (hi - lo) * margin;
        (lo - m, hi + m)
    } else {
        let m = if log { 0.5 } else { lo.abs().max(1.0) * 0.1 };
        (lo - m, hi + m)
    };
    unscale(lo)..unscale(hi)
}

fn marks<'a, X, Y>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    f: &Figure<'_>,
    x: X,
    y: Y,
) -> DrawResult<'a>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let plot = f.plot;
    let mut c = ChartBuilder::on(root)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)?;
    c.configure_mesh()
        .x_desc(plot.shown_x_label())
        .y_desc(plot.shown_y_label())
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style(("sans-serif", 12))
        .draw()?;
    match plot.kind {
        PlotKind::Scatter => {
            let size = extent(f.points.iter().filter_map(|p| p.size));
            let color = extent(f.points.iter().filter_map(|p| p.color));
            c.draw_series(f.points.iter().filter_map(|p| {
                let radius = match (p.size, size) {
                    (Some(s), Some((lo, hi))) if hi > lo => {
                        (RADII.0 + (s - lo) / (hi - lo) * (RADII.1 - RADII.0)).round() as i32
                    }
                    (Some(_), _) => ((RADII.0 + RADII.1) / 2.0).round() as i32,
                    _ => RADIUS,
                };
                let fill = match (p.color, color) {
                    (Some(v), Some((lo, hi))) if hi > lo => {
                        ViridisRGB::get_color_normalized(v, lo, hi)
                    }
                    _ => MARK,
                };
                Some(Circle::new((p.x, p.y?), radius, fill.mix(0.75).filled()))
            }))?;
        }
        PlotKind::Line => {
            c.draw_series(LineSeries::new(
                f.points.iter().filter_map(|p| Some((p.x, p.y?))),
                MARK.stroke_width(2),
            ))?;
        }
        PlotKind::Histogram => {
            let floor = if plot.log_y { 0.5 } else { 0.0 };
            c.draw_series(
                f.bins.iter().filter(|b| b.count > 0).map(|b| {
                    Rectangle::new([(b.lo, floor), (b.hi, b.count as f64)], MARK.filled())
                }),
            )?;
        }
    }
    Ok(())
}

/// The smallest and largest of some values.
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// An axis label: short, exact enough to read a value off.
pub fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn plot(text: &str) -> Plot {
        toml::from_str(text).unwrap()
    }

    fn point(x: f64, y: f64, s: f64) -> Point {
        Point {
            x,
            y: Some(y),
            size: Some(s),
            color: Some(s),
        }
    }

    #[test]
    fn a_scatter_has_one_circle_per_point() {
        let p = plot("kind = \"scatter\"\nx = \"f\"\ny = \"d\"\nsize = \"s\"\ncolor = \"s\"\n");
        let points: Vec<Point> = (0..37)
            .map(|i| point(i as f64, (i * i) as f64, i as f64))
            .collect();
        for log in [false, true] {
            let p = Plot {
                log_x: log,
                log_y: log,
                ..p.clone()
            };
            let pts: Vec<Point> = points
                .iter()
                .copied()
                .filter(|q| !log || q.x > 0.0)
                .collect();
            let svg = svg(&Figure {
                plot: &p,
                points: &pts,
                bins: &[],
            });
            assert!(svg.starts_with("<svg"), "{svg}");
            assert_eq!(svg.matches("<circle").count(), pts.len(), "log {log}");
            // plotters writes each text on a line of its own.
            assert!(
                svg.contains("\nf\n</text>") && svg.contains("\nd\n</text>"),
                "axis labels: {svg}"
            );
        }
    }

    #[test]
    fn empty_and_single_value_plots_still_draw() {
        for kind in ["scatter\"\ny = \"b", "line\"\ny = \"b", "histogram"] {
            let p = plot(&format!("kind = \"{kind}\"\nx = \"a\"\n"));
            for points in [vec![], vec![point(2.0, 2.0, 1.0)]] {
                let svg = svg(&Figure {
                    plot: &p,
                    points: &points,
                    bins: &[Bin {
                        lo: 2.0,
                        hi: 2.0,
                        count: 1,
                    }],
                });
                assert!(svg.starts_with("<svg"), "{kind}: {svg}");
            }
        }
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(1536.0), "1536");
        assert_eq!(tick(0.056), "0.056");
        assert_eq!(tick(-2.5), "-2.5");
        assert_eq!(tick(1.0e7), "1.0e7");
    }
}
