//! A host's tasks, like BOINC's results page: every copy it was sent,
//! newest first, with what became of it (valid, invalid, pending, error,
//! timed out, …), when it was sent and reported, run time, fuel and the
//! credit it earned. Shown under the host's page (`/hosts/{id}?page=N`)
//! and as JSON (`/api/v1/hosts/{id}/tasks?page=N`: an array with
//! `X-Total-Count` and `Link`, as `/api/v1/hosts`).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};
use serde::Serialize;

use super::credit::gfuel;
use super::pages::time;
use super::{PageQuery, find_host, paged_json, view};
use crate::api::{Api, ApiError, ApiResult};
use crate::store::{HostId, HostTask, ReadStore, StoreError};

/// Tasks per page of a host's task list.
pub const TASKS_PER_PAGE: usize = 50;

pub fn routes() -> Router<Arc<Api>> {
    Router::new().route("/api/v1/hosts/{id}/tasks", get(tasks_json))
}

/// One page of a host's tasks.
#[derive(Clone, Debug, Serialize)]
pub struct HostTasksPage {
    pub host: HostId,
    /// 1-based, clamped to the pages there are.
    pub page: u64,
    pub pages: u64,
    pub per_page: u64,
    /// Every copy the host was sent.
    pub total: u64,
    /// Newest first.
    pub tasks: Vec<HostTask>,
}

/// Page `page` (1-based, clamped) of the tasks of `host`.
pub fn host_tasks_view(
    store: &dyn ReadStore,
    host: HostId,
    page: u64,
) -> Result<HostTasksPage, StoreError> {
    let total = store.host_task_count(host)?;
    let per_page = TASKS_PER_PAGE as u64;
    let pages = total.div_ceil(per_page).max(1);
    let page = page.clamp(1, pages);
    Ok(HostTasksPage {
        host,
        page,
        pages,
        per_page,
        total,
        tasks: store.host_tasks(host, (page - 1) * per_page, TASKS_PER_PAGE)?,
    })
}

async fn tasks_json(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Path(id) = id?;
    let Query(q) = q?;
    let page = q.page()?;
    let shown = id.clone();
    let v = view(&api, move |s, _| {
        find_host(s, &id)?
            .map(|host| host_tasks_view(s, host, page))
            .transpose()
    })
    .await?
    .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no host {shown}")))?;
    let route = format!("/api/v1/hosts/{}/tasks", v.host);
    Ok(paged_json(&route, v.page, v.pages, v.total, v.tasks))
}

/// How a task's state reads on the page.
fn state_label(state: &str) -> &'static str {
    match state {
        "valid" => "valid",
        "invalid" => "invalid",
        "pending" => "awaiting validation",
        "unvalidated" => "completed, unit not validated",
        "in_progress" => "in progress",
        "error" => "error",
        "timed_out" => "not reported by the deadline",
        "voided" => "voided (given back, cancelled or its host caught)",
        _ => "unknown",
    }
}

/// The task table of a host's page, with its pager.
pub fn tasks_html(v: &HostTasksPage) -> Markup {
    let link = |page: u64| format!("/hosts/{}?page={page}#tasks", v.host);
    html! {
        h2 #tasks { "Tasks" }
        p { span #tasks-total { (v.total) } " tasks, newest first · page "
            span #tasks-page { (v.page) } " of " span #tasks-pages { (v.pages) } }
        nav.pager {
            @if v.page > 1 { a #tasks-prev href=(link(v.page - 1)) { "← newer" } }
            @if v.page < v.pages { a #tasks-next href=(link(v.page + 1)) { "older →" } }
        }
        table #host-tasks {
            thead { tr {
                th { "job" } th.num { "unit" } th { "state" } th { "sent" } th { "reported (or due)" }
                th.num { "run time (s)" } th.num { "fuel" } th.num { "credit (Gfuel)" }
            } }
            tbody {
                @for t in &v.tasks {
                    tr data-job=(t.job) data-unit=(t.unit) data-state=(t.state) {
                        td { a href={ "/jobs/" (t.job) } { (t.job) ": " (t.job_name) } }
                        td.num.unit title=(t.unit_name) {
                            @if t.state == "error" {
                                a href={ "/jobs/" (t.job) "/logs/" (t.unit) } { (t.unit) }
                            } @else { (t.unit) }
                        }
                        td.state {
                            (state_label(&t.state))
                            @if let Some(e) = &t.error { br; span.small.error { (e) } }
                        }
                        td.small { (time(t.sent_ms)) }
                        td.small {
                            @match t.received_ms {
                                Some(ms) => (time(ms)),
                                None => { "due " (time(t.deadline_ms)) }
                            }
                        }
                        td.num.elapsed { @if let Some(ms) = t.elapsed_ms { (format!("{:.1}", ms as f64 / 1000.0)) } }
                        td.num.fuel { @if let Some(f) = t.fuel { (f) } }
                        td.num.credit data-fuel=(t.credit) { (gfuel(t.credit as f64)) }
                    }
                }
            }
        }
        @if v.tasks.is_empty() { p #no-tasks { "No task has been sent to this host yet." } }
        p.small { "Valid: in the agreeing set of its unit's dataset row; invalid: a result that disagreed with it; "
            "credit is the fuel of a valid result once granted. The same as JSON: "
            a href={ "/api/v1/hosts/" (v.host) "/tasks?page=" (v.page) } { "/api/v1/hosts/" (v.host) "/tasks" } "." }
    }
}
