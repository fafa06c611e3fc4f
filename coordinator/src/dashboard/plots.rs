//! A job's declared plots (`[[plot]]` in its spec) over its dataset: read
//! from a bounded, uniform sample of the validated outputs, drawn once as
//! SVG and cached, shown on the job's page, and served on their own
//! (`GET /jobs/{id}/plots/{n}.svg`) and as data for scrapers
//! (`GET /api/v1/jobs/{id}/plots/{n}`).
//!
//! Bounded work whatever the dataset's size: at most [`MAX_ROWS`] rows
//! (every k-th unit's row of a larger dataset) and [`MAX_READ_BYTES`] of
//! outputs are read, one job at a time, and the result is kept per job
//! until its dataset changes, but redrawn at most every [`FRESH_MS`] while
//! it keeps changing. `data` turns outputs into points (pure), `draw`
//! points into SVG.

pub mod data;
pub mod draw;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use peergrid_proto::spec::{Plot, PlotKind};
use peergrid_proto::wire::JobId;
use serde::Serialize;

use crate::api::{Api, ApiError, ApiResult, bad_request, blocking, job_id};
use crate::store::{DatasetStamp, ReadStore, StoreError};
use data::{Bin, MAX_READ_BYTES, MAX_ROWS, Point, Sample, Series};
use peergrid_os::now_ms;

/// How long a job's drawn plots are shown although its dataset has grown.
pub const FRESH_MS: u64 = 30_000;
/// Rows asked of the store at once.
const PAGE_ROWS: usize = 500;
/// Most bytes of drawn plots kept; the plots drawn longest ago go first.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The plots' routes, merged into the dashboard's (which adds the
/// [`PlotCache`] they share with the job page).
pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/jobs/{id}/plots/{file}", get(plot_svg))
        .route("/api/v1/jobs/{id}/plots/{n}", get(plot_json))
}

/// One plot's data, as `GET /api/v1/jobs/{id}/plots/{n}` serves it.
#[derive(Clone, Debug, Serialize)]
pub struct PlotData {
    pub job: JobId,
    /// The plot's number in the spec, from 1.
    pub plot: usize,
    pub spec: Plot,
    pub title: String,
    pub sample: Sample,
    /// Outputs (or `each` elements) without numbers at the plot's keys.
    pub skipped: u64,
    /// Points left out beyond the cap.
    pub over_cap: u64,
    /// Scatter and line plots: the points, in unit order (a line's in
    /// order of `x`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<Point>>,
    /// Histograms: the bins with their counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bins: Option<Vec<Bin>>,
    /// When it was drawn (ms since the Unix epoch).
    pub drawn_ms: u64,
}

impl PlotData {
    /// Marks drawn: points, or values counted by a histogram.
    pub fn shown(&self) -> u64 {
        match (&self.points, &self.bins) {
            (Some(p), _) => p.len() as u64,
            (None, Some(b)) => b.iter().map(|b| b.count).sum(),
            (None, None) => 0,
        }
    }

    /// What the figure shows, in words, for its caption.
    pub fn caption(&self) -> String {
        let what = match self.spec.kind {
            PlotKind::Histogram => "values",
            PlotKind::Scatter | PlotKind::Line => "points",
        };
        let mut s = format!("{} {what} {}", self.shown(), self.sample.describe());
        if self.skipped > 0 {
            s.push_str(&format!(
                "; {} left out without numbers at the plot's keys",
                self.skipped
            ));
        }
        if self.over_cap > 0 {
            s.push_str(&format!(
                "; only the first {} {what} kept, {} more left out",
                self.shown(),
                self.over_cap
            ));
        }
        s
    }
}

/// One drawn plot: its data and its SVG.
#[derive(Debug)]
pub struct Drawn {
    pub data: PlotData,
    pub svg: String,
}

