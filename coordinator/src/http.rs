//! The researchers' and the public's door: an HTTP API (axum), and the
//! server loop that keeps strangers from holding it shut.
//!
//! Reads are public; uploading blobs and submitting jobs need the
//! researcher token as `Authorization: Bearer <token>`. Every body has a
//! size limit and every rejection is a JSON `{"error": "..."}` with a
//! status code that says whose fault it is. The public dashboard's pages
//! and read-only JSON routes live in [`crate::dashboard`] and are merged
//! into the same router.
//!
//! [`serve`] accepts connections itself instead of `axum::serve`, which
//! has no header-read timeout and no connection limit: a stranger who
//! opens connections and never finishes a request would otherwise hold a
//! file descriptor each until the process can accept no more.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use peergrid_proto::Hash;
use peergrid_proto::api::{
    BlobsStored, CancelRequest, Cancelled, DatasetRow, JobDetail, Submitted,
};
use peergrid_proto::batch::BatchDecoder;
use peergrid_proto::limits::{MAX_INPUT, MAX_MODULE};
use peergrid_proto::spec::{JobSubmission, Validator};
use serde::Deserialize;
use serde_json::json;

use crate::api::{internal, may_grow};
use crate::mirror::Publisher;
use crate::modcheck::check_module;
use crate::store::Store;

pub use crate::api::{Api, ApiError, JobIdPath, MAX_ROW_ID};
use crate::api::{ApiResult, JobUnitPath, bad_request, blocking};
use crate::dashboard::export;

/// Largest job submission body (unit list included).
const MAX_SUBMISSION: usize = 256 * 1024 * 1024;

/// Largest body of a batch of blobs (`POST /api/v1/blobs`); a client
/// splits a larger upload into several.
pub const MAX_BLOB_BATCH: usize = 256 * 1024 * 1024;

/// A batch upload is written to the store every this many bytes or blobs,
/// whichever comes first: what one upload holds in memory.
const BATCH_FLUSH_BYTES: usize = 8 * 1024 * 1024;
const BATCH_FLUSH_BLOBS: usize = 4096;

pub fn router(api: Arc<Api>) -> Router {
    let researcher = Router::new()
        .route("/api/v1/blobs/missing", post(missing_blobs))
        .route("/api/v1/blobs", post(put_blobs))
        .route(
            "/api/v1/blobs/{hash}",
            put(put_blob).layer(DefaultBodyLimit::max(MAX_MODULE)),
        )
        .route(
            "/api/v1/jobs",
            post(submit_job).layer(DefaultBodyLimit::max(MAX_SUBMISSION)),
        )
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        // Checked before any handler reads a body: a stranger cannot make
        // the server buffer and parse 256 MiB without the token.
        .route_layer(middleware::from_fn_with_state(api.clone(), require_token))
        // Outside the token check, so its 401s are logged too.
        .route_layer(middleware::from_fn(crate::dashboard::metrics::log_refusals));
    Router::new()
        .merge(crate::dashboard::routes())
        .route(
            "/api/v1/health",
            get(|| async { Json(json!({ "ok": true })) }),
        )
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{id}", get(job_status))
        .route("/api/v1/jobs/{id}/results", get(export_results))
        .route("/api/v1/jobs/{id}/dataset/{unit}", get(dataset_row))
        .route("/api/v1/blob/{hash}", get(get_blob))
        .merge(researcher)
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such page or API route; see /api/v1/openapi.json".into(),
            )
        })
        .with_state(api)
}

async fn require_token(
    State(api): State<Arc<Api>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(&api, request.headers())?;
    Ok(next.run(request).await)
}

