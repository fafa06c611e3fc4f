//! Why units failed, for the researcher (BOINC's `stderr_txt`, Bacalhau's
//! `job logs`): a job's failed units, each with its last error result and
//! the end of that run's stderr (`GET /api/v1/jobs/{id}/logs`, in pages of
//! [`LOG_PAGE`] after `?after=UNIT`, and the page `/jobs/{id}/failed`), and
//! every error result of one unit (`GET /api/v1/jobs/{id}/logs/{unit}`,
//! the page `/jobs/{id}/logs/{unit}`). `peergrid job logs` reads the JSON.
//!
//! Errors and stderr are a stranger's text (the worker sends them, the
//! module writes them): the grid cleans and bounds them before they are
//! stored, and maud escapes them here.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use maud::{Markup, html};
use peergrid_proto::api::{ErrorLog, JobLogs, UnitLogs};
use peergrid_proto::wire::{JobId, UnitId};
use serde::Deserialize;

use super::pages::{layout, short, time};
use super::{not_found, page_or_error, view};
use crate::api::{Api, ApiError, ApiResult, JobIdPath, JobUnitPath, MAX_ROW_ID};
use crate::project::Project;
use crate::store::{JobStatus, ReadStore, StoreError};

/// Failed units per page of `/api/v1/jobs/{id}/logs` and `/jobs/{id}/failed`:
/// each carries up to `MAX_STDERR_TAIL` bytes of stderr.
pub const LOG_PAGE: usize = 100;

/// The logs' routes, merged into the dashboard's.
pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/jobs/{id}/failed", get(failed_page))
        .route("/jobs/{id}/logs/{unit}", get(unit_page))
        .route("/api/v1/jobs/{id}/logs", get(job_logs_json))
        .route("/api/v1/jobs/{id}/logs/{unit}", get(unit_logs_json))
}

/// One page of a job's failed units with their last errors, after unit
/// `after`; `None` when there is no such job.
pub fn job_logs(
    store: &dyn ReadStore,
    job: JobId,
    after: UnitId,
) -> Result<Option<(JobStatus, JobLogs)>, StoreError> {
    let Some(status) = store.job_status(job)? else {
        return Ok(None);
    };
    let mut failed_units = store.failed_unit_logs(job, after, LOG_PAGE + 1)?;
    let next_after = if failed_units.len() > LOG_PAGE {
        failed_units.truncate(LOG_PAGE);
        failed_units.last().map(|u| u.unit)
    } else {
        None
    };
    let logs = JobLogs {
        job,
        failed_units,
        next_after,
    };
    Ok(Some((status, logs)))
}

/// `?after=UNIT` of the failed units' pages.
#[derive(Deserialize)]
pub struct AfterQuery {
    after: Option<String>,
}

impl AfterQuery {
    fn after(&self) -> ApiResult<UnitId> {
        match self.after.as_deref().map(str::trim) {
            None | Some("") => Ok(0),
            Some(s) => match s.parse::<UnitId>() {
                Ok(n) if n <= MAX_ROW_ID => Ok(n),
                _ => Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "`after` must be a unit id (a whole number up to {MAX_ROW_ID}), not `{s}`"
                    ),
                )),
            },
        }
    }
}

async fn job_logs_or_404(api: &Api, job: JobId, after: UnitId) -> ApiResult<(JobStatus, JobLogs)> {
    view(api, move |s, _| job_logs(s, job, after))
        .await?
        .ok_or_else(|| not_found(format!("no job {job}")))
}

async fn unit_logs_or_404(api: &Api, job: JobId, unit: UnitId) -> ApiResult<UnitLogs> {
    view(api, move |s, _| s.unit_logs(job, unit))
        .await?
        .ok_or_else(|| not_found(format!("job {job} has no unit {unit}")))
}

async fn job_logs_json(
    State(api): State<Arc<Api>>,
    JobIdPath(job): JobIdPath,
    q: Result<Query<AfterQuery>, QueryRejection>,
) -> ApiResult<Json<JobLogs>> {
    let Query(q) = q?;
    Ok(Json(job_logs_or_404(&api, job, q.after()?).await?.1))
}

