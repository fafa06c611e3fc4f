//! Streamed downloads: a job's dataset exports (JSONL, CSV, CSV with JSON
//! outputs as columns, Parquet) and the gzipped
//! stats dumps for third-party stats sites (like BOINC's `db_dump`).
//!
//! The exports with JSON columns read the dataset twice: a first pass
//! finds the columns ([`super::columns`]), the second writes the rows.
//!
//! Each runs on a blocking thread that reads the store page by page and
//! writes rows one at a time into a [`ChunkSender`], which hands 64 KiB
//! chunks to the response body through a small channel. A page holds at
//! most [`PAGE_ROWS`] rows and, past its first row, at most [`PAGE_BYTES`]
//! of outputs, and a row is rendered straight into the chunks: memory stays
//! bounded by one page whatever the sizes of the dataset and its outputs,
//! and a client that hangs up stops the work at the next chunk.
//!
//! [`Exports`] bounds how many downloads run at once (more get `503` with
//! `Retry-After`); [`super::manifest`] writes a job's checksums.

use std::borrow::Cow;
use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::GzEncoder;
use peergrid_proto::wire::JobId;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::columns::{ColumnScan, Columns, csv_cell, object};
use super::parquet::ParquetSink;
use crate::api::{Api, ApiResult};
pub use crate::api::{ExportDigest, ExportDigests, Exports, MAX_CONCURRENT, RETRY_AFTER_SECS};
use crate::store::{DatasetRow, JobStatus, ReadStore};
use peergrid_os::now_ms;

/// Most dataset rows read per store call.
pub const PAGE_ROWS: usize = 500;
/// Most output bytes read per store call, past a page's first row (which
/// is read whatever its size, up to `MAX_OUTPUT`).
pub const PAGE_BYTES: u64 = 8 * 1024 * 1024;
/// Bytes gathered before a chunk goes to the client.
const CHUNK: usize = 64 * 1024;
/// How one dataset row is written by [`write_row`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// A whole export, as `GET /api/v1/jobs/{id}/results` offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    Jsonl,
    Csv,
    /// CSV with one more column per top-level key of JSON-object outputs
    /// (`format=csv&columns=json`).
    CsvColumns,
    Parquet,
}

impl ExportKind {
    pub const ALL: [ExportKind; 4] = [
        ExportKind::Csv,
        ExportKind::Jsonl,
        ExportKind::CsvColumns,
        ExportKind::Parquet,
    ];

    /// From the route's `format` and `columns` parameters.
    pub fn parse(format: Option<&str>, columns: Option<&str>) -> Result<ExportKind, String> {
        let kind = match format.unwrap_or("jsonl") {
            "jsonl" => ExportKind::Jsonl,
            "csv" => ExportKind::Csv,
            "parquet" => ExportKind::Parquet,
            other => {
                return Err(format!(
                    "unknown format `{other}`; use jsonl, csv or parquet"
                ));
            }
        };
        match (kind, columns) {
            (_, None) => Ok(kind),
            (ExportKind::Csv, Some("json")) => Ok(ExportKind::CsvColumns),
            // Parquet always has them, and JSONL keeps each output whole:
            // asking is not an error (the OpenAPI document cannot tie one
            // parameter to another's value, so clients may well ask).
            (ExportKind::Parquet | ExportKind::Jsonl, Some("json")) => Ok(kind),
            (_, Some(other)) => Err(format!(
                "unknown columns `{other}`; the only value is `json`"
            )),
        }
    }

