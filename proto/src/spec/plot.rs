//! `[[plot]]` tables of a job spec: figures of the job's JSON outputs that
//! the coordinator draws on the job's dashboard page.
//!
//! ```toml
//! [[plot]]
//! kind = "scatter"          # or "line", or "histogram"
//! each = "candidates"       # optional: each element of this array is a point
//! x = "freq_hz"             # keys (or paths `a.b`) of numbers in the outputs
//! y = "drift_hz_s"
//! size = "snr"              # optional, scatter only
//! title = "Detections"
//! ```
//!
//! Only the declaration lives here (and its checks); reading outputs and
//! drawing is the coordinator's (`dashboard/plots`).

use serde::{Deserialize, Serialize};

use super::{SpecError, invalid};

/// Most plots one job declares.
pub const MAX_PLOTS: usize = 8;
/// Most bins of a histogram.
pub const MAX_BINS: u32 = 200;
/// Bins of a histogram that does not say.
pub const DEFAULT_BINS: u32 = 20;
/// Longest title or axis label, in bytes.
pub const MAX_PLOT_TEXT: usize = 200;
/// Longest key path, in bytes, and most segments in one.
pub const MAX_PATH_LEN: usize = 200;
pub const MAX_PATH_DEPTH: usize = 8;

/// Every field of a `[[plot]]` table (a test keeps this list true).
pub const PLOT_FIELDS: &[&str] = &[
    "kind", "x", "y", "size", "color", "each", "bins", "title", "x_label", "y_label", "log_x",
    "log_y",
];

/// What a plot draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlotKind {
    /// One mark per point at (`x`, `y`), optionally sized and coloured by
    /// two more values.
    Scatter,
    /// The points joined in order of `x`.
    Line,
    /// How many values of `x` fall in each of `bins` equal bins.
    Histogram,
}

impl PlotKind {
    pub fn name(self) -> &'static str {
        match self {
            PlotKind::Scatter => "scatter",
            PlotKind::Line => "line",
            PlotKind::Histogram => "histogram",
        }
    }
}

/// One declared plot. Values are read from each validated output that is
/// a JSON object (or, with `each`, from each element of an array in it);
/// a key is a path of object keys joined by dots (`stats.mean`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plot {
    pub kind: PlotKind,
    /// The horizontal axis's value (a histogram's counted value).
    pub x: String,
    /// The vertical axis's value: required by scatter and line plots,
    /// refused by histograms (which count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Scatter only: a value that sets each mark's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Scatter only: a value that sets each mark's colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// An array in each output whose elements are the points (an output
    /// listing many detections); without it an output is one point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub each: Option<String>,
    /// Histogram only: how many equal bins (default [`DEFAULT_BINS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Axis labels; the keys by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y_label: Option<String>,
    /// Logarithmic axes (values that are not positive are left out).
    #[serde(default, skip_serializing_if = "is_false")]
    pub log_x: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub log_y: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Plot {
    /// The title a page shows: as given, else made of the keys.
    pub fn shown_title(&self) -> String {
        match (&self.title, self.kind, &self.y) {
            (Some(t), _, _) => t.clone(),
            (None, PlotKind::Histogram, _) | (None, _, None) => format!("{} (histogram)", self.x),
            (None, _, Some(y)) => format!("{y} against {}", self.x),
        }
    }

    /// The horizontal axis's label.
    pub fn shown_x_label(&self) -> &str {
        self.x_label.as_deref().unwrap_or(&self.x)
    }

    /// The vertical axis's label: as given, else `y`'s key, or "count".
    pub fn shown_y_label(&self) -> &str {
        match (&self.y_label, &self.y) {
            (Some(l), _) => l,
            (None, Some(y)) if self.kind != PlotKind::Histogram => y,
            _ => "count",
        }
    }

    /// Bins of a histogram.
    pub fn bin_count(&self) -> u32 {
        self.bins.unwrap_or(DEFAULT_BINS)
    }

    /// Checks one plot; `n` is its number in the spec, from 1, for the
    /// message.
    fn validate(&self, n: usize) -> Result<(), SpecError> {
        let bad = |problem: String| invalid("plot", format!("number {n}: {problem}"));
        let kind = self.kind.name();
        check_path("x", &self.x).map_err(&bad)?;
        for (name, path) in [
            ("y", &self.y),
            ("size", &self.size),
            ("color", &self.color),
            ("each", &self.each),
        ] {
            if let Some(p) = path {
                check_path(name, p).map_err(&bad)?;
            }
        }
        for (name, text) in [
            ("title", &self.title),
            ("x_label", &self.x_label),
            ("y_label", &self.y_label),
        ] {
            if let Some(t) = text
                && (t.len() > MAX_PLOT_TEXT || t.chars().any(char::is_control))
            {
                return Err(bad(format!(
                    "`{name}` must be at most {MAX_PLOT_TEXT} bytes, without control characters"
                )));
            }
        }
        match self.kind {
            PlotKind::Scatter | PlotKind::Line => {
                if self.y.is_none() {
                    return Err(bad(format!(
                        "a {kind} plot needs `y`, the key of its vertical axis"
                    )));
                }
                if self.bins.is_some() {
                    return Err(bad("`bins` is for histograms".into()));
                }
            }
            PlotKind::Histogram => {
                if self.y.is_some() {
                    return Err(bad(
                        "a histogram counts the values of `x`; `y` is for scatter and line plots"
                            .into(),
                    ));
                }
                if !(1..=MAX_BINS).contains(&self.bin_count()) {
                    return Err(bad(format!("`bins` must be between 1 and {MAX_BINS}")));
                }
            }
        }
        if self.kind != PlotKind::Scatter && (self.size.is_some() || self.color.is_some()) {
            return Err(bad(format!(
                "`size` and `color` are for scatter plots, not {kind}"
            )));
        }
        Ok(())
    }
}