/// A job's plots as drawn at one dataset stamp.
#[derive(Debug)]
pub struct JobPlots {
    stamp: DatasetStamp,
    pub plots: Vec<Drawn>,
}

impl JobPlots {
    fn bytes(&self) -> usize {
        self.plots
            .iter()
            .map(|d| d.svg.len() + d.data.shown() as usize * 48)
            .sum()
    }
}

/// Drawn plots by job, shared by every request of one server.
#[derive(Default)]
pub struct PlotCache {
    jobs: Mutex<HashMap<JobId, Arc<JobPlots>>>,
    /// One job's plots are drawn at a time; a request that waited here
    /// finds what the one before it drew.
    drawing: tokio::sync::Mutex<()>,
}

impl PlotCache {
    /// The job's plots if drawn at `stamp`, or within [`FRESH_MS`] of
    /// `now`.
    fn fresh(&self, job: JobId, stamp: &DatasetStamp, now: u64) -> Option<Arc<JobPlots>> {
        let jobs = peergrid_os::lock(&self.jobs);
        jobs.get(&job)
            .filter(|p| {
                p.stamp == *stamp
                    || p.plots
                        .first()
                        .is_some_and(|d| now.saturating_sub(d.data.drawn_ms) < FRESH_MS)
            })
            .cloned()
    }

    fn keep(&self, job: JobId, plots: Arc<JobPlots>) {
        let mut jobs = peergrid_os::lock(&self.jobs);
        jobs.insert(job, plots);
        while jobs.values().map(|p| p.bytes()).sum::<usize>() > CACHE_BYTES && jobs.len() > 1 {
            let oldest = jobs
                .iter()
                .filter(|(id, _)| **id != job)
                .min_by_key(|(_, p)| p.plots.first().map_or(0, |d| d.data.drawn_ms))
                .map(|(id, _)| *id);
            let Some(id) = oldest else {
                break;
            };
            jobs.remove(&id);
        }
    }
}

/// The job's plots, from the cache or drawn now; `None` when there is no
/// such job.
pub async fn job_plots(
    api: &Api,
    cache: &Arc<PlotCache>,
    job: JobId,
) -> ApiResult<Option<Arc<JobPlots>>> {
    let store = api.grid.store.clone();
    let (stamp, declared) =
        blocking(move || Ok((store.dataset_stamp(job)?, store.job_plots(job)?))).await?;
    match declared {
        None => return Ok(None),
        // A job without plots has nothing to draw: it never waits behind
        // another job's drawing.
        Some(specs) if specs.is_empty() => {
            return Ok(Some(Arc::new(JobPlots {
                stamp,
                plots: Vec::new(),
            })));
        }
        Some(_) => {}
    }
    if let Some(p) = cache.fresh(job, &stamp, now_ms()) {
        return Ok(Some(p));
    }
    let _turn = cache.drawing.lock().await;
    if let Some(p) = cache.fresh(job, &stamp, now_ms()) {
        return Ok(Some(p));
    }
    let store = api.grid.store.clone();
    let Some(plots) = blocking(move || draw_job(store.as_ref(), job, now_ms())).await? else {
        return Ok(None);
    };
    let plots = Arc::new(plots);
    cache.keep(job, plots.clone());
    Ok(Some(plots))
}