    /// Its name in the checksum manifest's `exports`.
    pub fn key(self) -> &'static str {
        match self {
            ExportKind::Jsonl => "jsonl",
            ExportKind::Csv => "csv",
            ExportKind::CsvColumns => "csv_columns",
            ExportKind::Parquet => "parquet",
        }
    }

    /// The query that asks for it.
    pub fn query(self) -> &'static str {
        match self {
            ExportKind::Jsonl => "format=jsonl",
            ExportKind::Csv => "format=csv",
            ExportKind::CsvColumns => "format=csv&columns=json",
            ExportKind::Parquet => "format=parquet",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportKind::Jsonl => "application/x-ndjson",
            ExportKind::Csv | ExportKind::CsvColumns => "text/csv; charset=utf-8",
            ExportKind::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// CSV column order; JSONL rows carry the same fields by name.
pub const CSV_HEADER: &str =
    "job,unit,name,input_hash,module_hash,output_hash,hosts,engines,fuel,validated_ms,output\n";

/// One JSONL line. Fields in alphabetical order, as the export has always
/// written them; the output is borrowed, never copied.
#[derive(Serialize)]
struct JsonRow<'a> {
    engines: &'a [String],
    fuel: u64,
    hosts: &'a [String],
    input_hash: peergrid_proto::Hash,
    job: JobId,
    module_hash: peergrid_proto::Hash,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_base64: Option<Base64<'a>>,
    output_hash: peergrid_proto::Hash,
    unit: u64,
    validated_ms: u64,
}

/// Bytes serialized as standard base64, encoded as they are written.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

/// A CSV cell that a spreadsheet would run as a formula (it starts with
/// `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`
/// (OWASP's rule for CSV injection).
pub fn neutralise(cell: &[u8]) -> Cow<'_, [u8]> {
    match cell.first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => {
            let mut v = Vec::with_capacity(cell.len() + 1);
            v.push(b'\'');
            v.extend_from_slice(cell);
            Cow::Owned(v)
        }
        _ => Cow::Borrowed(cell),
    }
}

/// Writes one dataset row. Outputs that are UTF-8 appear as text (in CSV
/// without their trailing line breaks); other outputs as base64
/// (`output_base64` in JSONL, a `base64:` prefix in CSV).
pub fn write_row(
    row: &DatasetRow,
    format: ExportFormat,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let text = std::str::from_utf8(&row.output).ok();
    match format {
        ExportFormat::Jsonl => {
            let line = JsonRow {
                engines: &row.engines,
                fuel: row.fuel,
                hosts: &row.hosts,
                input_hash: row.input_hash,
                job: row.job,
                module_hash: row.module_hash,
                name: &row.name,
                output: text,
                output_base64: text.is_none().then_some(Base64(&row.output)),
                output_hash: row.output_hash,
                unit: row.unit,
                validated_ms: row.validated_ms,
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")
        }
        ExportFormat::Csv => write_csv(row, &[], out),
    }
}

/// Writes one CSV record: the row's fields, then `extra` cells.
fn write_csv(
    row: &DatasetRow,
    extra: &[Cow<'_, [u8]>],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let text = std::str::from_utf8(&row.output).ok();
    let output: Cow<'_, [u8]> = match text {
        // One row, one record: a program's closing line break is
        // not part of its answer (JSONL and the blob keep it).
        Some(text) => Cow::Borrowed(text.trim_end_matches(['\n', '\r']).as_bytes()),
        None => Cow::Owned(
            format!("base64:{}", Base64Display::new(&row.output, &STANDARD)).into_bytes(),
        ),
    };
    let hosts = row.hosts.join(";");
    let engines = row.engines.join(";");
    let numbers = [
        row.job.to_string(),
        row.unit.to_string(),
        row.fuel.to_string(),
        row.validated_ms.to_string(),
    ];
    let (input, module, output_hash) = (
        row.input_hash.to_hex(),
        row.module_hash.to_hex(),
        row.output_hash.to_hex(),
    );
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(&mut *out);
    let (name, hosts, engines, output) = (
        neutralise(row.name.as_bytes()),
        neutralise(hosts.as_bytes()),
        neutralise(engines.as_bytes()),
        neutralise(&output),
    );
    let fields: [&[u8]; 11] = [
        numbers[0].as_bytes(),
        numbers[1].as_bytes(),
        &name,
        input.as_bytes(),
        module.as_bytes(),
        output_hash.as_bytes(),
        &hosts,
        &engines,
        numbers[2].as_bytes(),
        numbers[3].as_bytes(),
        &output,
    ];
    w.write_record(fields.into_iter().chain(extra.iter().map(|c| c.as_ref())))
        .map_err(std::io::Error::other)?;
    w.flush()
}

/// One row rendered in memory (tests and small callers).
pub fn render_row(row: &DatasetRow, format: ExportFormat) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = write_row(row, format, &mut v);
    v
}