/// A key path: 1 to [`MAX_PATH_DEPTH`] non-empty keys joined by dots, at
/// most [`MAX_PATH_LEN`] bytes, no control characters.
fn check_path(name: &str, path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && path.len() <= MAX_PATH_LEN
        && !path.chars().any(char::is_control)
        && path.split('.').all(|k| !k.is_empty())
        && path.split('.').count() <= MAX_PATH_DEPTH;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be a key of the outputs' JSON, or a path of keys joined by dots \
             (at most {MAX_PATH_DEPTH} keys, {MAX_PATH_LEN} bytes), not {path:?}"
        ))
    }
}

/// Checks a job's plots: at most [`MAX_PLOTS`], each well formed.
pub fn validate_plots(plots: &[Plot]) -> Result<(), SpecError> {
    if plots.len() > MAX_PLOTS {
        return Err(invalid(
            "plot",
            format!(
                "is declared {} times; a job has at most {MAX_PLOTS} plots",
                plots.len()
            ),
        ));
    }
    plots
        .iter()
        .enumerate()
        .try_for_each(|(i, p)| p.validate(i + 1))
}

/// The first unknown field or unknown kind in the `[[plot]]` tables of a
/// spec's TOML table, with the line that sets it when a plain look finds
/// it (serde would report it for the whole file, as for top-level keys).
pub(super) fn unknown_plot_field(table: &toml::Table, text: &str) -> Option<SpecError> {
    let plots = table.get("plot")?.as_array()?;
    for (i, plot) in plots.iter().enumerate() {
        let Some(plot) = plot.as_table() else {
            continue;
        };
        if let Some(field) = plot.keys().find(|k| !PLOT_FIELDS.contains(&k.as_str())) {
            return Some(SpecError::UnknownPlotField {
                plot: i + 1,
                field: field.clone(),
                line: line_in_plot(text, i, field),
            });
        }
        if let Some(kind) = plot.get("kind").and_then(|k| k.as_str())
            && !["scatter", "line", "histogram"].contains(&kind)
        {
            return Some(invalid(
                "plot",
                format!(
                    "number {}: `kind` must be \"scatter\", \"line\" or \"histogram\", not {kind:?}",
                    i + 1
                ),
            ));
        }
    }
    None
}