async fn unit_logs_json(
    State(api): State<Arc<Api>>,
    JobUnitPath(job, unit): JobUnitPath,
) -> ApiResult<Json<UnitLogs>> {
    Ok(Json(unit_logs_or_404(&api, job, unit).await?))
}

async fn failed_page(
    State(api): State<Arc<Api>>,
    job: Result<JobIdPath, ApiError>,
    q: Result<Query<AfterQuery>, QueryRejection>,
) -> Response {
    let p = api.project.get();
    let page = async {
        let JobIdPath(job) = job?;
        let Query(q) = q?;
        let (status, logs) = job_logs_or_404(&api, job, q.after()?).await?;
        Ok(failed_html(&p, &status, &logs))
    };
    page_or_error(&p, page.await)
}

async fn unit_page(State(api): State<Arc<Api>>, path: Result<JobUnitPath, ApiError>) -> Response {
    let p = api.project.get();
    let page = async {
        let JobUnitPath(job, unit) = path?;
        Ok(unit_html(&p, &unit_logs_or_404(&api, job, unit).await?))
    };
    page_or_error(&p, page.await)
}

/// One error result: where and when, the message, the end of stderr.
fn error_html(e: &ErrorLog) -> Markup {
    html! {
        div.error-result data-host=(e.host) {
            p.small { "From host " a href={ "/hosts/" (e.host_key) } { code { (short(&e.host_key)) } }
                " · received " (time(e.received_ms)) }
            pre.error { (e.error) }
            @if let Some(stderr) = &e.stderr {
                p.small { "End of stderr:" }
                pre.stderr { (stderr) }
            } @else {
                p.small.no-stderr { "No stderr reported." }
            }
        }
    }
}

/// The page `/jobs/{id}/failed`.
pub fn failed_html(p: &Project, status: &JobStatus, logs: &JobLogs) -> String {
    let job = status.id;
    layout(
        p,
        &format!("{} · failed units", status.name),
        html! {
            h1 { "Job " a href={ "/jobs/" (job) } { (job) } ": " (status.name) " · failed units" }
            p { span #failed-total { (status.failed) } " of " (status.units_total) " units failed. "
                "Each shows why, its last error result and the end of that run's stderr." }
            @for u in &logs.failed_units {
                section.failed-unit data-unit=(u.unit) {
                    h2 { "Unit " (u.unit) ": " span.name { (u.name) } }
                    p.reason { (u.reason) }
                    @if let Some(e) = &u.last_error {
                        (error_html(e))
                    } @else {
                        p.small.no-error { "No error result: its hosts' outputs disagreed." }
                    }
                    p.small { a.unit-logs href={ "/jobs/" (job) "/logs/" (u.unit) } { "Every error result of this unit" }
                        " · " a href={ "/api/v1/jobs/" (job) "/logs/" (u.unit) } { "JSON" } }
                }
            }
            @if logs.failed_units.is_empty() { p #no-failed { "No failed units." } }
            nav.pager {
                @if let Some(next) = logs.next_after {
                    a #page-next href={ "/jobs/" (job) "/failed?after=" (next) } { "next →" }
                }
            }
            p.small { "The same as JSON: " a href={ "/api/v1/jobs/" (job) "/logs" } { "/api/v1/jobs/" (job) "/logs" }
                "; in a terminal: " code { "peergrid job logs " (job) } "." }
        },
    )
}

/// The page `/jobs/{id}/logs/{unit}`.
pub fn unit_html(p: &Project, u: &UnitLogs) -> String {
    layout(
        p,
        &format!("unit {} · errors", u.unit),
        html! {
            h1 { "Job " a href={ "/jobs/" (u.job) } { (u.job) } ", unit " (u.unit) ": " span.name { (u.name) } }
            p { "State: " strong #unit-state { (u.state) }
                @if let Some(reason) = &u.reason { " · " span.reason { (reason) } } }
            h2 { span #errors-total { (u.errors.len()) } " error results" }
            @for e in &u.errors { (error_html(e)) }
            p.small { a href={ "/jobs/" (u.job) "/failed" } { "Every failed unit of the job" }
                " · " a href={ "/api/v1/jobs/" (u.job) "/logs/" (u.unit) } { "JSON" } }
        },
    )
}