/// Reads a bounded sample of the job's dataset once and draws each of its
/// plots from it; `None` when there is no such job.
pub fn draw_job(
    store: &dyn ReadStore,
    job: JobId,
    now: u64,
) -> Result<Option<JobPlots>, StoreError> {
    let Some(specs) = store.job_plots(job)? else {
        return Ok(None);
    };
    let stamp = store.dataset_stamp(job)?;
    let mut sample = Sample {
        dataset_rows: stamp.rows,
        every: data::stride(stamp.rows),
        ..Sample::default()
    };
    let mut series = vec![Series::default(); specs.len()];
    let mut bytes = 0u64;
    let mut after = 0u64;
    while !specs.is_empty() && sample.rows_read < MAX_ROWS {
        if bytes >= MAX_READ_BYTES {
            sample.byte_limited = true;
            break;
        }
        let rows = (MAX_ROWS - sample.rows_read).min(PAGE_ROWS as u64) as usize;
        let page =
            store.dataset_sample_within(job, sample.every, after, rows, MAX_READ_BYTES - bytes)?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.unit;
        for row in &page {
            bytes = bytes.saturating_add(row.output.len() as u64);
            sample.rows_read += 1;
            let output = data::parse_output(&row.output);
            for (s, spec) in series.iter_mut().zip(&specs) {
                s.add(spec, output.as_ref());
            }
        }
    }
    let plots = specs
        .into_iter()
        .zip(series)
        .enumerate()
        .map(|(i, (spec, mut s))| {
            let (points, bins) = match spec.kind {
                PlotKind::Histogram => {
                    let values: Vec<f64> = s.points.iter().map(|p| p.x).collect();
                    (
                        None,
                        Some(data::histogram(&values, spec.bin_count(), spec.log_x)),
                    )
                }
                PlotKind::Line => {
                    s.points.sort_by(|a, b| a.x.total_cmp(&b.x));
                    (Some(s.points), None)
                }
                PlotKind::Scatter => (Some(s.points), None),
            };
            let svg = draw::svg(&draw::Figure {
                plot: &spec,
                points: points.as_deref().unwrap_or_default(),
                bins: bins.as_deref().unwrap_or_default(),
            });
            Drawn {
                data: PlotData {
                    job,
                    plot: i + 1,
                    title: spec.shown_title(),
                    spec,
                    sample: sample.clone(),
                    skipped: s.skipped,
                    over_cap: s.over_cap,
                    points,
                    bins,
                    drawn_ms: now,
                },
                svg,
            }
        })
        .collect();
    Ok(Some(JobPlots { stamp, plots }))
}

/// Job id and plot number from the path; `file` may end in `.svg`.
fn plot_path(raw: (String, String), ext: Option<&str>) -> ApiResult<(JobId, usize)> {
    let job = job_id(&raw.0)?;
    let n = match ext {
        Some(ext) => raw.1.strip_suffix(ext).ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("a plot is /jobs/{job}/plots/N{ext}"),
            )
        })?,
        None => raw.1.as_str(),
    };
    let n: usize = n.trim().parse().map_err(|_| {
        bad_request(
            "the plot number must be a whole number, from 1, in the order the spec declares them",
        )
    })?;
    Ok((job, n))
}

/// Plot `n` (from 1) of the job, or a `404` that says why.
async fn one_plot(
    api: &Api,
    cache: &Arc<PlotCache>,
    job: JobId,
    n: usize,
) -> ApiResult<(Arc<JobPlots>, usize)> {
    let Some(plots) = job_plots(api, cache, job).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {job}")));
    };
    if n == 0 || n > plots.plots.len() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "job {job} declares {} plots; plots are numbered from 1",
                plots.plots.len()
            ),
        ));
    }
    Ok((plots, n - 1))
}

async fn plot_svg(
    State(api): State<Arc<Api>>,
    Extension(cache): Extension<Arc<PlotCache>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let Path(raw) = path?;
    let (job, n) = plot_path(raw, Some(".svg"))?;
    let (plots, i) = one_plot(&api, &cache, job, n).await?;
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml")],
        plots.plots[i].svg.clone(),
    )
        .into_response())
}

async fn plot_json(
    State(api): State<Arc<Api>>,
    Extension(cache): Extension<Arc<PlotCache>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<PlotData>> {
    let Path(raw) = path?;
    let (job, n) = plot_path(raw, None)?;
    let (plots, i) = one_plot(&api, &cache, job, n).await?;
    Ok(Json(plots.plots[i].data.clone()))
}

#[cfg(test)]
mod tests;
