//! Streamed downloads: a job's checksum manifest and the gzipped stats
//! dumps for third-party stats sites (like BOINC's `db_dump`).
//!
//! Each runs on a blocking thread that reads the store page by page and
//! sends chunks through a small channel to the response body: memory stays
//! bounded by one page whatever the dataset's size, and a client that
//! hangs up stops the work at the next chunk.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flate2::Compression;
use flate2::write::GzEncoder;
use peergrid_proto::wire::JobId;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::grid::now_ms;
use crate::http::{Api, ApiError, ApiResult, CSV_HEADER, ExportFormat, blocking, render_row};
use crate::store::Store;

/// Dataset rows read per store call (the same page as the exports).
const PAGE: usize = 500;
/// Bytes gathered before a chunk goes to the client.
const CHUNK: usize = 64 * 1024;

/// An `io::Write` that sends what it is given to the response body in
/// chunks; fails once the client is gone.
struct ChunkSender {
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn new(tx: mpsc::Sender<Result<Bytes, Infallible>>) -> ChunkSender {
        ChunkSender {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Runs `produce` on a blocking thread, streaming what it writes.
fn stream(
    content_type: &'static str,
    filename: Option<&'static str>,
    produce: impl FnOnce(&mut ChunkSender) -> anyhow::Result<()> + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkSender::new(tx);
        if let Err(e) = produce(&mut out).and_then(|()| Ok(out.flush()?)) {
            // The status line is gone; a truncated body is all we can do.
            tracing::warn!("streamed download stopped: {e:#}");
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx));
    match filename {
        Some(f) => (
            [
                (header::CONTENT_TYPE, content_type.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{f}\""),
                ),
            ],
            body,
        )
            .into_response(),
        None => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
    }
}

/// Writes a job's manifest: the BLAKE3 of every output by unit, then the
/// BLAKE3 and length of the whole CSV and JSONL exports (exactly the bytes
/// `GET /api/v1/jobs/{id}/results` sends), computed in one pass.
pub fn write_manifest(store: &dyn Store, job: JobId, out: &mut impl Write) -> anyhow::Result<()> {
    let mut csv = blake3::Hasher::new();
    let mut jsonl = blake3::Hasher::new();
    let (mut csv_len, mut jsonl_len) = (CSV_HEADER.len() as u64, 0u64);
    csv.update(CSV_HEADER.as_bytes());
    write!(
        out,
        "{{\"job\":{job},\"algorithm\":\"blake3\",\"outputs\":["
    )?;
    let (mut after, mut rows) = (0, 0u64);
    loop {
        let page = store.dataset_page(job, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.unit;
        for row in &page {
            let c = render_row(row, ExportFormat::Csv);
            let j = render_row(row, ExportFormat::Jsonl);
            csv.update(&c);
            jsonl.update(&j);
            csv_len += c.len() as u64;
            jsonl_len += j.len() as u64;
            if rows > 0 {
                out.write_all(b",")?;
            }
            rows += 1;
            let entry = json!({ "unit": row.unit, "name": row.name, "output": row.output_hash });
            write!(out, "\n{entry}")?;
        }
    }
    let exports = json!({
        "csv": { "path": format!("/api/v1/jobs/{job}/results?format=csv"),
                 "blake3": csv.finalize().to_hex().as_str(), "bytes": csv_len },
        "jsonl": { "path": format!("/api/v1/jobs/{job}/results?format=jsonl"),
                   "blake3": jsonl.finalize().to_hex().as_str(), "bytes": jsonl_len },
    });
    writeln!(out, "\n],\"rows\":{rows},\"exports\":{exports}}}")?;
    Ok(())
}

pub async fn manifest(State(api): State<Arc<Api>>, Path(id): Path<JobId>) -> ApiResult<Response> {
    let store = api.grid.store.clone();
    if blocking(move || store.job_info(id)).await?.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}")));
    }
    let store = api.grid.store.clone();
    Ok(stream("application/json", None, move |out| {
        write_manifest(store.as_ref(), id, out)
    }))
}

/// Writes one JSON line per host: its facts and its credit.
pub fn write_hosts(store: &dyn Store, now: u64, out: &mut impl Write) -> anyhow::Result<()> {
    for h in store.hosts()? {
        let c = h.credit.at(now);
        let line = json!({
            "id": h.id, "public_key": h.public_key, "cores": h.cores,
            "memory_bytes": h.memory_bytes, "os": h.os, "arch": h.arch, "version": h.version,
            "first_seen_ms": h.first_seen_ms, "last_seen_ms": h.last_seen_ms,
            "credit_total": c.total, "credit_recent_per_day": c.recent,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Writes one JSON line per validated unit: the fuel it granted to each
/// agreeing host, and when. Stats sites can sum it their own way.
pub fn write_credit(store: &dyn Store, out: &mut impl Write) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let page = store.credit_page(None, after, 5000)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.unit;
        for g in page {
            let line = json!({
                "job": g.job, "unit": g.unit, "fuel": g.fuel,
                "validated_ms": g.validated_ms, "hosts": g.hosts,
            });
            writeln!(out, "{line}")?;
        }
    }
}

fn gzipped(
    store: Arc<dyn Store>,
    filename: &'static str,
    write: impl FnOnce(&dyn Store, &mut GzEncoder<&mut ChunkSender>) -> anyhow::Result<()>
    + Send
    + 'static,
) -> Response {
    stream("application/gzip", Some(filename), move |out| {
        let mut gz = GzEncoder::new(out, Compression::default());
        write(store.as_ref(), &mut gz)?;
        gz.finish()?;
        Ok(())
    })
}

pub async fn hosts_gz(State(api): State<Arc<Api>>) -> Response {
    gzipped(api.grid.store.clone(), "hosts.jsonl.gz", |s, out| {
        write_hosts(s, now_ms(), out)
    })
}

pub async fn volunteers_gz(State(api): State<Arc<Api>>) -> Response {
    gzipped(api.grid.store.clone(), "volunteers.jsonl.gz", |s, out| {
        for v in super::volunteers(s, now_ms())? {
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
        }
        Ok(())
    })
}

pub async fn credit_gz(State(api): State<Arc<Api>>) -> Response {
    gzipped(api.grid.store.clone(), "credit.jsonl.gz", |s, out| {
        write_credit(s, out)
    })
}
