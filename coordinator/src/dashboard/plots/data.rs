//! From outputs to the numbers a plot draws, without I/O: which rows of a
//! large dataset to read ([`stride`]), the numbers at a plot's keys in
//! one output ([`Series::add`]), with what was left out and why, and a
//! histogram's bins. The shell (`plots.rs`) reads the rows; `draw.rs`
//! draws what this gives.

use peergrid_proto::spec::{Plot, PlotKind};
use serde::Serialize;
use serde_json::Value;

/// Most dataset rows read to draw a job's plots: larger datasets are
/// sampled uniformly (every k-th unit).
pub const MAX_ROWS: u64 = 10_000;
/// Most output bytes read to draw a job's plots.
pub const MAX_READ_BYTES: u64 = 64 * 1024 * 1024;
/// Most points a scatter or line plot keeps (and draws): the first ones,
/// in unit order.
pub const MAX_POINTS: usize = 10_000;
/// Most values a histogram counts.
pub const MAX_VALUES: usize = 100_000;

/// Read every `stride(rows)`-th unit's row of a dataset of `rows` rows:
/// at most [`MAX_ROWS`] rows, spread evenly over the job.
pub fn stride(rows: u64) -> u64 {
    rows.div_ceil(MAX_ROWS).max(1)
}

/// Which rows the plots were drawn from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Rows the job's dataset had.
    pub dataset_rows: u64,
    /// Every `every`-th unit's row was read (1: every row).
    pub every: u64,
    /// Rows read.
    pub rows_read: u64,
    /// Reading stopped at [`MAX_READ_BYTES`] of outputs.
    pub byte_limited: bool,
}

impl Sample {
    /// In words, for a caption.
    pub fn describe(&self) -> String {
        let mut s = if self.every <= 1 {
            format!(
                "from {} of the dataset's {} rows",
                self.rows_read, self.dataset_rows
            )
        } else {
            format!(
                "from a uniform sample, every {}th unit's row: {} of {} rows",
                self.every, self.rows_read, self.dataset_rows
            )
        };
        if self.byte_limited {
            s.push_str(&format!(
                " (reading stopped at {} MiB of outputs)",
                MAX_READ_BYTES / 1024 / 1024
            ));
        }
        s
    }
}

/// One point: its `x`, and `y`, `size` and `color` where the plot has them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    pub x: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<f64>,
}

/// The points of one plot gathered from outputs, with what was left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    pub points: Vec<Point>,
    /// Outputs (or, with `each`, elements) left out: not a JSON object,
    /// no `each` array, no finite number at one of the plot's keys, or
    /// a value that is not positive on a logarithmic axis.
    pub skipped: u64,
    /// Points beyond the cap ([`MAX_POINTS`], [`MAX_VALUES`]), left out.
    pub over_cap: u64,
}

/// An output as JSON, when it is one object (surrounding whitespace
/// allowed); anything else has no values to plot.
pub fn parse_output(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .filter(Value::is_object)
}

/// The value at a key path (`a.b`: key `b` of the object at key `a`).
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// The finite number at `path`, when it is one (and positive on a
/// logarithmic axis).
fn number(value: &Value, path: &str, log: bool) -> Option<f64> {
    lookup(value, path)?
        .as_f64()
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
}

impl Series {
    /// Adds the points of one output (`None`: not a JSON object).
    pub fn add(&mut self, plot: &Plot, output: Option<&Value>) {
        let Some(output) = output else {
            self.skipped += 1;
            return;
        };
        match &plot.each {
            None => self.add_point(plot, output),
            Some(each) => match lookup(output, each).and_then(Value::as_array) {
                Some(items) => items.iter().for_each(|item| self.add_point(plot, item)),
                None => self.skipped += 1,
            },
        }
    }

    fn add_point(&mut self, plot: &Plot, item: &Value) {
        let optional = |key: &Option<String>, log: bool| match key {
            None => Some(None),
            Some(k) => number(item, k, log).map(Some),
        };
        let point = (|| {
            Some(Point {
                x: number(item, &plot.x, plot.log_x)?,
                y: optional(&plot.y, plot.log_y)?,
                size: optional(&plot.size, false)?,
                color: optional(&plot.color, false)?,
            })
        })();
        let Some(point) = point else {
            self.skipped += 1;
            return;
        };
        let cap = match plot.kind {
            PlotKind::Histogram => MAX_VALUES,
            PlotKind::Scatter | PlotKind::Line => MAX_POINTS,
        };
        if self.points.len() < cap {
            self.points.push(point);
        } else {
            self.over_cap += 1;
        }
    }
}

/// One bin of a histogram: `[lo, hi)` (the last one includes `hi`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