/// The line (from 1) that sets `field` in the `n`-th (from 0) `[[plot]]`
/// table of `text`, when it is written as one.
fn line_in_plot(text: &str, n: usize, field: &str) -> Option<usize> {
    let is_header = |l: &str| {
        l.trim_start()
            .strip_prefix("[[")
            .is_some_and(|r| r.trim_start().starts_with("plot"))
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| is_header(l))
        .nth(n)?
        .0;
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(field)
                .or_else(|| l.strip_prefix(&format!("\"{field}\"")))
                .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
        })
        .map(|i| start + 1 + i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::JobSpec;

    const HEAD: &str = "name = \"x\"\nmodule = \"m.wasm\"\n[inputs]\ndir = \"in\"\n";

    fn parse(plots: &str) -> Result<JobSpec, SpecError> {
        JobSpec::from_toml(&format!("{HEAD}{plots}"))
    }

    #[test]
    fn plots_parse_with_their_defaults() {
        let spec = parse(
            "[[plot]]\nkind = \"scatter\"\neach = \"candidates\"\nx = \"freq_hz\"\ny = \"drift_hz_s\"\nsize = \"snr\"\n\
             [[plot]]\nkind = \"histogram\"\nx = \"stats.snr\"\nlog_y = true\n",
        )
        .unwrap();
        assert_eq!(spec.plots.len(), 2);
        let scatter = &spec.plots[0];
        assert_eq!(scatter.kind, PlotKind::Scatter);
        assert_eq!(scatter.each.as_deref(), Some("candidates"));
        assert_eq!(scatter.size.as_deref(), Some("snr"));
        assert_eq!(scatter.shown_title(), "drift_hz_s against freq_hz");
        assert_eq!(scatter.shown_y_label(), "drift_hz_s");
        let hist = &spec.plots[1];
        assert_eq!(hist.bin_count(), DEFAULT_BINS);
        assert!(hist.log_y && !hist.log_x);
        assert_eq!(hist.shown_y_label(), "count");
        // No plots: none.
        assert!(parse("").unwrap().plots.is_empty());
    }

    #[test]
    fn an_unknown_kind_is_named() {
        let e = parse("[[plot]]\nkind = \"pie\"\nx = \"a\"\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("pie") && text.contains("number 1"), "{text}");
        assert!(text.contains("histogram"), "{text}");
    }

    #[test]
    fn scatter_and_line_need_y_and_histograms_refuse_it() {
        for kind in ["scatter", "line"] {
            let e = parse(&format!("[[plot]]\nkind = \"{kind}\"\nx = \"a\"\n")).unwrap_err();
            assert!(
                e.to_string().contains("needs `y`"),
                "{kind}: {e} should ask for y"
            );
        }
        let e = parse("[[plot]]\nkind = \"histogram\"\nx = \"a\"\ny = \"b\"\n").unwrap_err();
        assert!(e.to_string().contains("`y` is for scatter"), "{e}");
        let e =
            parse("[[plot]]\nkind = \"line\"\nx = \"a\"\ny = \"b\"\nsize = \"c\"\n").unwrap_err();
        assert!(e.to_string().contains("`size` and `color`"), "{e}");
        let e = parse("[[plot]]\nkind = \"histogram\"\nx = \"a\"\nbins = 0\n").unwrap_err();
        assert!(
            e.to_string().contains("`bins` must be between 1 and 200"),
            "{e}"
        );
        let e = parse("[[plot]]\nkind = \"histogram\"\nx = \"a\"\nbins = 201\n").unwrap_err();
        assert!(e.to_string().contains("bins"), "{e}");
    }

    #[test]
    fn too_many_plots_are_refused() {
        let one = "[[plot]]\nkind = \"histogram\"\nx = \"a\"\n";
        parse(&one.repeat(MAX_PLOTS)).unwrap();
        let e = parse(&one.repeat(MAX_PLOTS + 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`plot` is declared 9 times; a job has at most 8 plots"
        );
    }

    #[test]
    fn bad_paths_and_texts_are_refused() {
        for x in ["", "a..b", ".a", "a.", "a.b.c.d.e.f.g.h.i"] {
            let e = parse(&format!("[[plot]]\nkind = \"histogram\"\nx = {x:?}\n")).unwrap_err();
            assert!(e.to_string().contains("`x` must be a key"), "{x:?}: {e}");
        }
        let long = "t".repeat(MAX_PLOT_TEXT + 1);
        let e = parse(&format!(
            "[[plot]]\nkind = \"histogram\"\nx = \"a\"\ntitle = \"{long}\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("`title` must be at most"), "{e}");
        let e = parse("[[plot]]\nkind = \"histogram\"\nx = \"a\"\nx_label = \"a\\u001b[2J\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("control characters"), "{e}");
    }

    #[test]
    fn an_unknown_plot_field_is_named_with_its_line_and_the_valid_ones() {
        let e = parse(
            "[[plot]]\nkind = \"histogram\"\nx = \"a\"\n\n[[plot]]\nkind = \"scatter\"\nx = \"a\"\ny = \"b\"\nsise = \"c\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e,
            SpecError::UnknownPlotField {
                plot: 2,
                field: "sise".into(),
                line: Some(13)
            }
        );
        let text = e.to_string();
        assert!(
            text.starts_with("unknown field `sise` in [[plot]] number 2 on line 13; a plot's fields are kind, x, y, size"),
            "{text}"
        );
    }

    /// [`PLOT_FIELDS`] is every field a plot serializes with all set.
    #[test]
    fn the_plot_field_list_is_every_field() {
        let all = Plot {
            kind: PlotKind::Scatter,
            x: "a".into(),
            y: Some("b".into()),
            size: Some("c".into()),
            color: Some("d".into()),
            each: Some("e".into()),
            bins: Some(3),
            title: Some("t".into()),
            x_label: Some("x".into()),
            y_label: Some("y".into()),
            log_x: true,
            log_y: true,
        };
        let table = toml::Table::try_from(&all).unwrap();
        let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut fields = PLOT_FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(keys, fields);
    }
}