/// Calls `each` on every row of a job's dataset, in unit order, reading
/// the store in pages bounded by [`PAGE_ROWS`] and [`PAGE_BYTES`].
pub(super) fn for_each_row(
    store: &dyn ReadStore,
    job: JobId,
    mut each: impl FnMut(&DatasetRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let page = store.dataset_page_within(job, after, PAGE_ROWS, PAGE_BYTES)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.unit;
        for row in &page {
            each(row)?;
        }
    }
}

/// The JSON columns of a job's dataset: the first pass.
pub fn scan_columns(store: &dyn ReadStore, job: JobId) -> anyhow::Result<Columns> {
    let mut scan = ColumnScan::default();
    for_each_row(store, job, |row| {
        scan.add(&row.output);
        Ok(())
    })?;
    Ok(scan.finish())
}

/// The CSV header with the JSON columns after the fixed ones.
pub fn write_csv_columns_header(columns: &Columns, out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(CSV_HEADER.trim_end().as_bytes())?;
    if columns.columns.is_empty() {
        return out.write_all(b"\n");
    }
    out.write_all(b",")?;
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(&mut *out);
    w.write_record(
        columns
            .columns
            .iter()
            .map(|c| neutralise(c.name.as_bytes())),
    )
    .map_err(std::io::Error::other)?;
    w.flush()
}

/// One CSV row with its JSON columns.
pub fn write_csv_columns_row(
    row: &DatasetRow,
    columns: &Columns,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let obj = match columns.columns.is_empty() {
        true => None,
        false => object(&row.output),
    };
    let cells: Vec<Cow<'_, str>> = columns
        .columns
        .iter()
        .map(|c| csv_cell(obj.as_ref().and_then(|o| o.get(&c.key))))
        .collect();
    let extra: Vec<Cow<'_, [u8]>> = cells.iter().map(|c| neutralise(c.as_bytes())).collect();
    write_csv(row, &extra, out)
}

/// The key-value metadata of a job's Parquet file: the job, and its
/// licence, citation and `CITATION.cff` when it names them.
pub fn parquet_metadata(status: &JobStatus) -> Vec<(String, String)> {
    let mut m = vec![
        ("peergrid.job".to_string(), status.id.to_string()),
        ("peergrid.job_name".to_string(), status.name.clone()),
        ("peergrid.researcher".to_string(), status.researcher.clone()),
        (
            "peergrid.citation_cff_path".to_string(),
            format!("/api/v1/jobs/{}/CITATION.cff", status.id),
        ),
    ];
    if let Some(l) = &status.terms.license {
        m.push(("peergrid.license".to_string(), l.clone()));
    }
    if let Some(c) = &status.terms.citation {
        m.push((
            "peergrid.citation".to_string(),
            serde_json::to_string(c).unwrap_or_default(),
        ));
    }
    m.push((
        "peergrid.citation_cff".to_string(),
        super::citation::render(status),
    ));
    m
}

/// Writes a job's whole export of `kind` (see [`ExportKind`]).
pub fn write_download(
    store: &dyn ReadStore,
    status: &JobStatus,
    kind: ExportKind,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let job = status.id;
    match kind {
        ExportKind::Jsonl => write_export(store, job, ExportFormat::Jsonl, out),
        ExportKind::Csv => write_export(store, job, ExportFormat::Csv, out),
        ExportKind::CsvColumns => {
            let columns = scan_columns(store, job)?;
            write_csv_columns_header(&columns, out)?;
            for_each_row(store, job, |row| {
                Ok(write_csv_columns_row(row, &columns, out)?)
            })
        }
        ExportKind::Parquet => {
            let columns = scan_columns(store, job)?;
            let mut sink = ParquetSink::new(out, columns, parquet_metadata(status))?;
            for_each_row(store, job, |row| sink.push(row))?;
            sink.finish()
        }
    }
}

