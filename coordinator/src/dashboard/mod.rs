//! The public, read-only web dashboard: overview, job, host leaderboard,
//! host and dataset pages (server-rendered HTML that works without
//! JavaScript), their JSON twins under `/api/v1/`, the checksum manifest,
//! gzipped stats dumps for third-party stats sites and the OpenAPI
//! document.
//!
//! Every page and its JSON twin are built from one view function here
//! (`overview`, `job_view`, …) that reads the store ([`ReadStore`]) on a blocking
//! thread with the clock passed in, so the numbers on a page and in the
//! API are the same numbers. `pages` turns views into HTML (maud, which
//! escapes by default), `charts` draws SVG with plotters, `credit` holds
//! the credit and trust rules, `export` the streamed downloads, `logs`
//! the failed units' errors and stderr, and `openapi` the API description.
//!
//! Nothing here writes: submission and administration stay behind the
//! researcher token in `http`.

pub mod about;
pub mod charts;
pub mod citation;
pub mod columns;
pub mod credit;
pub mod export;
pub mod jobs;
pub mod logs;
pub mod manifest;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod parquet;
pub mod plots;
pub mod preview;
pub mod tasks;
pub mod teams;

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use peergrid_proto::wire::JobId;
use serde::{Deserialize, Serialize};

use crate::api::{Api, ApiError, ApiResult, JobIdPath, MAX_ROW_ID, blocking};
use crate::credit::Credit;
use crate::project::Project;
use crate::store::{
    Bucket, DatasetSize, HostId, HostRecord, HostSummary, JobStatus, ReadStore, StoreError,
};
use peergrid_os::now_ms;
use preview::{OutputPreview, PREVIEW_BYTES, preview};

/// A host counts as online when it exchanged within this long.
pub const ONLINE_MS: u64 = 120_000;
/// Dataset rows per browser page.
pub const PAGE_ROWS: usize = 50;
/// Hosts per leaderboard page (`/hosts` and `/api/v1/hosts`).
pub const HOSTS_PER_PAGE: usize = 100;
/// Most bars on a job's progress chart.
const JOB_CHART_BARS: u64 = 120;

/// The public routes: pages, their JSON twins, downloads, stats dumps.
pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/", get(overview_page))
        .route("/jobs/{id}", get(job_page))
        .route("/hosts", get(hosts_page))
        .route("/volunteers", get(volunteers_page))
        .route("/api/v1/volunteers", get(volunteers_json))
        .route("/stats/volunteers.gz", get(export::volunteers_gz))
        .route("/hosts/{id}", get(host_page))
        .route("/dataset", get(dataset_page))
        .route("/api/v1/overview", get(overview_json))
        .route("/api/v1/throughput", get(throughput_json))
        .route("/api/v1/jobs/{id}/progress", get(job_progress_json))
        .route("/api/v1/hosts", get(hosts_json))
        .route("/api/v1/hosts/{id}", get(host_json))
        .route("/api/v1/dataset", get(dataset_json))
        .route("/api/v1/jobs/{id}/manifest", get(manifest::manifest))
        .route("/api/v1/jobs/{id}/CITATION.cff", get(citation::serve))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics::serve))
        .route("/stats/hosts.gz", get(export::hosts_gz))
        .route("/stats/credit.gz", get(export::credit_gz))
        .merge(logs::routes())
        .merge(about::routes())
        .merge(jobs::routes())
        .merge(plots::routes())
        // The job page and the plots' routes share one server's drawn plots.
        .layer(Extension(Arc::new(plots::PlotCache::default())))
        .merge(tasks::routes())
        .merge(teams::routes())
}

// ---------------------------------------------------------------- views

/// The front page's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub now_ms: u64,
    /// Hosts that exchanged within the last [`ONLINE_MS`].
    pub workers_online: u64,
    pub hosts_total: u64,
    /// Successful results received in the last hour.
    pub results_last_hour: u64,
    /// Fuel of those results.
    pub fuel_last_hour: u64,
    pub results_per_second: f64,
    pub fuel_per_second: f64,
    pub dataset: DatasetSize,
    pub jobs_total: u64,
    /// Jobs not finished yet.
    pub jobs_in_progress: Vec<JobStatus>,
}

/// Successful results per minute over the last hour, oldest first, empty
/// minutes included.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub from_ms: u64,
    pub bucket_ms: u64,
    pub buckets: Vec<Bucket>,
}

