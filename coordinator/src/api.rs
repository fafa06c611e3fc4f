//! What every HTTP route shares: the server's state ([`Api`]), its errors
//! (`{"error": …}` with the right status), the path extractors, the bridge
//! to the blocking store, and the download slots and manifest cache
//! ([`Exports`]). The routes are in `http.rs` (the researcher's API) and
//! `dashboard/` (the public pages and reads); both import this module, and
//! it imports neither.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use peergrid_proto::api::ErrorBody;
use peergrid_proto::wire::{JobId, UnitId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::grid::Grid;
use crate::project::ProjectCell;
use crate::store::DatasetStamp;

/// Downloads streamed at once (exports, manifests, stats dumps).
pub const MAX_CONCURRENT: usize = 4;
/// What `Retry-After` says when every download slot is taken, in seconds.
pub const RETRY_AFTER_SECS: u64 = 10;
/// Jobs whose export checksums are kept.
const MANIFEST_CACHE: usize = 256;

pub struct Api {
    pub grid: Arc<Grid>,
    /// BLAKE3 of the researcher token; the token itself is not kept.
    pub token_hash: blake3::Hash,
    /// Shown on the dashboard's front page so volunteers can join.
    pub join: String,
    /// The project's public key: submissions must carry a signature
    /// chain to it, or no worker would run them.
    pub project_key: [u8; 32],
    /// Bounds on the streamed downloads (exports, manifests, stats dumps)
    /// and the manifests' cache.
    pub exports: Exports,
    /// The project's name, description, web site and operator, as pages
    /// show them; `serve` keeps it in step with `coordinator.toml`.
    pub project: Arc<ProjectCell>,
}

impl Api {
    pub fn new(
        grid: Arc<Grid>,
        token_hash: blake3::Hash,
        join: String,
        project_key: [u8; 32],
    ) -> Api {
        Api {
            grid,
            token_hash,
            join,
            project_key,
            exports: Exports::new(MAX_CONCURRENT),
            project: Arc::default(),
        }
    }
}

#[derive(Debug)]
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(ErrorBody { error: self.1 })).into_response();
        // Every 503 is a busy server: say when to come back.
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// 507 while the coordinator is short of disk space.
pub(crate) fn may_grow(api: &Api) -> ApiResult<()> {
    api.grid
        .storage
        .may_grow()
        .map_err(|e| ApiError(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))
}

pub(crate) fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("internal error: {e}");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        ApiError(r.status(), r.body_text())
    }
}

// axum's own rejections answer in plain text; every route of this API
// answers `{"error": ...}`, so handlers take `Result<Extractor, Rejection>`
// and turn the rejection into an [`ApiError`] with the same status.
impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError(r.status(), r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        ApiError(r.status(), r.body_text())
    }
}

/// The largest job or host id there can be: ids are SQLite rowids, which
/// are signed 64-bit. A larger number names nothing, and the store could
/// not even look it up.
pub const MAX_ROW_ID: u64 = i64::MAX as u64;

/// A job id from the path (`/api/v1/jobs/{id}`, `/jobs/{id}`, …): `400`
/// when it is not a whole number, `404` when it is above [`MAX_ROW_ID`].
pub struct JobIdPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<JobIdPath> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(JobIdPath(job_id(&raw)?))
    }
}

/// A job id and a unit id from the path (`/api/v1/jobs/{id}/dataset/{unit}`),
/// each checked as [`JobIdPath`] checks a job id.
pub struct JobUnitPath(pub JobId, pub UnitId);

impl<S: Send + Sync> FromRequestParts<S> for JobUnitPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<JobUnitPath> {
        let Path((job, unit)) = Path::<(String, String)>::from_request_parts(parts, state).await?;
        let job = job_id(&job)?;
        let unit: UnitId = unit.trim().parse().map_err(|_| {
            bad_request(
                "the unit id in the path must be a whole number, as the dataset's `unit` shows",
            )
        })?;
        if unit > MAX_ROW_ID {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("no unit {unit}")));
        }
        Ok(JobUnitPath(job, unit))
    }
}

/// A job id as a path gives it: `400` when it is not a whole number,
/// `404` when it is above [`MAX_ROW_ID`].
pub(crate) fn job_id(raw: &str) -> ApiResult<JobId> {
    let id: JobId = raw.trim().parse().map_err(|_| {
        bad_request("the job id in the path must be a whole number, as `peergrid job list` shows")
    })?;
    if id > MAX_ROW_ID {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}")));
    }
    Ok(id)
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// BLAKE3 and length of a whole export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportDigest {
    pub blake3: String,
    pub bytes: u64,
}

/// What a job's manifest says about its exports, and how many rows they
/// held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportDigests {
    pub csv: ExportDigest,
    pub jsonl: ExportDigest,
    /// CSV with the JSON outputs as columns.
    pub csv_columns: ExportDigest,
    pub parquet: ExportDigest,
    pub rows: u64,
}

/// The download slots and the manifests' cache, shared by every request.
pub struct Exports {
    /// One permit per download running; a request that finds none gets
    /// `503` at once rather than queueing behind a slow reader.
    permits: Arc<Semaphore>,
    /// How many permits there are, for the refusal's message.
    max_concurrent: usize,
    /// Export checksums by job, with the dataset stamp they were computed
    /// at: a manifest request re-renders the dataset only when the stamp
    /// has moved (a row added or replaced).
    manifests: Mutex<HashMap<JobId, (DatasetStamp, ExportDigests)>>,
    /// Times export checksums were computed (tests read it).
    pub digests_computed: AtomicU64,
}

impl Exports {
    pub fn new(max_concurrent: usize) -> Exports {
        Exports {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            max_concurrent: max_concurrent.max(1),
            manifests: Mutex::new(HashMap::new()),
            digests_computed: AtomicU64::new(0),
        }
    }

    /// A download slot, or `503` with `Retry-After` when all are taken.
    pub fn permit(&self) -> ApiResult<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "all {} download slots are busy; retry in {RETRY_AFTER_SECS} s",
                    self.max_concurrent
                ),
            )
        })
    }

    fn cached(&self, job: JobId, stamp: &DatasetStamp) -> Option<ExportDigests> {
        let map = peergrid_os::lock(&self.manifests);
        map.get(&job)
            .filter(|(s, _)| s == stamp)
            .map(|(_, d)| d.clone())
    }

    fn remember(&self, job: JobId, stamp: DatasetStamp, digests: ExportDigests) {
        let mut map = peergrid_os::lock(&self.manifests);
        if map.len() >= MANIFEST_CACHE && !map.contains_key(&job) {
            // Forget the job least likely to be asked again: the oldest.
            if let Some(oldest) = map.keys().min().copied() {
                map.remove(&oldest);
            }
        }
        map.insert(job, (stamp, digests));
    }

    /// The export checksums of `job` at `stamp`, from the cache or
    /// computed by `compute` (and then cached).
    pub fn digests(
        &self,
        job: JobId,
        stamp: DatasetStamp,
        compute: impl FnOnce() -> anyhow::Result<ExportDigests>,
    ) -> anyhow::Result<ExportDigests> {
        if let Some(d) = self.cached(job, &stamp) {
            return Ok(d);
        }
        let d = compute()?;
        self.digests_computed.fetch_add(1, Ordering::Relaxed);
        self.remember(job, stamp, d.clone());
        Ok(d)
    }
}
