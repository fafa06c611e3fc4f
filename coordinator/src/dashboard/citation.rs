//! A job's dataset terms over HTTP: `GET /api/v1/jobs/{id}/CITATION.cff`
//! (Citation File Format 1.2.0, rendered by `proto::citation`) and the
//! headers every export carries: a `Link` to that file
//! (`rel="describedby"`), a `Link` to the DOI (`rel="cite-as"`, RFC 8574)
//! and to each licence's text on spdx.org (`rel="license"`), and
//! `Peergrid-License` with the SPDX expression.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use peergrid_proto::citation::{COMMON_LICENSES, CitedJob, citation_cff};

use crate::api::{Api, ApiError, ApiResult, JobIdPath, blocking};
use crate::store::JobStatus;

/// The header naming the dataset's licence (an SPDX expression).
pub const LICENSE_HEADER: &str = "peergrid-license";

/// The job's `CITATION.cff`.
pub fn render(status: &JobStatus) -> String {
    let job = CitedJob {
        id: status.id,
        name: &status.name,
        researcher: &status.researcher,
    };
    citation_cff(&job, &status.terms)
}

pub async fn serve(State(api): State<Arc<Api>>, JobIdPath(id): JobIdPath) -> ApiResult<Response> {
    let store = api.grid.store.clone();
    let Some(status) = blocking(move || store.job_status(id)).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}")));
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/yaml; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"CITATION.cff\"",
            ),
        ],
        render(&status),
    )
        .into_response())
}

/// `text` as a header value, if it is visible ASCII (anything else, a
/// DOI with other characters say, is left out rather than mangled).
fn value(text: &str) -> Option<HeaderValue> {
    if !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return None;
    }
    HeaderValue::from_str(text).ok()
}

/// The terms' headers for an export of the job.
pub fn export_headers(status: &JobStatus) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut link = |text: String| {
        if let Some(v) = value(&text) {
            h.append(header::LINK, v);
        }
    };
    link(format!(
        "</api/v1/jobs/{}/CITATION.cff>; rel=\"describedby\"; type=\"application/yaml\"",
        status.id
    ));
    let citation = status.terms.citation.as_ref();
    if let Some(doi) = citation.and_then(|c| c.doi.as_deref())
        && !doi.contains(['<', '>', '"', ' '])
    {
        link(format!("<https://doi.org/{doi}>; rel=\"cite-as\""));
    }
    if let Some(l) = &status.terms.license {
        for id in l
            .split([' ', '(', ')'])
            .filter(|w| COMMON_LICENSES.contains(w))
        {
            link(format!(
                "<https://spdx.org/licenses/{id}.html>; rel=\"license\""
            ));
        }
        if let Some(v) = value(l) {
            h.insert(HeaderName::from_static(LICENSE_HEADER), v);
        }
    }
    h
}