pub fn overview(store: &dyn ReadStore, now: u64) -> Result<(Overview, Throughput), StoreError> {
    let first_minute = (now / 60_000).saturating_sub(59) * 60_000;
    let raw = store.result_buckets(first_minute, 60_000)?;
    let buckets = charts::fill_minutes(&raw, first_minute, 60);
    let results_last_hour = buckets.iter().fold(0u64, |a, b| a.saturating_add(b.count));
    let fuel_last_hour = buckets.iter().fold(0u64, |a, b| a.saturating_add(b.fuel));
    let secs = (now.saturating_sub(first_minute) as f64 / 1000.0).max(1.0);
    let jobs = store.jobs()?;
    let overview = Overview {
        now_ms: now,
        workers_online: store.hosts_seen_since(now.saturating_sub(ONLINE_MS))?,
        hosts_total: store.hosts_seen_since(0)?,
        results_last_hour,
        fuel_last_hour,
        results_per_second: results_last_hour as f64 / secs,
        fuel_per_second: fuel_last_hour as f64 / secs,
        dataset: store.dataset_size(None)?,
        jobs_total: jobs.len() as u64,
        jobs_in_progress: jobs.into_iter().filter(|j| !j.finished).collect(),
    };
    Ok((
        overview,
        Throughput {
            from_ms: first_minute,
            bucket_ms: 60_000,
            buckets,
        },
    ))
}

/// A job's page.
#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    pub status: JobStatus,
    pub dataset: DatasetSize,
    /// Units validated in the last hour.
    pub validated_last_hour: u64,
    /// Units validated per minute since the job was created (until its
    /// last validation once finished).
    pub validated_per_minute: f64,
    /// Validated units over the job's life, at most 120 equal buckets.
    pub progress: Throughput,
}

pub fn job_view(store: &dyn ReadStore, id: JobId, now: u64) -> Result<Option<JobView>, StoreError> {
    let Some(status) = store.job_status(id)? else {
        return Ok(None);
    };
    let fine = store.validated_buckets(id, 60_000)?;
    let from = status.created_ms / 60_000 * 60_000;
    let last = fine.last().map_or(from, |b| b.start_ms + 60_000);
    let to = if status.finished { last } else { now.max(last) };
    let (buckets, width) = charts::coarsen(&fine, from, to, JOB_CHART_BARS);
    let hour_ago = now.saturating_sub(3_600_000);
    let validated_last_hour = fine
        .iter()
        .filter(|b| b.start_ms >= hour_ago)
        .fold(0u64, |a, b| a.saturating_add(b.count));
    let minutes = (to.saturating_sub(status.created_ms) as f64 / 60_000.0).max(1.0);
    Ok(Some(JobView {
        dataset: store.dataset_size(Some(id))?,
        validated_last_hour,
        validated_per_minute: status.validated as f64 / minutes,
        status,
        progress: Throughput {
            from_ms: from,
            bucket_ms: width,
            buckets,
        },
    }))
}

/// A host with its credit, as the leaderboard shows it.
#[derive(Clone, Debug, Serialize)]
pub struct HostEntry {
    #[serde(flatten)]
    pub host: HostSummary,
    pub online: bool,
    /// Credit in fuel: `total`, and `recent` (per day, 7-day half-life).
    pub credit: Credit,
}

fn entry(host: HostSummary, now: u64) -> HostEntry {
    HostEntry {
        online: host.last_seen_ms >= now.saturating_sub(ONLINE_MS),
        credit: host.credit.at(now),
        host,
    }
}

/// Every host, highest total credit first.
pub fn leaderboard(store: &dyn ReadStore, now: u64) -> Result<Vec<HostEntry>, StoreError> {
    let mut out: Vec<HostEntry> = store.hosts()?.into_iter().map(|h| entry(h, now)).collect();
    out.sort_by(|a, b| {
        b.credit
            .total
            .cmp(&a.credit.total)
            .then(b.credit.recent.total_cmp(&a.credit.recent))
            .then(a.host.id.cmp(&b.host.id))
    });
    Ok(out)
}

/// One page of the leaderboard.
#[derive(Clone, Debug, Serialize)]
pub struct HostsPage {
    /// 1-based, clamped to the pages there are.
    pub page: u64,
    pub pages: u64,
    pub per_page: u64,
    pub total: u64,
    pub entries: Vec<HostEntry>,
}

/// Page `page` (1-based, clamped) of the hosts by total credit, highest
/// first; ties by id.
pub fn leaderboard_page(
    store: &dyn ReadStore,
    now: u64,
    page: u64,
) -> Result<HostsPage, StoreError> {
    let total = store.hosts_seen_since(0)?;
    let per_page = HOSTS_PER_PAGE as u64;
    let pages = total.div_ceil(per_page).max(1);
    let page = page.clamp(1, pages);
    let entries = store
        .hosts_by_credit((page - 1) * per_page, HOSTS_PER_PAGE)?
        .into_iter()
        .map(|h| entry(h, now))
        .collect();
    Ok(HostsPage {
        page,
        pages,
        per_page,
        total,
        entries,
    })
}

