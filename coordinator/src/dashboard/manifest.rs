//! A job's checksum manifest: the BLAKE3 of every output by unit and of
//! every whole export (exactly the bytes the export routes send), cached
//! by [`crate::api::Exports`] until the job's dataset changes.

use std::io::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::export::{
    CSV_HEADER, ExportFormat, ExportKind, for_each_row, parquet_metadata, scan_columns, stream,
    write_csv_columns_header, write_csv_columns_row, write_row,
};
use super::parquet::ParquetSink;
use crate::api::{Api, ApiError, ApiResult, ExportDigest, ExportDigests, JobIdPath, blocking};
use crate::store::{JobStatus, ReadStore};

/// Hashes what is written to it.
struct Digesting {
    hasher: blake3::Hasher,
    bytes: u64,
}

impl Digesting {
    fn new() -> Digesting {
        Digesting {
            hasher: blake3::Hasher::new(),
            bytes: 0,
        }
    }

    fn finish(&self) -> ExportDigest {
        ExportDigest {
            blake3: self.hasher.finalize().to_hex().to_string(),
            bytes: self.bytes,
        }
    }
}

impl Write for Digesting {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// BLAKE3 and length of every export of a job (exactly the bytes
/// `GET /api/v1/jobs/{id}/results` sends): a pass to find the JSON
/// columns, then one pass over the dataset for all four.
pub fn export_digests(store: &dyn ReadStore, status: &JobStatus) -> anyhow::Result<ExportDigests> {
    let job = status.id;
    let columns = scan_columns(store, job)?;
    let (mut csv, mut jsonl) = (Digesting::new(), Digesting::new());
    let (mut csv_columns, mut parquet) = (Digesting::new(), Digesting::new());
    csv.write_all(CSV_HEADER.as_bytes())?;
    write_csv_columns_header(&columns, &mut csv_columns)?;
    let mut sink = ParquetSink::new(&mut parquet, columns.clone(), parquet_metadata(status))?;
    let mut rows = 0u64;
    for_each_row(store, job, |row| {
        write_row(row, ExportFormat::Csv, &mut csv)?;
        write_row(row, ExportFormat::Jsonl, &mut jsonl)?;
        write_csv_columns_row(row, &columns, &mut csv_columns)?;
        sink.push(row)?;
        rows += 1;
        Ok(())
    })?;
    sink.finish()?;
    Ok(ExportDigests {
        csv: csv.finish(),
        jsonl: jsonl.finish(),
        csv_columns: csv_columns.finish(),
        parquet: parquet.finish(),
        rows,
    })
}

/// Writes a job's manifest: the BLAKE3 of every output by unit (read
/// without the outputs), then `digests` of the whole exports, the
/// dataset's licence and citation and where its `CITATION.cff` is.
pub fn write_manifest(
    store: &dyn ReadStore,
    status: &JobStatus,
    digests: &ExportDigests,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let job = status.id;
    write!(
        out,
        "{{\"job\":{job},\"algorithm\":\"blake3\",\"outputs\":["
    )?;
    let (mut after, mut rows) = (0, 0u64);
    loop {
        let page = store.dataset_index(job, after, 5000)?;
        let Some(last) = page.last() else { break };
        after = last.unit;
        for row in &page {
            if rows > 0 {
                out.write_all(b",")?;
            }
            rows += 1;
            let entry = json!({ "unit": row.unit, "name": row.name, "output": row.output_hash });
            write!(out, "\n{entry}")?;
        }
    }
    let mut exports = serde_json::Map::new();
    for kind in ExportKind::ALL {
        let d = match kind {
            ExportKind::Csv => &digests.csv,
            ExportKind::Jsonl => &digests.jsonl,
            ExportKind::CsvColumns => &digests.csv_columns,
            ExportKind::Parquet => &digests.parquet,
        };
        exports.insert(
            kind.key().to_string(),
            json!({ "path": format!("/api/v1/jobs/{job}/results?{}", kind.query()),
                    "blake3": d.blake3, "bytes": d.bytes }),
        );
    }
    let tail = json!({
        "rows": rows,
        "exports": exports,
        "license": status.terms.license,
        "citation": status.terms.citation,
        "citation_cff": format!("/api/v1/jobs/{job}/CITATION.cff"),
    })
    .to_string();
    // The outputs' array is already open: the rest of the object follows.
    let tail = tail.strip_prefix('{').unwrap_or(&tail);
    writeln!(out, "\n],{tail}")?;
    Ok(())
}

pub async fn manifest(
    State(api): State<Arc<Api>>,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Response> {
    let store = api.grid.store.clone();
    let Some(status) = blocking(move || store.job_status(id)).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}")));
    };
    let permit = api.exports.permit()?;
    let store = api.grid.store.clone();
    // Read before the checksums: rows added meanwhile move the stamp, so
    // the next request computes them again.
    let stamp = blocking({
        let store = store.clone();
        move || store.dataset_stamp(id)
    })
    .await?;
    Ok(stream("application/json", None, permit, move |out| {
        let digests = api
            .exports
            .digests(id, stamp, || export_digests(store.as_ref(), &status))?;
        write_manifest(store.as_ref(), &status, &digests, out)
    }))
}
