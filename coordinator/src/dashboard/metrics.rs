//! `GET /metrics` (Prometheus text format, from `crate::metrics`) and the
//! log of refused researcher requests, a middleware on the researcher's
//! routes (`http.rs`).

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::{Api, ApiResult, blocking};
use crate::metrics::{refused, render, stored};

/// `GET /metrics`.
pub async fn serve(State(api): State<Arc<Api>>) -> ApiResult<Response> {
    let store = api.grid.store.clone();
    let now = peergrid_os::now_ms();
    let s = blocking(move || stored(store.as_ref(), now)).await?;
    let (queued, window) = api.grid.queue_sizes();
    let mut response = render(&s, queued, window).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// Most bytes of a refusal's body read for its log line.
const REFUSAL_BODY: usize = 4096;

/// Logs and counts the researcher routes' refusals (401 wrong or missing
/// token, 403 a signature the project does not endorse, 422 a module the
/// sandbox cannot run, other 4xx), with the error the client was given.
pub async fn log_refusals(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() {
        return response;
    }
    refused(status.as_u16());
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, REFUSAL_BODY).await.unwrap_or_default();
    let error = serde_json::from_slice::<peergrid_proto::api::ErrorBody>(&bytes)
        .map(|e| e.error)
        .unwrap_or_default();
    tracing::warn!(
        status = status.as_u16(),
        %method,
        path,
        error,
        "researcher request refused"
    );
    Response::from_parts(parts, Body::from(bytes))
}