fn authorize(api: &Api, headers: &HeaderMap) -> ApiResult<()> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer <token>`; use the researcher token `peergrid-coordinator init` printed".into(),
            )
        })?;
    // blake3::Hash compares in constant time.
    if blake3::hash(token.trim().as_bytes()) != api.token_hash {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong researcher token".into(),
        ));
    }
    Ok(())
}

async fn missing_blobs(
    State(api): State<Arc<Api>>,
    body: Result<Json<Vec<Hash>>, JsonRejection>,
) -> ApiResult<Json<Vec<Hash>>> {
    let Json(hashes) = body?;
    let store = api.grid.store.clone();
    Ok(Json(
        blocking(move || {
            // Loose uploads asked about count as uploaded now, first:
            // garbage collection leaves those found below to the job
            // about to claim them (one collected before this is missing).
            store.touch_uploads(&hashes, peergrid_os::now_ms())?;
            store.missing_blobs(&hashes)
        })
        .await?,
    ))
}

async fn put_blob(
    State(api): State<Arc<Api>>,
    hash: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let (Path(hash), body) = (hash?, body?);
    let hash: Hash = hash.parse().map_err(|e| bad_request(format!("{e}")))?;
    may_grow(&api)?;
    if Hash::of(&body) != hash {
        return Err(bad_request(
            "the uploaded bytes do not hash to the blob's name; the upload was corrupted",
        ));
    }
    let store = api.grid.store.clone();
    let publisher = api.grid.publisher().cloned();
    blocking(move || {
        store.put_blob(&hash, &body)?;
        publish(publisher.as_deref(), [(&hash, &body[..])]);
        Ok(())
    })
    .await?;
    Ok(StatusCode::CREATED)
}

/// `POST /api/v1/blobs`: many blobs in one body (`peergrid_proto::batch`),
/// each checked against its hash as it arrives and stored in batches, so
/// the request holds at most [`BATCH_FLUSH_BYTES`] of checked blobs and
/// the frame being received (a blob of up to `MAX_MODULE`, briefly twice
/// while it is copied out) in memory. A bad frame stops the upload with a 400 naming it; the blobs
/// before it stay stored (they are content addressed: nothing wrong is
/// kept).
async fn put_blobs(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<BlobsStored>)> {
    use tokio_stream::StreamExt as _;

    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BLOB_BATCH as u64) {
        return Err(batch_too_large());
    }
    may_grow(&api)?;
    let mut stream = body.into_data_stream();
    let mut decoder = BatchDecoder::new(MAX_MODULE);
    let mut pending: Vec<(Hash, Vec<u8>)> = Vec::new();
    let mut pending_bytes = 0;
    let (mut received, mut stored_bytes) = (0usize, 0u64);
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| bad_request(format!("reading the upload: {e}")))?;
        received = received.saturating_add(piece.len());
        if received > MAX_BLOB_BATCH {
            // What checked out so far is kept, as after a bad frame.
            store_blobs(&api, pending).await?;
            return Err(batch_too_large());
        }
        let before = pending.len();
        let decoded = decoder.push(&piece, &mut pending);
        pending_bytes += pending[before..].iter().map(|b| b.1.len()).sum::<usize>();
        if decoded.is_err()
            || pending_bytes >= BATCH_FLUSH_BYTES
            || pending.len() >= BATCH_FLUSH_BLOBS
        {
            // Before a refusal too: the blobs before a bad one are stored,
            // as the error says.
            stored_bytes += pending_bytes as u64;
            store_blobs(&api, std::mem::take(&mut pending)).await?;
            pending_bytes = 0;
        }
        decoded.map_err(|e| bad_request(e.to_string()))?;
    }
    stored_bytes += pending_bytes as u64;
    store_blobs(&api, pending).await?;
    let blobs = decoder.finish().map_err(|e| bad_request(e.to_string()))?;
    if received == 0 {
        return Err(bad_request(
            "the batch is empty; send frames of hash (32 bytes), length (4 bytes, big-endian) and bytes",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(BlobsStored {
            blobs,
            bytes: stored_bytes,
        }),
    ))
}

fn batch_too_large() -> ApiError {
    ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("a batch of blobs is at most {MAX_BLOB_BATCH} bytes; send the rest in another"),
    )
}

async fn store_blobs(api: &Arc<Api>, blobs: Vec<(Hash, Vec<u8>)>) -> ApiResult<()> {
    if blobs.is_empty() {
        return Ok(());
    }
    may_grow(api)?;
    let store = api.grid.store.clone();
    let publisher = api.grid.publisher().cloned();
    blocking(move || {
        store.put_blobs(&blobs)?;
        publish(publisher.as_deref(), blobs.iter().map(|(h, b)| (h, &b[..])));
        Ok(())
    })
    .await
}

/// Writes uploaded blobs into the published folder, if there is one. A
/// failure costs workers only a fallback to the coordinator, so it is
/// logged, not answered: the blobs are stored.
fn publish<'a>(
    publisher: Option<&Publisher>,
    blobs: impl IntoIterator<Item = (&'a Hash, &'a [u8])>,
) {
    let Some(publisher) = publisher else { return };
    for (hash, bytes) in blobs {
        if let Err(e) = publisher.publish(hash, bytes) {
            tracing::error!(%hash, "publishing a blob failed: {e:#}");
        }
    }
}

async fn submit_job(
    State(api): State<Arc<Api>>,
    body: Result<Json<JobSubmission>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Submitted>)> {
    let Json(job) = body?;
    may_grow(&api)?;
    job.validate()
        .map_err(|e| bad_request(format!("job: {e}")))?;
    peergrid_proto::signing::verify(&api.project_key, &job.signature, &job.module, &job.args)
        .map_err(|e| {
            ApiError(
                StatusCode::FORBIDDEN,
                format!("the job's signature was refused: {e}; workers would refuse it too"),
            )
        })?;
    // Until the job is stored, garbage collection deletes none of the
    // blobs checked below.
    let gate = api.grid.blob_gate.clone().read_owned().await;
    // Workers run the job's module, and the judge its validator, with the
    // job's memory setting.
    let memory_bytes = job.settings.memory_mb.saturating_mul(1024 * 1024);
    check_uploaded_module(&api, job.module, memory_bytes, "module", |e| e).await?;
    if let Validator::Custom { module } = job.validator {
        check_uploaded_module(&api, module, memory_bytes, "validator module", |e| {
            format!("custom validator: {e}")
        })
        .await?;
    }
    let inputs: Vec<Hash> = job
        .units
        .iter()
        .map(|u| u.input)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // Blobs stored before publishing was on are not uploaded again: the
    // job's are published once it is stored, where missing.
    let publish = api.grid.publisher().map(|p| {
        let mut hashes = inputs.clone();
        hashes.push(job.module);
        if let Validator::Custom { module } = job.validator {
            hashes.push(module);
        }
        (p.clone(), hashes)
    });
    let store = api.grid.store.clone();
    let problem = blocking(move || {
        for h in inputs {
            match store.blob_len(&h)? {
                None => return Ok(Some(format!("input {h} was not uploaded"))),
                Some(n) if n as usize > MAX_INPUT => {
                    return Ok(Some(format!(
                        "input {h} is {n} bytes; a work unit's input is at most {MAX_INPUT} bytes"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(None)
    })
    .await?;
    if let Some(p) = problem {
        return Err(bad_request(p));
    }
    let units = job.units.len();
    // The job is stored, and the gate held until then, even if the client
    // goes away meanwhile.
    let grid = api.grid.clone();
    let id = tokio::spawn(async move {
        let stored = grid.submit(job).await;
        drop(gate);
        stored
    })
    .await
    .map_err(|e| internal(anyhow::anyhow!("job submission task: {e}")))?
    .map_err(internal)?;
    tracing::info!(job = id, units, "job submitted");
    if let Some((publisher, hashes)) = publish {
        publisher.publish_job_in_background(api.grid.store.clone(), hashes);
    }
    Ok((StatusCode::CREATED, Json(Submitted { job_id: id })))
}

/// Checks that an uploaded module (`what`: the job's, or its validator's)
/// is one the sandbox can run with `memory_bytes`; `describe` words the
/// module check's refusal.
async fn check_uploaded_module(
    api: &Api,
    hash: Hash,
    memory_bytes: u64,
    what: &str,
    describe: fn(String) -> String,
) -> ApiResult<()> {
    let store = api.grid.store.clone();
    let bytes = blocking(move || store.get_blob(&hash))
        .await?
        .ok_or_else(|| bad_request(format!("{what} {hash} was not uploaded")))?;
    let checked = tokio::task::spawn_blocking(move || check_module(&bytes, memory_bytes))
        .await
        .map_err(internal)?;
    checked.map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, describe(e)))
}

/// Every job; with `?page=N`, one page of them, newest first
/// (`dashboard::jobs`).
async fn list_jobs(
    State(api): State<Arc<Api>>,
    q: Result<Query<crate::dashboard::PageQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    if q.given() {
        return crate::dashboard::jobs::jobs_json_page(&api, q.page()?).await;
    }
    let store = api.grid.store.clone();
    Ok(Json(blocking(move || store.jobs()).await?).into_response())
}

async fn job_status(
    State(api): State<Arc<Api>>,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Json<serde_json::Value>> {
    let store = api.grid.store.clone();
    let (status, failed, info, plots) = blocking(move || {
        Ok((
            store.job_status(id)?,
            store.failed_units(id)?,
            store.job_info(id)?,
            store.job_plots(id)?,
        ))
    })
    .await?;
    // Jobs are never deleted: a job with a status has its info too.
    let (Some(status), Some(info)) = (status, info) else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}")));
    };
    let waiting = if status.finished {
        None
    } else {
        api.grid.waiting(id).map(str::to_string)
    };
    let detail = JobDetail {
        status,
        failed_units: failed,
        waiting,
        // What anyone needs to re-run a unit: the arguments and the signature.
        args: info.args,
        signature: info.signature,
        validator: info.validator,
        plots: plots.unwrap_or_default(),
    };
    // Through a `Value`, whose keys are sorted: the order this route has
    // always written them in.
    Ok(Json(serde_json::to_value(&detail).map_err(internal)?))
}

/// Cancels a job (`peergrid job cancel`): its unfinished units get no
/// more copies, hosts running one are told to stop, its dataset keeps what
/// validated. Cancelling twice is not an error (`already`).
async fn cancel_job(
    State(api): State<Arc<Api>>,
    JobIdPath(id): JobIdPath,
    body: Result<Json<CancelRequest>, JsonRejection>,
) -> ApiResult<Json<Cancelled>> {
    let Json(request) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body must be {{\"signature\": HEX}}, the job's researcher's signature of the cancel: {}", e.body_text()),
        )
    })?;
    let store = api.grid.store.clone();
    let Some(job) = blocking(move || store.job_info(id)).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}")));
    };
    if let Err(e) = peergrid_proto::signing::verify_cancel(&job.signature, id, &request.signature) {
        tracing::warn!(job = id, "refused a cancel: {e}");
        return Err(ApiError(StatusCode::FORBIDDEN, e.to_string()));
    }
    match api.grid.cancel_job(id).await {
        Ok(Some(done)) => Ok(Json(done)),
        Ok(None) => Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}"))),
        Err(e) => {
            tracing::error!(job = id, "cancelling failed: {e:#}");
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("could not cancel job {id} now: {e}; try again"),
            ))
        }
    }
}

/// One row of a job's dataset by unit number, without its output (the blob
/// named by `output_hash`): what `peergrid verify` checks, read from the
/// dataset's index instead of streaming the export to find it.
async fn dataset_row(
    State(api): State<Arc<Api>>,
    JobUnitPath(id, unit): JobUnitPath,
) -> ApiResult<Json<DatasetRow>> {
    let store = api.grid.store.clone();
    let (row, job_exists) = blocking(move || {
        // The first row after `unit - 1` is `unit`'s, if it has one in
        // this job; unit ids start at 1.
        let row = match unit.checked_sub(1) {
            Some(after) => store
                .dataset_index(id, after, 1)?
                .into_iter()
                .next()
                .filter(|r| r.unit == unit),
            None => None,
        };
        let job_exists = row.is_some() || store.job_info(id)?.is_some();
        Ok((row, job_exists))
    })
    .await?;
    match row {
        Some(row) => Ok(Json(row.into())),
        None if job_exists => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("job {id} has no validated row for unit {unit}"),
        )),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}"))),
    }
}

/// Any stored blob (module, input or output) by its hash: the dataset is
/// public, and so is everything needed to re-check it.
async fn get_blob(
    State(api): State<Arc<Api>>,
    hash: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(hash) = hash?;
    let hash: Hash = hash.parse().map_err(|e| bad_request(format!("{e}")))?;
    let store = api.grid.store.clone();
    let bytes = blocking(move || store.get_blob(&hash))
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no blob {hash}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize)]
struct ExportQuery {
    format: Option<String>,
    columns: Option<String>,
}

/// Streams a job's dataset (see [`export::write_download`]), with the
/// dataset's licence and citation in its headers.
async fn export_results(
    State(api): State<Arc<Api>>,
    JobIdPath(id): JobIdPath,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let kind = ExportKind::parse(q.format.as_deref(), q.columns.as_deref()).map_err(bad_request)?;
    let store = api.grid.store.clone();
    let Some(status) = blocking(move || store.job_status(id)).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}")));
    };
    let permit = api.exports.permit()?;
    let headers = crate::dashboard::citation::export_headers(&status);
    let store: Arc<dyn Store> = api.grid.store.clone();
    let mut response = export::stream(kind.content_type(), None, permit, move |out| {
        export::write_download(store.as_ref(), &status, kind, out)
    });
    response.headers_mut().extend(headers);
    Ok(response)
}

pub use crate::dashboard::export::{CSV_HEADER, ExportFormat, ExportKind, render_row};

/// Bounds on the HTTP server itself, against clients that connect and
/// never finish.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// How long a client has to send a request's headers, from the moment
    /// it connects or its previous response was sent; then the connection
    /// is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Connections served at once from one IP address.
    pub max_connections_per_ip: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_ip: 64,
        }
    }
}

/// Connections open per IP address; an entry leaves the map with its last
/// connection, so the map holds only addresses that are connected.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerIp`], given back when dropped.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(table: &Arc<PerIp>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let mut map = peergrid_os::lock(&table.0);
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = peergrid_os::lock(&self.table.0);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish (callers bound that wait). HTTP/1 only.
///
/// Each connection holds a place in the total and in its IP address's
/// count; a connection over either limit is closed as soon as it is
/// accepted, so one address cannot take the whole server and nobody can
/// make the process run out of file descriptors. A connection that has
/// not sent a whole request head within `header_read_timeout` (counted
/// from its start, and again after each response) is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let total = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let service = hyper_util::service::TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or a connection reset before
                    // it was accepted: wait a little instead of spinning.
                    tracing::warn!("accepting an HTTP connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(place) = total.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "HTTP connection limit reached; closing");
            continue;
        };
        let Some(slot) = PerIp::take(&per_ip, peer.ip(), limits.max_connections_per_ip) else {
            tracing::debug!(%peer, "per-address HTTP connection limit reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
            drop(slot);
            drop(place);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod upload_tests;
