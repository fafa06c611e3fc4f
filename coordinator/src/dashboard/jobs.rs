//! Every job the project ran, finished or not, newest first: the page
//! `/jobs?page=N` and its JSON twin `/api/v1/jobs?page=N` (the page as a
//! JSON array with `X-Total-Count` and `Link` headers, as `/api/v1/hosts`;
//! without `page`, `/api/v1/jobs` keeps answering every job, which
//! `peergrid job list` reads). The overview lists only unfinished jobs.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use maud::html;
use serde::Serialize;

use super::pages::{jobs_table, layout};
use super::{PageQuery, page_or_error, paged_json, view};
use crate::api::{Api, ApiResult};
use crate::project::Project;
use crate::store::{JobStatus, ReadStore, StoreError};

/// Jobs per page of `/jobs` and `/api/v1/jobs?page=N`.
pub const JOBS_PER_PAGE: usize = 50;

pub fn routes() -> Router<Arc<Api>> {
    Router::new().route("/jobs", get(jobs_page))
}

/// One page of the job list.
#[derive(Clone, Debug, Serialize)]
pub struct JobsPage {
    /// 1-based, clamped to the pages there are.
    pub page: u64,
    pub pages: u64,
    pub per_page: u64,
    pub total: u64,
    /// Newest first.
    pub jobs: Vec<JobStatus>,
}

/// Page `page` (1-based, clamped) of every job, newest first.
pub fn jobs_view(store: &dyn ReadStore, page: u64) -> Result<JobsPage, StoreError> {
    let total = store.job_count()?;
    let per_page = JOBS_PER_PAGE as u64;
    let pages = total.div_ceil(per_page).max(1);
    let page = page.clamp(1, pages);
    Ok(JobsPage {
        page,
        pages,
        per_page,
        total,
        jobs: store.jobs_newest_first((page - 1) * per_page, JOBS_PER_PAGE)?,
    })
}

async fn jobs_page(
    State(api): State<Arc<Api>>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let p = api.project.get();
    let page = async {
        let Query(q) = q?;
        let page = q.page()?;
        Ok(jobs_html(
            &p,
            &view(&api, move |s, _| jobs_view(s, page)).await?,
        ))
    };
    page_or_error(&p, page.await)
}

/// `/api/v1/jobs?page=N`: one page as a JSON array of job statuses (the
/// shape of the whole list), with `X-Total-Count` and `Link` headers.
pub async fn jobs_json_page(api: &Api, page: u64) -> ApiResult<Response> {
    let v = view(api, move |s, _| jobs_view(s, page)).await?;
    Ok(paged_json("/api/v1/jobs", v.page, v.pages, v.total, v.jobs))
}

/// The page `/jobs`.
pub fn jobs_html(p: &Project, v: &JobsPage) -> String {
    layout(
        p,
        "Jobs",
        html! {
            h1 { "Jobs" }
            p { span #jobs-total { (v.total) } " jobs, newest first · page "
                span #page { (v.page) } " of " span #pages { (v.pages) } }
            nav.pager {
                @if v.page > 1 { a #page-prev href={ "/jobs?page=" (v.page - 1) } { "← newer" } }
                @if v.page < v.pages { a #page-next href={ "/jobs?page=" (v.page + 1) } { "older →" } }
            }
            @if v.jobs.is_empty() {
                p #no-jobs { "No job has been submitted yet." }
            } @else {
                (jobs_table(&v.jobs))
            }
            p.small { "The same as JSON: " a href={ "/api/v1/jobs?page=" (v.page) } { "/api/v1/jobs?page=" (v.page) } "." }
        },
    )
}