/// A volunteer: every host that runs under one account name (a host with
/// no account is a volunteer of its own, named after its key).
#[derive(Clone, Debug, Serialize)]
pub struct VolunteerEntry {
    pub name: String,
    /// The account key (hex) the volunteer is known by; empty for an
    /// anonymous host. Names are chosen freely; this is the identity.
    pub account: String,
    /// Whether `name` is an account the volunteer chose (false: an
    /// anonymous host, named by its key).
    pub has_account: bool,
    /// Public keys (hex) of the volunteer's hosts.
    pub hosts: Vec<String>,
    /// The names pages show for them, in the same order.
    pub host_names: Vec<String>,
    /// The team its hosts name, by id and name (the first one named when
    /// they differ; `None` and '' = none).
    pub team_id: Option<u64>,
    pub team: String,
    pub online: bool,
    /// The sum of the hosts' credit.
    pub credit: Credit,
}

/// Every volunteer, highest total credit first.
pub fn volunteers(store: &dyn ReadStore, now: u64) -> Result<Vec<VolunteerEntry>, StoreError> {
    // By account key (or, anonymous, host key): two accounts may share a
    // name and are still two volunteers.
    let mut by_id: std::collections::BTreeMap<String, VolunteerEntry> = Default::default();
    for e in leaderboard(store, now)? {
        let has_account = !e.host.account.is_empty();
        let short = |key: &str| key[..12.min(key.len())].to_string();
        let (id, name) = if has_account {
            let name = if e.host.account_name.is_empty() {
                format!("account {}", short(&e.host.account))
            } else {
                e.host.account_name.clone()
            };
            (e.host.account.clone(), name)
        } else {
            (e.host.public_key.clone(), e.host.display_name())
        };
        let v = by_id.entry(id).or_insert_with(|| VolunteerEntry {
            name,
            account: if has_account {
                e.host.account.clone()
            } else {
                String::new()
            },
            has_account,
            hosts: Vec::new(),
            host_names: Vec::new(),
            team_id: None,
            team: String::new(),
            online: false,
            credit: Credit::default(),
        });
        v.hosts.push(e.host.public_key.clone());
        v.host_names.push(e.host.display_name());
        if v.team_id.is_none() && e.host.team_id.is_some() {
            v.team_id = e.host.team_id;
            v.team = e.host.team.clone();
        }
        v.online |= e.online;
        v.credit.add(e.credit);
    }
    let mut out: Vec<VolunteerEntry> = by_id.into_values().collect();
    out.sort_by(|a, b| {
        b.credit
            .total
            .cmp(&a.credit.total)
            .then(b.credit.recent.total_cmp(&a.credit.recent))
            .then(a.name.cmp(&b.name))
    });
    Ok(out)
}

/// One host's page.
#[derive(Clone, Debug, Serialize)]
pub struct HostView {
    #[serde(flatten)]
    pub entry: HostEntry,
    pub record: HostRecord,
    /// Consecutive valid results checked against a replica, as the
    /// scheduler counts them for adaptive replication (`trust.rs`).
    pub trust: u64,
    /// Tasks the host may be sent per day; `None`: the full quota.
    pub daily_quota: Option<u32>,
}

/// The id of a host named by numeric id or hex public key, if it exists.
pub fn find_host(store: &dyn ReadStore, id: &str) -> Result<Option<HostId>, StoreError> {
    match id.parse() {
        // Above every rowid: no such host (and the store could not look
        // it up).
        Ok(n) if n > MAX_ROW_ID => Ok(None),
        Ok(n) => Ok(store.host(n)?.map(|h| h.id)),
        Err(_) => store.host_by_key(id),
    }
}

/// Finds a host by numeric id or hex public key.
pub fn host_view(
    store: &dyn ReadStore,
    id: &str,
    now: u64,
) -> Result<Option<HostView>, StoreError> {
    let id = find_host(store, id)?;
    let Some(host) = id.map(|id| store.host(id)).transpose()?.flatten() else {
        return Ok(None);
    };
    let record = store.host_record(host.id)?;
    let standing = store.host_standing(host.id)?;
    Ok(Some(HostView {
        entry: entry(host, now),
        record,
        trust: standing.as_ref().map_or(0, |s| s.consecutive_valid),
        daily_quota: standing.and_then(|s| s.quota),
    }))
}

