//! `GET /metrics` (Prometheus text format, from `crate::metrics`) and the
//! log of refused researcher requests, a middleware on the researcher's
//! routes (`http.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::{Api, ApiResult, blocking};
use crate::metrics::{Stored, refused, render, stored};

/// How long the store's counts are reused: the route is public, and they
/// count every unit by state.
const STORED_FOR: Duration = Duration::from_secs(5);

/// The store's counts last read, and when.
static LAST: Mutex<Option<(Instant, Stored)>> = Mutex::new(None);

/// `GET /metrics`.
pub async fn serve(State(api): State<Arc<Api>>) -> ApiResult<Response> {
    let cached = peergrid_os::lock(&LAST)
        .as_ref()
        .filter(|(at, _)| at.elapsed() < STORED_FOR)
        .map(|(_, s)| s.clone());
    let s = match cached {
        Some(s) => s,
        None => {
            let store = api.grid.store.clone();
            let now = peergrid_os::now_ms();
            let s = blocking(move || stored(store.as_ref(), now)).await?;
            *peergrid_os::lock(&LAST) = Some((Instant::now(), s.clone()));
            s
        }
    };
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
    // A wrong or missing token is anyone's to send: not worth a warning
    // each. Refusals of a token holder's request are.
    if status == axum::http::StatusCode::UNAUTHORIZED {
        tracing::debug!(%method, path, error, "researcher request refused");
    } else {
        tracing::warn!(
            status = status.as_u16(),
            %method,
            path,
            error,
            "researcher request refused"
        );
    }
    Response::from_parts(parts, Body::from(bytes))
}
