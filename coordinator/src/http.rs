//! The researchers' and the public's door: an HTTP API (axum).
//!
//! Reads are public; uploading blobs and submitting jobs need the
//! researcher token as `Authorization: Bearer <token>`. Every body has a
//! size limit and every rejection is a JSON `{"error": "..."}` with a
//! status code that says whose fault it is. The public dashboard's pages
//! and read-only JSON routes live in [`crate::dashboard`] and are merged
//! into the same router.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use peergrid_proto::Hash;
use peergrid_proto::limits::{MAX_INPUT, MAX_MODULE};
use peergrid_proto::spec::{JobSubmission, Validator};
use peergrid_proto::wire::JobId;
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;

use crate::grid::Grid;
use crate::modcheck::check_module;
use crate::store::{DatasetRow, Store};

/// Largest job submission body (unit list included).
const MAX_SUBMISSION: usize = 256 * 1024 * 1024;

pub struct Api {
    pub grid: Arc<Grid>,
    /// BLAKE3 of the researcher token; the token itself is not kept.
    pub token_hash: blake3::Hash,
    /// Shown on the dashboard's front page so volunteers can join.
    pub join: String,
    /// The project's public key: submissions must carry a signature
    /// chain to it, or no worker would run them.
    pub project_key: [u8; 32],
}

pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("internal error: {e}");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        ApiError(r.status(), r.body_text())
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub fn router(api: Arc<Api>) -> Router {
    let researcher = Router::new()
        .route("/api/v1/blobs/missing", post(missing_blobs))
        .route(
            "/api/v1/blobs/{hash}",
            put(put_blob).layer(DefaultBodyLimit::max(MAX_MODULE)),
        )
        .route(
            "/api/v1/jobs",
            post(submit_job).layer(DefaultBodyLimit::max(MAX_SUBMISSION)),
        )
        // Checked before any handler reads a body: a stranger cannot make
        // the server buffer and parse 256 MiB without the token.
        .route_layer(middleware::from_fn_with_state(api.clone(), require_token));
    Router::new()
        .merge(crate::dashboard::routes())
        .route(
            "/api/v1/health",
            get(|| async { Json(json!({ "ok": true })) }),
        )
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{id}", get(job_status))
        .route("/api/v1/jobs/{id}/results", get(export_results))
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

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(internal)
}

async fn missing_blobs(
    State(api): State<Arc<Api>>,
    body: Result<Json<Vec<Hash>>, JsonRejection>,
) -> ApiResult<Json<Vec<Hash>>> {
    let Json(hashes) = body?;
    let store = api.grid.store.clone();
    Ok(Json(blocking(move || store.missing_blobs(&hashes)).await?))
}

async fn put_blob(
    State(api): State<Arc<Api>>,
    Path(hash): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let hash: Hash = hash.parse().map_err(|e| bad_request(format!("{e}")))?;
    if Hash::of(&body) != hash {
        return Err(bad_request(
            "the uploaded bytes do not hash to the blob's name; the upload was corrupted",
        ));
    }
    let store = api.grid.store.clone();
    blocking(move || store.put_blob(&hash, &body)).await?;
    Ok(StatusCode::CREATED)
}