/// One page of the dataset browser.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetView {
    pub job: Option<JobId>,
    /// 1-based.
    pub page: u64,
    pub per_page: u64,
    pub total_rows: u64,
    pub pages: u64,
    pub rows: Vec<peergrid_proto::api::DatasetRow>,
    /// The start of each row's output, in the order of `rows`.
    pub previews: Vec<OutputPreview>,
    /// Every job, for the filter.
    pub jobs: Vec<(JobId, String)>,
}

pub fn dataset_view(
    store: &dyn ReadStore,
    job: Option<JobId>,
    page: u64,
) -> Result<DatasetView, StoreError> {
    let total_rows = store.dataset_size(job)?.rows;
    let per_page = PAGE_ROWS as u64;
    let pages = total_rows.div_ceil(per_page).max(1);
    let page = page.clamp(1, pages);
    let rows: Vec<peergrid_proto::api::DatasetRow> = store
        .dataset_browse(job, (page - 1) * per_page, PAGE_ROWS)?
        .into_iter()
        .map(Into::into)
        .collect();
    let previews = rows
        .iter()
        .map(|r| {
            let (prefix, len) = store
                .blob_prefix(&r.output_hash, PREVIEW_BYTES)?
                .unwrap_or_default();
            Ok(preview(&prefix, len))
        })
        .collect::<Result<_, StoreError>>()?;
    let jobs = store.jobs()?.into_iter().map(|j| (j.id, j.name)).collect();
    Ok(DatasetView {
        job,
        page,
        per_page,
        total_rows,
        pages,
        rows,
        previews,
        jobs,
    })
}

// ------------------------------------------------------------- handlers

/// A page's HTML, or its error as an HTML page in the project's layout
/// (the JSON routes answer `ApiError` as `{"error": …}`).
pub(crate) fn page_or_error(p: &Project, page: ApiResult<String>) -> Response {
    match page {
        Ok(html) => Html(html).into_response(),
        Err(ApiError(status, msg)) => (status, Html(pages::error(p, status, &msg))).into_response(),
    }
}

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what)
}

async fn view<T: Send + 'static>(
    api: &Api,
    f: impl FnOnce(&dyn ReadStore, u64) -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    let store = api.grid.store.clone();
    blocking(move || f(store.as_ref(), now_ms())).await
}

async fn overview_page(State(api): State<Arc<Api>>) -> Response {
    let p = api.project.get();
    let page = view(&api, overview).await;
    page_or_error(
        &p,
        page.map(|(o, t)| pages::overview(&p, &o, &t, &api.join)),
    )
}

async fn overview_json(State(api): State<Arc<Api>>) -> ApiResult<Json<Overview>> {
    Ok(Json(view(&api, overview).await?.0))
}

async fn throughput_json(State(api): State<Arc<Api>>) -> ApiResult<Json<Throughput>> {
    Ok(Json(view(&api, overview).await?.1))
}

async fn job_view_or_404(api: &Api, id: JobId) -> ApiResult<JobView> {
    view(api, move |s, now| job_view(s, id, now))
        .await?
        .ok_or_else(|| not_found(format!("no job {id}")))
}

async fn job_page(
    State(api): State<Arc<Api>>,
    Extension(cache): Extension<Arc<plots::PlotCache>>,
    id: Result<JobIdPath, ApiError>,
) -> Response {
    let p = api.project.get();
    let page = async {
        let JobIdPath(id) = id?;
        let view = job_view_or_404(&api, id).await?;
        let plots = plots::job_plots(&api, &cache, id).await?;
        Ok(pages::job(&p, &view, plots.as_deref()))
    };
    page_or_error(&p, page.await)
}

async fn job_progress_json(
    State(api): State<Arc<Api>>,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Json<JobView>> {
    Ok(Json(job_view_or_404(&api, id).await?))
}

/// `?page=N` of a paged list.
#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<String>,
}

impl PageQuery {
    /// Whether the query named a page at all.
    pub(crate) fn given(&self) -> bool {
        self.page.is_some()
    }

    pub(crate) fn page(&self) -> ApiResult<u64> {
        match self.page.as_deref().map(str::trim) {
            None | Some("") => Ok(1),
            Some(s) => s.parse().map_err(|_| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("`page` must be a whole number, not `{s}`"),
                )
            }),
        }
    }
}