/// Writes a job's whole export: the CSV header (for CSV), then its rows.
pub fn write_export(
    store: &dyn ReadStore,
    job: JobId,
    format: ExportFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if format == ExportFormat::Csv {
        out.write_all(CSV_HEADER.as_bytes())?;
    }
    for_each_row(store, job, |row| Ok(write_row(row, format, out)?))
}

/// An `io::Write` that sends what it is given to the response body in
/// chunks; fails once the client is gone.
pub struct ChunkSender {
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
        // Never more than a chunk at a time: a large write (a 4 MiB
        // output) goes out in pieces instead of growing the buffer.
        let room = CHUNK.saturating_sub(self.buf.len()).max(1);
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Runs `produce` on a blocking thread, streaming what it writes; the
/// download slot `permit` is held until it is done.
pub fn stream(
    content_type: &'static str,
    filename: Option<&'static str>,
    permit: OwnedSemaphorePermit,
    produce: impl FnOnce(&mut ChunkSender) -> anyhow::Result<()> + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
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

/// Writes one JSON line per host, by id, read a page at a time: its facts
/// and its credit.
pub fn write_hosts(store: &dyn ReadStore, now: u64, out: &mut impl Write) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let page = store.hosts_after(after, 1000)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.id;
        for h in page {
            let c = h.credit.at(now);
            let line = json!({
                "id": h.id, "public_key": h.public_key, "name": h.name, "cpu_model": h.cpu_model,
                "slots": h.slots, "team": h.team, "cores": h.cores,
                "memory_bytes": h.memory_bytes, "os": h.os, "arch": h.arch, "version": h.version,
                "first_seen_ms": h.first_seen_ms, "last_seen_ms": h.last_seen_ms,
                "credit_total": c.total, "credit_recent_per_day": c.recent,
            });
            writeln!(out, "{line}")?;
        }
    }
}

/// Writes one JSON line per validated unit: the fuel it granted to each
/// agreeing host, and when. Stats sites can sum it their own way.
pub fn write_credit(store: &dyn ReadStore, out: &mut impl Write) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let page = store.credit_page(None, after, 5000)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.unit;
        for g in page {
            let line = json!({
                "job": g.job, "unit": g.number, "fuel": g.fuel,
                "validated_ms": g.validated_ms, "hosts": g.hosts,
            });
            writeln!(out, "{line}")?;
        }
    }
}

fn gzipped(
    api: &Api,
    filename: &'static str,
    write: impl FnOnce(&dyn ReadStore, &mut GzEncoder<&mut ChunkSender>) -> anyhow::Result<()>
    + Send
    + 'static,
) -> ApiResult<Response> {
    let permit = api.exports.permit()?;
    let store = api.grid.store.clone();
    Ok(stream(
        "application/gzip",
        Some(filename),
        permit,
        move |out| {
            let mut gz = GzEncoder::new(out, Compression::default());
            write(store.as_ref(), &mut gz)?;
            gz.finish()?;
            Ok(())
        },
    ))
}

pub async fn hosts_gz(State(api): State<Arc<Api>>) -> ApiResult<Response> {
    gzipped(&api, "hosts.jsonl.gz", |s, out| {
        write_hosts(s, now_ms(), out)
    })
}

pub async fn volunteers_gz(State(api): State<Arc<Api>>) -> ApiResult<Response> {
    gzipped(&api, "volunteers.jsonl.gz", |s, out| {
        for v in super::volunteers(s, now_ms())? {
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
        }
        Ok(())
    })
}

pub async fn credit_gz(State(api): State<Arc<Api>>) -> ApiResult<Response> {
    gzipped(&api, "credit.jsonl.gz", |s, out| write_credit(s, out))
}