async fn submit_job(
    State(api): State<Arc<Api>>,
    body: Result<Json<JobSubmission>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Json(job) = body?;
    job.validate()
        .map_err(|e| bad_request(format!("job: {e}")))?;
    peergrid_proto::signing::verify(&api.project_key, &job.signature, &job.module, &job.args)
        .map_err(|e| {
            ApiError(
                StatusCode::FORBIDDEN,
                format!("the job's signature was refused: {e}; workers would refuse it too"),
            )
        })?;
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
    let id = api.grid.submit(job).await.map_err(internal)?;
    tracing::info!(job = id, units, "job submitted");
    Ok((StatusCode::CREATED, Json(json!({ "job_id": id }))))
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

async fn list_jobs(State(api): State<Arc<Api>>) -> ApiResult<impl IntoResponse> {
    let store = api.grid.store.clone();
    Ok(Json(blocking(move || store.jobs()).await?))
}

async fn job_status(
    State(api): State<Arc<Api>>,
    Path(id): Path<JobId>,
) -> ApiResult<Json<serde_json::Value>> {
    let store = api.grid.store.clone();
    let (status, failed, info) = blocking(move || {
        Ok((
            store.job_status(id)?,
            store.failed_units(id)?,
            store.job_info(id)?,
        ))
    })
    .await?;
    let status = status.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job {id}")))?;
    let mut v = serde_json::to_value(&status).map_err(internal)?;
    v["failed_units"] = serde_json::to_value(failed).map_err(internal)?;
    // What anyone needs to re-run a unit: the arguments and the signature.
    if let Some(info) = info {
        v["args"] = json!(info.args);
        v["signature"] = serde_json::to_value(&info.signature).map_err(internal)?;
        v["validator"] = serde_json::to_value(&info.validator).map_err(internal)?;
    }
    Ok(Json(v))
}

/// Any stored blob (module, input or output) by its hash: the dataset is
/// public, and so is everything needed to re-check it.
async fn get_blob(State(api): State<Arc<Api>>, Path(hash): Path<String>) -> ApiResult<Response> {
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
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// CSV column order; JSONL rows carry the same fields by name.
pub const CSV_HEADER: &str =
    "job,unit,name,input_hash,module_hash,output_hash,hosts,engines,fuel,validated_ms,output\n";

/// Renders one dataset row. Outputs that are UTF-8 appear as text; other
/// outputs as base64 (`output_base64` in JSONL, a `base64:` prefix in CSV).
pub fn render_row(row: &DatasetRow, format: ExportFormat) -> Vec<u8> {
    let text = std::str::from_utf8(&row.output).ok();
    match format {
        ExportFormat::Jsonl => {
            let mut v = serde_json::to_value(row).unwrap_or_default();
            match text {
                Some(t) => v["output"] = json!(t),
                None => {
                    v["output_base64"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(&row.output))
                }
            }
            let mut line = v.to_string().into_bytes();
            line.push(b'\n');
            line
        }
        ExportFormat::Csv => {
            let output = match text {
                Some(t) => t.to_string(),
                None => format!(
                    "base64:{}",
                    base64::engine::general_purpose::STANDARD.encode(&row.output)
                ),
            };
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::new());
            let record = [
                row.job.to_string(),
                row.unit.to_string(),
                row.name.clone(),
                row.input_hash.to_hex(),
                row.module_hash.to_hex(),
                row.output_hash.to_hex(),
                row.hosts.join(";"),
                row.engines.join(";"),
                row.fuel.to_string(),
                row.validated_ms.to_string(),
                output,
            ];
            let _ = w.write_record(&record);
            w.into_inner().unwrap_or_default()
        }
    }
}

/// Streams a job's dataset page by page; the whole dataset is never in
/// memory.
async fn export_results(
    State(api): State<Arc<Api>>,
    Path(id): Path<JobId>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let format = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => ExportFormat::Jsonl,
        "csv" => ExportFormat::Csv,
        other => {
            return Err(bad_request(format!(
                "unknown format `{other}`; use jsonl or csv"
            )));
        }
    };
    let store = api.grid.store.clone();
    let exists = blocking(move || store.job_info(id)).await?.is_some();
    if !exists {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}")));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    let store: Arc<dyn Store> = api.grid.store.clone();
    tokio::task::spawn_blocking(move || {
        if format == ExportFormat::Csv && tx.blocking_send(Ok(Bytes::from(CSV_HEADER))).is_err() {
            return;
        }
        let mut after = 0;
        loop {
            let page = match store.dataset_page(id, after, 500) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(job = id, "dataset export failed: {e}");
                    return;
                }
            };
            let Some(last) = page.last() else { return };
            after = last.unit;
            let mut chunk = Vec::new();
            for row in &page {
                chunk.extend(render_row(row, format));
            }
            if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return;
            }
        }
    });
    let content_type = match format {
        ExportFormat::Jsonl => "application/x-ndjson",
        ExportFormat::Csv => "text/csv; charset=utf-8",
    };
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}