async fn hosts_page(
    State(api): State<Arc<Api>>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let p = api.project.get();
    let page = async {
        let Query(q) = q?;
        let page = q.page()?;
        let v = view(&api, move |s, now| leaderboard_page(s, now, page)).await?;
        Ok(pages::hosts(&p, &v))
    };
    page_or_error(&p, page.await)
}

async fn volunteers_page(State(api): State<Arc<Api>>) -> Response {
    let p = api.project.get();
    let page = view(&api, volunteers).await;
    page_or_error(&p, page.map(|v| pages::volunteers(&p, &v)))
}

async fn volunteers_json(State(api): State<Arc<Api>>) -> ApiResult<Json<Vec<VolunteerEntry>>> {
    Ok(Json(view(&api, volunteers).await?))
}

/// One page of hosts as a JSON array (the shape this route always had);
/// `X-Total-Count` says how many hosts there are and `Link` names the
/// previous and next pages.
async fn hosts_json(
    State(api): State<Arc<Api>>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let page = q.page()?;
    let v = view(&api, move |s, now| leaderboard_page(s, now, page)).await?;
    Ok(paged_json(
        "/api/v1/hosts",
        v.page,
        v.pages,
        v.total,
        v.entries,
    ))
}

/// One page of a paged JSON list at `route`: the body, with
/// `X-Total-Count` (`total`) and a `Link` header to the previous and next
/// pages (`?page=N`, of `pages`).
pub fn paged_json(
    route: &str,
    page: u64,
    pages: u64,
    total: u64,
    body: impl Serialize,
) -> Response {
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("<{route}?page={}>; rel=\"prev\"", page - 1));
    }
    if page < pages {
        links.push(format!("<{route}?page={}>; rel=\"next\"", page + 1));
    }
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert("x-total-count", header::HeaderValue::from(total));
    if !links.is_empty()
        && let Ok(link) = header::HeaderValue::from_str(&links.join(", "))
    {
        headers.insert(header::LINK, link);
    }
    response
}

async fn host_view_or_404(api: &Api, id: String) -> ApiResult<HostView> {
    let shown = id.clone();
    view(api, move |s, now| host_view(s, &id, now))
        .await?
        .ok_or_else(|| not_found(format!("no host {shown}")))
}

/// The host's page: its record, machine and page `?page=N` of its tasks.
async fn host_page(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let p = api.project.get();
    let page = async {
        let Path(id) = id?;
        let Query(q) = q?;
        let page = q.page()?;
        let host = host_view_or_404(&api, id).await?;
        let hid = host.entry.host.id;
        let tasks = view(&api, move |s, _| tasks::host_tasks_view(s, hid, page)).await?;
        Ok(pages::host(&p, &host, tasks::tasks_html(&tasks)))
    };
    page_or_error(&p, page.await)
}

async fn host_json(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<HostView>> {
    let Path(id) = id?;
    Ok(Json(host_view_or_404(&api, id).await?))
}

#[derive(Deserialize)]
pub struct DatasetQuery {
    /// A job id; empty means every job (what the filter form sends).
    job: Option<String>,
    page: Option<String>,
}

impl DatasetQuery {
    fn parse(&self) -> ApiResult<(Option<JobId>, u64)> {
        let num = |name: &str, v: &Option<String>| -> ApiResult<Option<u64>> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) => s.parse().map(Some).map_err(|_| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("`{name}` must be a whole number, not `{s}`"),
                    )
                }),
            }
        };
        let job = num("job", &self.job)?;
        if let Some(job) = job.filter(|&j| j > MAX_ROW_ID) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("`job` {job} is above every job id ({MAX_ROW_ID} at most)"),
            ));
        }
        Ok((job, num("page", &self.page)?.unwrap_or(1)))
    }
}

async fn dataset_page(
    State(api): State<Arc<Api>>,
    q: Result<Query<DatasetQuery>, QueryRejection>,
) -> Response {
    let p = api.project.get();
    let page = async {
        let Query(q) = q?;
        let (job, page) = q.parse()?;
        let v = view(&api, move |s, _| dataset_view(s, job, page)).await?;
        Ok(pages::dataset(&p, &v))
    };
    page_or_error(&p, page.await)
}

async fn dataset_json(
    State(api): State<Arc<Api>>,
    q: Result<Query<DatasetQuery>, QueryRejection>,
) -> ApiResult<Json<DatasetView>> {
    let Query(q) = q?;
    let (job, page) = q.parse()?;
    Ok(Json(
        view(&api, move |s, _| dataset_view(s, job, page)).await?,
    ))
}

#[cfg(test)]
mod dataset_tests;
#[cfg(test)]
mod face_tests;
#[cfg(test)]
pub(crate) mod tests;
