//! Server-side charts: plotters draws bar charts into SVG strings that the
//! pages inline, so every chart shows without JavaScript.

use std::ops::Range;

use plotters::prelude::*;

use crate::store::Bucket;

const SIZE: (u32, u32) = (720, 240);
const BAR: RGBColor = RGBColor(0x2f, 0x6f, 0xb3);

/// A bar chart: one bar per `(x, y)`, each `bar_width` wide from `x`.
pub struct Bars<'a> {
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_range: Range<f64>,
    pub bar_width: f64,
    pub bars: Vec<(f64, f64)>,
    /// A horizontal line across the chart (the average a page's number
    /// shows beside it), if any.
    pub mean: Option<f64>,
}

/// How many x labels a range gets: at most 8, and no more than one per
/// whole unit, so every label is a different whole number.
fn x_label_count(range: &Range<f64>) -> usize {
    let whole = (range.end - range.start).floor().max(1.0) as usize;
    (whole + 1).min(8)
}

/// An x label: whole numbers only (a tick between them stays blank, so
/// rounding can never print one number twice).
fn whole_label(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{:.0}", x.round() + 0.0)
    } else {
        String::new()
    }
}

/// Renders `chart` as an SVG document (no XML prolog), or a short note
/// when plotters fails.
pub fn render(chart: &Bars<'_>) -> String {
    let mut svg = String::new();
    let drawn = draw(chart, &mut svg).map_err(|e| e.to_string());
    match drawn {
        Ok(()) => svg,
        Err(e) => {
            tracing::warn!("drawing a chart failed: {e}");
            String::from("<p class=\"small\">chart unavailable</p>")
        }
    }
}

fn draw<'a>(chart: &Bars<'_>, out: &'a mut String) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let top = chart
        .bars
        .iter()
        .map(|b| b.1)
        .chain(chart.mean)
        .fold(0.0, f64::max);
    let y_max = if top > 0.0 { top * 1.1 } else { 1.0 };
    let mut c = ChartBuilder::on(&root)
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(chart.x_range.clone(), 0.0..y_max)?;
    c.configure_mesh()
        .disable_x_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .x_labels(x_label_count(&chart.x_range))
        .y_labels(5)
        .x_label_formatter(&|x| whole_label(*x))
        .y_label_formatter(&|y| si(*y))
        .label_style(("sans-serif", 12))
        .draw()?;
    let w = chart.bar_width * 0.9;
    c.draw_series(
        chart
            .bars
            .iter()
            .filter(|(_, y)| *y > 0.0)
            .map(|&(x, y)| Rectangle::new([(x, 0.0), (x + w, y)], BAR.filled())),
    )?;
    if let Some(m) = chart.mean.filter(|m| *m > 0.0) {
        let line = RGBColor(0xd6, 0x28, 0x28);
        c.draw_series(LineSeries::new(
            [(chart.x_range.start, m), (chart.x_range.end, m)],
            line.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// A number with an SI suffix: 1.5k, 2.0G.
pub fn si(v: f64) -> String {
    let a = v.abs();
    let (d, s) = if a >= 1e12 {
        (1e12, "T")
    } else if a >= 1e9 {
        (1e9, "G")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if s.is_empty() && x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}{s}")
    }
}

/// The last hour in per-minute buckets, oldest first, with the empty
/// minutes filled in: `start_ms` of the first is `first_minute_ms`.
pub fn fill_minutes(buckets: &[Bucket], first_minute_ms: u64, minutes: u64) -> Vec<Bucket> {
    (0..minutes)
        .map(|i| {
            let start_ms = first_minute_ms + i * 60_000;
            buckets
                .iter()
                .find(|b| b.start_ms == start_ms)
                .copied()
                .unwrap_or(Bucket {
                    start_ms,
                    count: 0,
                    fuel: 0,
                })
        })
        .collect()
}

/// Merges sorted fine buckets into at most `max` equal-width ones spanning
/// `[from_ms, to_ms)`; returns them with their width.
pub fn coarsen(buckets: &[Bucket], from_ms: u64, to_ms: u64, max: u64) -> (Vec<Bucket>, u64) {
    let span = to_ms.saturating_sub(from_ms).max(60_000);
    let width = span.div_ceil(max.max(1)).div_ceil(60_000) * 60_000;
    let n = span.div_ceil(width);
    let mut out: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            start_ms: from_ms + i * width,
            count: 0,
            fuel: 0,
        })
        .collect();
    for b in buckets {
        if b.start_ms < from_ms {
            continue;
        }
        let i = ((b.start_ms - from_ms) / width) as usize;
        if let Some(o) = out.get_mut(i) {
            o.count = o.count.saturating_add(b.count);
            o.fuel = o.fuel.saturating_add(b.fuel);
        }
    }
    (out, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_svg_for_empty_and_full_series() {
        for bars in [vec![], vec![(0.0, 3.0), (1.0, 5.0)]] {
            let svg = render(&Bars {
                x_label: "minutes ago",
                y_label: "results/s",
                x_range: -60.0..0.0,
                bar_width: 1.0,
                bars,
                mean: Some(1.0),
            });
            assert!(svg.starts_with("<svg"), "{svg}");
            assert!(svg.contains("results/s"));
        }
    }

    /// The x axis's labels: plotters writes them as centred `<text>`
    /// elements (the y axis's are right-aligned), numbers only.
    fn x_labels(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter(|t| t.contains("text-anchor=\"middle\""))
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..t.find("</text>")?];
                Some(body.trim().to_string())
            })
            .filter(|t| t.parse::<f64>().is_ok())
            .collect()
    }

    /// A job chart over a few minutes used to label its axis "0 0 1 2 2":
    /// ticks every 0.6 minute rounded to whole numbers.
    #[test]
    fn x_labels_are_whole_numbers_without_repeats() {
        for end in [2.5, 5.0, 7.0, 60.0, 119.0] {
            let svg = render(&Bars {
                x_label: "minutes",
                y_label: "units",
                x_range: 0.0..end,
                bar_width: 1.0,
                bars: vec![(0.0, 1.0)],
                mean: None,
            });
            let labels = x_labels(&svg);
            assert!(labels.len() >= 2, "{end}: {labels:?}\n{svg}");
            let mut seen = std::collections::HashSet::new();
            for l in &labels {
                assert!(l.parse::<i64>().is_ok(), "{end}: {labels:?}");
                assert!(seen.insert(l), "{end}: {l} twice in {labels:?}");
            }
        }
        assert_eq!(whole_label(-0.0), "0");
        assert_eq!(whole_label(0.6), "");
    }

    #[test]
    fn coarsen_keeps_every_count() {
        let fine: Vec<Bucket> = (0..500)
            .map(|i| Bucket {
                start_ms: i * 60_000,
                count: 1,
                fuel: 2,
            })
            .collect();
        let (coarse, width) = coarsen(&fine, 0, 500 * 60_000, 120);
        assert!(coarse.len() <= 120);
        assert_eq!(width % 60_000, 0);
        assert_eq!(coarse.iter().map(|b| b.count).sum::<u64>(), 500);
        assert_eq!(coarse.iter().map(|b| b.fuel).sum::<u64>(), 1000);
    }

    #[test]
    fn si_suffixes() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(1500.0), "1.5k");
        assert_eq!(si(2.0e9), "2.0G");
        assert_eq!(si(0.5), "0.5");
    }
}