/// `bins` equal bins from the smallest value to the largest (equal in
/// `log10` when `log`; the values are then positive), with their counts.
/// No values: no bins. All values equal: one bin around them.
pub fn histogram(values: &[f64], bins: u32, log: bool) -> Vec<Bin> {
    let scale = |v: f64| if log { v.log10() } else { v };
    let unscale = |v: f64| if log { 10f64.powf(v) } else { v };
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(scale(v)), hi.max(scale(v)))
        });
    if !lo.is_finite() || !hi.is_finite() {
        return Vec::new();
    }
    let (lo, hi, n) = if hi > lo {
        (lo, hi, bins.max(1) as usize)
    } else {
        (lo - 0.5, hi + 0.5, 1)
    };
    let width = (hi - lo) / n as f64;
    let mut out: Vec<Bin> = (0..n)
        .map(|i| Bin {
            lo: unscale(lo + i as f64 * width),
            hi: unscale(if i + 1 == n {
                hi
            } else {
                lo + (i + 1) as f64 * width
            }),
            count: 0,
        })
        .collect();
    for &v in values {
        let i = (((scale(v) - lo) / width) as usize).min(n - 1);
        out[i].count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn plot(toml_text: &str) -> Plot {
        toml::from_str(toml_text).unwrap()
    }

    fn gather(plot: &Plot, outputs: &[&str]) -> Series {
        let mut s = Series::default();
        for o in outputs {
            s.add(plot, parse_output(o.as_bytes()).as_ref());
        }
        s
    }

    #[test]
    fn numbers_at_the_keys_become_points_and_the_rest_is_counted_skipped() {
        let p = plot("kind = \"scatter\"\nx = \"a\"\ny = \"stats.b\"\n");
        let s = gather(
            &p,
            &[
                "{\"a\": 1, \"stats\": {\"b\": 2.5}}\n",
                "{\"a\": \"one\", \"stats\": {\"b\": 2}}",
                "{\"a\": 3}",
                "not json",
                "[1, 2]",
                "{\"a\": -4, \"stats\": {\"b\": 0}, \"extra\": true}",
            ],
        );
        assert_eq!(
            s.points,
            vec![
                Point {
                    x: 1.0,
                    y: Some(2.5),
                    size: None,
                    color: None
                },
                Point {
                    x: -4.0,
                    y: Some(0.0),
                    size: None,
                    color: None
                },
            ]
        );
        assert_eq!(s.skipped, 4);
        assert_eq!(s.over_cap, 0);
    }

    #[test]
    fn each_takes_the_elements_of_an_array_as_points() {
        let p = plot(
            "kind = \"scatter\"\neach = \"candidates\"\nx = \"f\"\ny = \"d\"\nsize = \"snr\"\ncolor = \"snr\"\n",
        );
        let s = gather(
            &p,
            &[
                "{\"candidates\": [{\"f\": 1, \"d\": 0.1, \"snr\": 7}, {\"f\": 2, \"d\": 0.2}]}",
                "{\"candidates\": []}",
                "{\"other\": 1}",
            ],
        );
        assert_eq!(s.points.len(), 1);
        assert_eq!(s.points[0].size, Some(7.0));
        assert_eq!(s.points[0].color, Some(7.0));
        // The element without `snr`, and the output without the array.
        assert_eq!(s.skipped, 2);
    }

    #[test]
    fn log_axes_leave_out_values_that_are_not_positive() {
        let p = plot("kind = \"line\"\nx = \"a\"\ny = \"b\"\nlog_y = true\n");
        let s = gather(
            &p,
            &[
                "{\"a\": 1, \"b\": 10}",
                "{\"a\": 2, \"b\": 0}",
                "{\"a\": 3, \"b\": -1}",
            ],
        );
        assert_eq!(s.points.len(), 1);
        assert_eq!(s.skipped, 2);
    }

    #[test]
    fn points_beyond_the_cap_are_counted_not_kept() {
        let p = plot("kind = \"scatter\"\neach = \"p\"\nx = \"a\"\ny = \"a\"\n");
        let items = vec!["{\"a\": 1}"; MAX_POINTS + 5].join(",");
        let s = gather(&p, &[&format!("{{\"p\": [{items}]}}")]);
        assert_eq!(s.points.len(), MAX_POINTS);
        assert_eq!(s.over_cap, 5);
    }

    #[test]
    fn histogram_bins_count_every_value_once() {
        let values = [0.0, 1.0, 2.0, 3.0, 4.0, 10.0];
        let bins = histogram(&values, 5, false);
        assert_eq!(bins.len(), 5);
        assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), 6);
        assert_eq!((bins[0].lo, bins[4].hi), (0.0, 10.0));
        assert_eq!(bins[0].count, 2); // 0 and 1 in [0, 2)
        assert_eq!(bins[4].count, 1); // 10, the maximum, in the last bin
        // Equal values: one bin around them; none: no bins.
        let one = histogram(&[3.0, 3.0], 10, false);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].count, 2);
        assert!(histogram(&[], 10, false).is_empty());
        // Logarithmic: equal in log10.
        let log = histogram(&[1.0, 10.0, 100.0], 2, true);
        assert!((log[0].hi - 10.0).abs() < 1e-9, "{log:?}");
        assert_eq!(log.iter().map(|b| b.count).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn the_stride_keeps_a_sample_within_the_row_cap() {
        assert_eq!(stride(0), 1);
        assert_eq!(stride(MAX_ROWS), 1);
        assert_eq!(stride(MAX_ROWS + 1), 2);
        for rows in [1, 9_999, 10_001, 123_456, 1_000_000, 7_777_777] {
            let every = stride(rows);
            assert!(rows.div_ceil(every) <= MAX_ROWS, "{rows}: every {every}");
        }
        let s = Sample {
            dataset_rows: 1_000_000,
            every: 100,
            rows_read: 10_000,
            byte_limited: false,
        };
        assert!(s.describe().contains("every 100th"), "{}", s.describe());
    }
}
