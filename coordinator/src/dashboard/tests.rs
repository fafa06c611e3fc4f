//! Every public route answers over a real router, grid and temporary
//! SQLite store: for an empty store and for one with a job whose name
//! tries to inject markup.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use peergrid_proto::Hash;
use peergrid_proto::signing::{Endorsement, ModuleSignature};
use peergrid_proto::spec::{JobSettings, JobSubmission, UnitSpec};
use peergrid_proto::wire::HostFacts;
use tower::ServiceExt;

use crate::grid::Grid;
use crate::http::{Api, router};
use crate::quorum::CopyState;
use crate::store::{ReadStore, SqliteStore, StderrTail, Store, StoreOp};
use crate::writer::Writer;
use peergrid_os::now_ms;

pub(super) const EVIL: &str = "<script>alert('x')</script> & co";

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) app: axum::Router,
    pub(crate) api: Arc<Api>,
    pub(crate) store: Arc<SqliteStore>,
}

pub(crate) fn fixture() -> Fixture {
    fixture_with(|_| {})
}

/// A fixture whose [`Api`] `tune` adjusts before it serves.
pub(crate) fn fixture_with(tune: impl FnOnce(&mut Api)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap());
    let (writer, _thread) = Writer::spawn(store.clone());
    let grid = Grid::new(store.clone(), writer);
    let mut api = Api::new(
        grid,
        blake3::hash(b"token"),
        "peergrid://127.0.0.1:1#sha256:00&project=00".into(),
        [0; 32],
    );
    tune(&mut api);
    let api = Arc::new(api);
    Fixture {
        _dir: dir,
        app: router(api.clone()),
        api,
        store,
    }
}

/// One job of two units; unit 1 validated by hosts 1 and 2 a minute ago.
pub(super) fn add_job(store: &SqliteStore) -> (u64, String) {
    let input = b"input".to_vec();
    let ih = Hash::of(&input);
    store.put_blob(&ih, &input).unwrap();
    store.put_blob(&Hash([9; 32]), b"module").unwrap();
    let now = now_ms();
    let job = store
        .create_job(
            &JobSubmission {
                plots: Vec::new(),
                name: EVIL.into(),
                module: Hash([9; 32]),
                args: vec![],
                settings: JobSettings::default(),
                validator: Default::default(),
                terms: Default::default(),
                signature: ModuleSignature {
                    endorsement: Endorsement {
                        researcher_key: "00".repeat(32),
                        name: "Ada <b>".into(),
                        project_signature: "00".repeat(64),
                    },
                    signature: "00".repeat(64),
                },
                units: vec![
                    UnitSpec {
                        name: "<i>first</i>".into(),
                        input: ih,
                    },
                    UnitSpec {
                        name: "second".into(),
                        input: ih,
                    },
                ],
            },
            now - 600_000,
        )
        .unwrap();
    let hosts: Vec<u64> = (1..=2u8)
        .map(|k| {
            store
                .upsert_host(&[k; 32], &HostFacts::default(), "0.1", now - 30_000)
                .unwrap()
        })
        .collect();
    let out = b"the answer".to_vec();
    let oh = Hash::of(&out);
    let mut ops = Vec::new();
    for &h in &hosts {
        ops.push(StoreOp::Assign {
            unit: 1,
            host: h,
            sent_ms: now - 120_000,
            deadline_ms: now + 1_000_000,
            single: false,
        });
        ops.push(StoreOp::Report {
            unit: 1,
            host: h,
            state: CopyState::Success {
                output: oh,
                fuel: 2_000_000_000,
                engine: "e".into(),
                resumed: false,
            },
            elapsed_ms: 5,
            received_ms: now - 60_000,
        });
    }
    ops.push(StoreOp::Validate {
        pending_credit: false,
        unit: 1,
        output: oh,
        fuel: 2_000_000_000,
        hosts: hosts.clone(),
        at_ms: now - 60_000,
    });
    for &h in &hosts {
        // What the scheduler records of each agreeing host.
        ops.push(StoreOp::Standing {
            host: h,
            consecutive_valid: 1,
            quota: 500,
        });
    }
    store.apply(&ops, &[(oh, out)]).unwrap();
    (job, hex::encode([1u8; 32]))
}

pub(super) async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, ct, body.to_vec())
}

pub(super) async fn html(app: &axum::Router, uri: &str) -> String {
    let (status, ct, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}");
    assert!(ct.starts_with("text/html"), "{uri}: {ct}");
    let body = String::from_utf8(body).unwrap();
    assert!(body.starts_with("<!DOCTYPE html>"), "{uri}");
    body
}

pub(super) async fn json(app: &axum::Router, uri: &str) -> serde_json::Value {
    let (status, ct, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}");
    assert!(ct.starts_with("application/json"), "{uri}: {ct}");
    serde_json::from_slice(&body).unwrap()
}

fn gunzip(bytes: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[tokio::test]
async fn every_page_renders_for_an_empty_store() {
    let f = fixture();
    let home = html(&f.app, "/").await;
    assert!(home.contains(r#"id="workers-online">0<"#));
    assert!(home.contains("<svg"), "charts are inline SVG");
    assert!(html(&f.app, "/hosts").await.contains(r#"id="no-hosts""#));
    let ds = html(&f.app, "/dataset").await;
    assert!(ds.contains(r#"id="dataset-total-rows">0<"#));
    html(&f.app, "/dataset?job=&page=").await;
    assert_eq!(get(&f.app, "/jobs/1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&f.app, "/hosts/1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&f.app, "/dataset?page=x").await.0,
        StatusCode::BAD_REQUEST
    );
    let o = json(&f.app, "/api/v1/overview").await;
    assert_eq!(o["workers_online"], 0);
    assert_eq!(
        json(&f.app, "/api/v1/throughput").await["buckets"]
            .as_array()
            .unwrap()
            .len(),
        60
    );
    assert_eq!(json(&f.app, "/api/v1/hosts").await, serde_json::json!([]));
    assert_eq!(json(&f.app, "/api/v1/dataset").await["total_rows"], 0);
    for gz in ["/stats/hosts.gz", "/stats/credit.gz"] {
        let (status, ct, body) = get(&f.app, gz).await;
        assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/gzip"));
        assert_eq!(gunzip(&body), "");
    }
}

#[tokio::test]
async fn every_page_renders_one_job_with_escaped_names() {
    let f = fixture();
    let (job, key) = add_job(&f.store);

    let home = html(&f.app, "/").await;
    assert!(!home.contains("<script>alert"), "job names are escaped");
    assert!(home.contains("&lt;script&gt;alert"));
    assert!(home.contains(r#"id="workers-online">2<"#), "{home}");
    assert!(home.contains(r#"id="results-last-hour">2<"#));
    assert!(home.contains(&format!(r#"<tr data-job="{job}">"#)));

    let page = html(&f.app, &format!("/jobs/{job}")).await;
    assert!(page.contains(r#"id="validated-total">1<"#));
    assert!(page.contains(r#"id="units-total">2<"#));
    assert!(page.contains(r#"id="researcher">Ada &lt;b&gt;<"#));
    assert!(page.contains(&Hash([9; 32]).to_hex()));
    assert!(page.contains(r#"data-setting="quorum""#));
    assert!(page.contains(r#"id="download-manifest""#));
    assert!(!page.contains("<script>alert"));

    let board = html(&f.app, "/hosts").await;
    assert!(board.contains(&format!(r#"data-host="{key}""#)));
    assert!(
        board.contains(r#"class="num credit-total" data-fuel="2000000000""#),
        "{board}"
    );

    for id in ["1", key.as_str()] {
        let host = html(&f.app, &format!("/hosts/{id}")).await;
        assert!(host.contains(r#"id="valid-results">1<"#), "{host}");
        assert!(host.contains(r#"id="trust">1<"#));
        assert!(host.contains(r#"id="daily-quota">500<"#), "{host}");
        assert!(host.contains(r#"id="credit-total" data-fuel="2000000000""#));
    }

    let ds = html(&f.app, &format!("/dataset?job={job}&page=1")).await;
    assert!(ds.contains(r#"<tr data-unit="1""#));
    assert!(ds.contains("&lt;i&gt;first&lt;/i&gt;"));
    assert!(ds.contains("peergrid verify JOB UNIT"));

    let v = json(&f.app, &format!("/api/v1/jobs/{job}/progress")).await;
    assert_eq!(v["status"]["validated"], 1);
    assert_eq!(v["validated_last_hour"], 1);
    let hosts = json(&f.app, "/api/v1/hosts").await;
    assert_eq!(hosts[0]["credit"]["total"], 2_000_000_000u64);
    let h = json(&f.app, "/api/v1/hosts/2").await;
    assert_eq!(h["record"]["valid"], 1);
    assert_eq!(h["public_key"], hex::encode([2u8; 32]));
    let d = json(&f.app, &format!("/api/v1/dataset?job={job}")).await;
    assert_eq!(d["rows"][0]["unit"], 1);

    // The manifest's export checksums are those of the real exports.
    let m = json(&f.app, &format!("/api/v1/jobs/{job}/manifest")).await;
    assert_eq!(m["rows"], 1);
    assert_eq!(m["outputs"][0]["output"], Hash::of(b"the answer").to_hex());
    for format in ["csv", "jsonl"] {
        let (_, _, body) = get(
            &f.app,
            &format!("/api/v1/jobs/{job}/results?format={format}"),
        )
        .await;
        assert_eq!(
            m["exports"][format]["blake3"],
            blake3::hash(&body).to_hex().as_str()
        );
        assert_eq!(m["exports"][format]["bytes"], body.len());
    }
    assert_eq!(
        get(&f.app, "/api/v1/jobs/99/manifest").await.0,
        StatusCode::NOT_FOUND
    );

    let (_, _, gz) = get(&f.app, "/stats/hosts.gz").await;
    let lines: Vec<serde_json::Value> = gunzip(&gz)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["credit_total"], 2_000_000_000u64);
    let (_, _, gz) = get(&f.app, "/stats/credit.gz").await;
    let credit: serde_json::Value = serde_json::from_str(gunzip(&gz).trim()).unwrap();
    assert_eq!(credit["unit"], 1);
    assert_eq!(credit["hosts"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn openapi_describes_every_public_route() {
    let f = fixture();
    let doc = json(&f.app, "/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/",
        "/jobs/{id}",
        "/hosts",
        "/hosts/{id}",
        "/dataset",
        "/api/v1/health",
        "/api/v1/overview",
        "/api/v1/throughput",
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/progress",
        "/api/v1/jobs/{id}/results",
        "/api/v1/jobs/{id}/dataset/{unit}",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/jobs/{id}/logs",
        "/api/v1/jobs/{id}/logs/{unit}",
        "/jobs/{id}/failed",
        "/jobs/{id}/logs/{unit}",
        "/api/v1/jobs/{id}/manifest",
        "/api/v1/jobs/{id}/CITATION.cff",
        "/api/v1/hosts",
        "/api/v1/hosts/{id}",
        "/api/v1/dataset",
        "/api/v1/blobs/missing",
        "/api/v1/blobs",
        "/api/v1/blobs/{hash}",
        "/api/v1/blob/{hash}",
        "/api/v1/volunteers",
        "/teams",
        "/teams/{team}",
        "/api/v1/teams",
        "/api/v1/teams/{team}",
        "/api/v1/hosts/{id}/tasks",
        "/volunteers",
        "/stats/volunteers.gz",
        "/api/v1/openapi.json",
        "/stats/hosts.gz",
        "/stats/credit.gz",
        "/jobs",
        "/about",
        "/api/v1/project",
        "/metrics",
        "/jobs/{id}/plots/{file}",
        "/api/v1/jobs/{id}/plots/{n}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    assert_eq!(doc["paths"].as_object().unwrap().len(), 44);
}

#[tokio::test]
async fn public_pages_do_not_accept_writes() {
    let f = fixture();
    let resp = f
        .app
        .clone()
        .oneshot(Request::post("/api/v1/jobs").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = f
        .app
        .clone()
        .oneshot(Request::post("/hosts").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// Validates unit `unit` with `output`, agreed by hosts 1 and 2.
pub(super) fn validate(store: &SqliteStore, unit: u64, output: &[u8]) {
    let oh = Hash::of(output);
    let now = now_ms();
    let mut ops = Vec::new();
    for h in [1, 2] {
        ops.push(StoreOp::Assign {
            unit,
            host: h,
            sent_ms: now - 2000,
            deadline_ms: now + 1_000_000,
            single: false,
        });
        ops.push(StoreOp::Report {
            unit,
            host: h,
            state: CopyState::Success {
                output: oh,
                fuel: 7,
                engine: "e".into(),
                resumed: false,
            },
            elapsed_ms: 5,
            received_ms: now - 1000,
        });
    }
    ops.push(StoreOp::Validate {
        pending_credit: false,
        unit,
        output: oh,
        fuel: 7,
        hosts: vec![1, 2],
        at_ms: now,
    });
    store.apply(&ops, &[(oh, output.to_vec())]).unwrap();
}

#[test]
fn csv_cells_that_start_a_formula_are_neutralised() {
    let row = crate::store::DatasetRow {
        job: 1,
        unit: 2,
        name: "=HYPERLINK(\"http://x\")".into(),
        input_hash: Hash([1; 32]),
        module_hash: Hash([2; 32]),
        output_hash: Hash([3; 32]),
        hosts: vec!["@host".into()],
        engines: vec!["\tengine".into()],
        fuel: 5,
        validated_ms: 6,
        seed_unit: 2,
        output: b"+1+cmd|' /C calc'!A0".to_vec(),
    };
    let line = crate::http::render_row(&row, crate::http::ExportFormat::Csv);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&line[..]);
    let record = reader.records().next().unwrap().unwrap();
    assert_eq!(&record[2], "'=HYPERLINK(\"http://x\")");
    assert_eq!(&record[6], "'@host");
    assert_eq!(&record[7], "'\tengine");
    assert_eq!(&record[10], "'+1+cmd|' /C calc'!A0");
    // Hashes and numbers never start with those characters; a `-` or a
    // carriage return at the start of an output is neutralised too.
    for (first, cell) in [("-", "'-2"), ("\r", "'\r2")] {
        let mut r = row.clone();
        r.output = format!("{first}2").into_bytes();
        let line = crate::http::render_row(&r, crate::http::ExportFormat::Csv);
        let record = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(&line[..])
            .records()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(&record[10], cell);
        assert_eq!(&record[0], "1");
    }
}

/// A program's closing line break does not make a CSV row two lines
/// (50 rows came out as 101 lines); inner line breaks stay, quoted.
#[test]
fn csv_outputs_lose_their_trailing_line_breaks() {
    let mut row = crate::store::DatasetRow {
        job: 1,
        unit: 2,
        name: "u".into(),
        input_hash: Hash([1; 32]),
        module_hash: Hash([2; 32]),
        output_hash: Hash([3; 32]),
        hosts: vec![],
        engines: vec![],
        fuel: 5,
        validated_ms: 6,
        seed_unit: 2,
        output: b"{\"pi\": 3.14}\n".to_vec(),
    };
    let line = crate::http::render_row(&row, crate::http::ExportFormat::Csv);
    assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "{line:?}");
    assert!(
        line.ends_with(b",\"{\"\"pi\"\": 3.14}\"\n"),
        "{}",
        String::from_utf8_lossy(&line)
    );
    row.output = b"a\r\nb\r\n\n".to_vec();
    let line = crate::http::render_row(&row, crate::http::ExportFormat::Csv);
    let record = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&line[..])
        .records()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(&record[10], "a\r\nb");
    // JSONL keeps the bytes as they are.
    let line = crate::http::render_row(&row, crate::http::ExportFormat::Jsonl);
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["output"], "a\r\nb\r\n\n");
}

#[tokio::test]
async fn hosts_are_listed_a_page_at_a_time() {
    let f = fixture();
    for k in 0..150u8 {
        f.store
            .upsert_host(&[k; 32], &HostFacts::default(), "0.1", now_ms())
            .unwrap();
    }
    let (status, _, body) = get(&f.app, "/api/v1/hosts").await;
    assert_eq!(status, StatusCode::OK);
    let first: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(first.as_array().unwrap().len(), super::HOSTS_PER_PAGE);
    let resp = f
        .app
        .clone()
        .oneshot(
            Request::get("/api/v1/hosts?page=2")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-total-count"], "150");
    assert!(
        resp.headers()[header::LINK]
            .to_str()
            .unwrap()
            .contains("page=1>; rel=\"prev\"")
    );
    let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let second: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(second.as_array().unwrap().len(), 50);
    let page = html(&f.app, "/hosts").await;
    assert_eq!(page.matches("data-host-id=").count(), super::HOSTS_PER_PAGE);
    assert!(page.contains(r#"id="page-next" href="/hosts?page=2""#));
    let page = html(&f.app, "/hosts?page=2").await;
    assert_eq!(page.matches("data-host-id=").count(), 50);
    // Ranks go on from the first page.
    assert!(page.contains(r#"<td class="num rank">101</td>"#), "{page}");
    assert_eq!(
        get(&f.app, "/hosts?page=x").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn downloads_beyond_the_limit_get_503_with_retry_after() {
    let f = fixture_with(|api| api.exports = super::export::Exports::new(1));
    let (job, _) = add_job(&f.store);
    let held = f.api.exports.permit().unwrap();
    for uri in [
        format!("/api/v1/jobs/{job}/results?format=csv"),
        format!("/api/v1/jobs/{job}/manifest"),
        "/stats/credit.gz".into(),
    ] {
        let resp = f
            .app
            .clone()
            .oneshot(Request::get(&uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "10", "{uri}");
    }
    drop(held);
    let (status, _, body) = get(&f.app, &format!("/api/v1/jobs/{job}/results?format=csv")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8(body).unwrap().lines().count(), 2);
}

#[tokio::test]
async fn the_manifest_is_computed_again_only_when_the_dataset_changes() {
    let f = fixture();
    let (job, _) = add_job(&f.store);
    let computed = || {
        f.api
            .exports
            .digests_computed
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let uri = format!("/api/v1/jobs/{job}/manifest");
    let first = json(&f.app, &uri).await;
    assert_eq!(json(&f.app, &uri).await, first);
    assert_eq!(computed(), 1);
    validate(&f.store, 2, b"second output");
    let second = json(&f.app, &uri).await;
    assert_eq!(computed(), 2);
    assert_eq!(second["rows"], 2);
    let (_, _, csv) = get(&f.app, &format!("/api/v1/jobs/{job}/results?format=csv")).await;
    assert_eq!(
        second["exports"]["csv"]["blake3"],
        blake3::hash(&csv).to_hex().as_str()
    );
    assert_ne!(
        second["exports"]["csv"]["blake3"],
        first["exports"]["csv"]["blake3"]
    );
}

#[test]
fn dataset_pages_stop_at_their_byte_budget() {
    let f = fixture();
    let (job, _) = add_job(&f.store);
    validate(&f.store, 2, &[b'x'; 3000]);
    // Unit 1's output is 10 bytes: both fit in 4000 bytes, not in 2000.
    let page = f.store.dataset_page_within(job, 0, 500, 4000).unwrap();
    assert_eq!(page.iter().map(|r| r.unit).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(page[1].output.len(), 3000);
    let page = f.store.dataset_page_within(job, 0, 500, 2000).unwrap();
    assert_eq!(page.iter().map(|r| r.unit).collect::<Vec<_>>(), [1]);
    // A page's first row comes whatever its size.
    let page = f.store.dataset_page_within(job, 1, 500, 10).unwrap();
    assert_eq!(page.iter().map(|r| r.unit).collect::<Vec<_>>(), [2]);
    let page = f.store.dataset_page_within(job, 0, 1, 1 << 20).unwrap();
    assert_eq!(page.len(), 1);
}

#[test]
fn fuel_sums_saturate_instead_of_failing() {
    let f = fixture();
    let (job, _) = add_job(&f.store);
    let now = now_ms();
    let mut ops = Vec::new();
    for h in [1, 2] {
        ops.push(StoreOp::Assign {
            unit: 2,
            host: h,
            sent_ms: now - 2000,
            deadline_ms: now + 1_000_000,
            single: false,
        });
        ops.push(StoreOp::Report {
            unit: 2,
            host: h,
            state: CopyState::Success {
                output: Hash([5; 32]),
                fuel: i64::MAX as u64,
                engine: "e".into(),
                resumed: false,
            },
            elapsed_ms: 5,
            received_ms: now,
        });
    }
    ops.push(StoreOp::Validate {
        pending_credit: false,
        unit: 2,
        output: Hash([5; 32]),
        fuel: i64::MAX as u64,
        hosts: vec![1, 2],
        at_ms: now - 60_000,
    });
    f.store
        .apply(&ops, &[(Hash([5; 32]), b"big".to_vec())])
        .unwrap();
    // One bucket for everything: two results of i64::MAX and two of 2e9
    // pass u64::MAX; one dataset row of each passes i64::MAX only.
    let wide = 1 << 50;
    let results = f.store.result_buckets(0, wide).unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].fuel, u64::MAX);
    let validated = f.store.validated_buckets(job, wide).unwrap();
    assert_eq!(validated.len(), 1);
    assert_eq!(validated[0].fuel, i64::MAX as u64 + 2_000_000_000);
}

/// Ids above every SQLite rowid used to reach the store and come back as
/// a 500 ("out of range integral type conversion attempted").
#[tokio::test]
async fn ids_above_every_rowid_are_not_found_instead_of_a_server_error() {
    let f = fixture();
    add_job(&f.store);
    let huge = "9223372036854775808";
    for uri in [
        format!("/api/v1/jobs/{huge}"),
        format!("/api/v1/jobs/{huge}/progress"),
        format!("/api/v1/jobs/{huge}/manifest"),
        format!("/api/v1/jobs/{huge}/results"),
        format!("/api/v1/jobs/{huge}/dataset/1"),
        format!("/api/v1/jobs/1/dataset/{huge}"),
        format!("/api/v1/hosts/{huge}"),
        format!("/jobs/{huge}"),
        format!("/hosts/{huge}"),
    ] {
        let (status, _, body) = get(&f.app, &uri).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
    }
    for uri in [
        format!("/api/v1/dataset?job={huge}"),
        format!("/dataset?job={huge}"),
    ] {
        let (status, _, body) = get(&f.app, &uri).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    }
    assert_eq!(
        get(&f.app, "/api/v1/jobs/9223372036854775807").await.0,
        StatusCode::NOT_FOUND
    );
}

/// axum's own rejections (a path that is no number, a repeated query
/// field) used to answer in plain text; the API answers JSON errors and
/// the pages HTML ones.
#[tokio::test]
async fn malformed_paths_and_queries_get_json_errors_on_the_api_and_html_on_pages() {
    let f = fixture();
    add_job(&f.store);
    for uri in [
        "/api/v1/jobs/x",
        "/api/v1/jobs/x/progress",
        "/api/v1/jobs/x/manifest",
        "/api/v1/jobs/x/dataset/1",
        "/api/v1/jobs/1/dataset/x",
        "/api/v1/jobs/1/dataset/-1",
        "/api/v1/jobs/1/results?format=csv&format=csv",
        "/api/v1/dataset?job=1&job=1",
        "/api/v1/hosts?page=1&page=2",
        "/api/v1/blob/%FF",
    ] {
        let (status, ct, body) = get(&f.app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(ct.starts_with("application/json"), "{uri}: {ct}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].is_string(), "{uri}: {v}");
    }
    for uri in [
        "/jobs/x",
        "/dataset?page=1&page=2",
        "/hosts?page=1&page=1",
        "/hosts/%FF",
    ] {
        let (status, ct, _) = get(&f.app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(ct.starts_with("text/html"), "{uri}: {ct}");
    }
}

/// An upload over the size limit is refused with a JSON error (axum's
/// rejection was plain text).
#[tokio::test]
async fn an_oversized_upload_gets_a_json_413() {
    let f = fixture();
    let body = vec![0u8; peergrid_proto::limits::MAX_MODULE + 1];
    let resp = f
        .app
        .clone()
        .oneshot(
            Request::put(format!("/api/v1/blobs/{}", Hash::of(&body)))
                .header(header::AUTHORIZATION, "Bearer token")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let ct = resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
}

/// `GET /api/v1/jobs/{id}/dataset/{unit}` answers one validated row, in
/// the shape the client reads (`proto::api::DatasetRow`), and a JSON `404`
/// for a unit without a row or a job that does not exist; the job route
/// reads back as `proto::api::JobDetail`.
#[tokio::test]
async fn one_dataset_row_is_served_by_unit() {
    use peergrid_proto::api::{DatasetRow, JobDetail};

    let f = fixture();
    let (job, _) = add_job(&f.store);
    let v = json(&f.app, &format!("/api/v1/jobs/{job}/dataset/1")).await;
    assert!(v.get("output").is_none(), "outputs are blobs: {v}");
    let row: DatasetRow = serde_json::from_value(v).unwrap();
    assert_eq!((row.job, row.unit), (job, 1));
    assert_eq!(row.name, "<i>first</i>");
    assert_eq!(row.output_hash, Hash::of(b"the answer"));
    assert_eq!(row.input_hash, Hash::of(b"input"));
    assert_eq!(row.fuel, 2_000_000_000);
    assert_eq!(row.hosts, [hex::encode([1u8; 32]), hex::encode([2u8; 32])]);
    // The same row as the dataset browser's JSON shows it.
    let page = json(&f.app, &format!("/api/v1/dataset?job={job}")).await;
    assert_eq!(page["rows"][0], serde_json::to_value(&row).unwrap());

    for (uri, says) in [
        // Unit 2 exists but is not validated; unit 0 never exists.
        (
            format!("/api/v1/jobs/{job}/dataset/2"),
            "no validated row for unit 2",
        ),
        (
            format!("/api/v1/jobs/{job}/dataset/0"),
            "no validated row for unit 0",
        ),
        (
            format!("/api/v1/jobs/{job}/dataset/3"),
            "no validated row for unit 3",
        ),
        (format!("/api/v1/jobs/{}/dataset/1", job + 1), "no job"),
    ] {
        let (status, ct, body) = get(&f.app, &uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(ct.starts_with("application/json"), "{uri}: {ct}");
        let e: peergrid_proto::api::ErrorBody = serde_json::from_slice(&body).unwrap();
        assert!(e.error.contains(says), "{uri}: {}", e.error);
    }

    let detail: JobDetail =
        serde_json::from_value(json(&f.app, &format!("/api/v1/jobs/{job}")).await).unwrap();
    assert_eq!(detail.status.id, job);
    assert_eq!(detail.status.validated, 1);
    assert_eq!(detail.signature.endorsement.name, "Ada <b>");
    assert!(detail.failed_units.is_empty());
}

/// Unit 2 of the job fails on host 1's error, whose message and stderr
/// try to inject markup: the logs' routes serve them, and their pages
/// escape them.
#[tokio::test]
async fn failed_units_show_their_errors_and_stderr_escaped() {
    let f = fixture();
    let (job, key) = add_job(&f.store);
    let host = f.store.host_by_key(&key).unwrap().unwrap();
    let ops = [
        StoreOp::Assign {
            unit: 2,
            host,
            sent_ms: 1,
            deadline_ms: 2,
            single: false,
        },
        StoreOp::Report {
            unit: 2,
            host,
            state: CopyState::Error("trapped <b>here</b>".into()),
            elapsed_ms: 1,
            received_ms: 3,
        },
        StoreOp::Fail {
            unit: 2,
            reason: "1 error results; last: trapped <b>here</b>".into(),
            at_ms: 4,
        },
    ];
    let tail = StderrTail {
        unit: 2,
        host,
        text: "thread 'main' panicked:\n<script>alert(1)</script>".into(),
    };
    f.store.apply_with_stderr(&ops, &[], &[tail]).unwrap();

    let logs = json(&f.app, &format!("/api/v1/jobs/{job}/logs")).await;
    assert_eq!(logs["failed_units"][0]["unit"], 2);
    let last = &logs["failed_units"][0]["last_error"];
    assert_eq!(last["error"], "trapped <b>here</b>");
    assert_eq!(last["host_key"], key);
    assert_eq!(
        last["stderr"],
        "thread 'main' panicked:\n<script>alert(1)</script>"
    );
    assert!(logs.get("next_after").is_none());
    let unit = json(&f.app, &format!("/api/v1/jobs/{job}/logs/2")).await;
    assert_eq!(unit["state"], "failed");
    assert_eq!(unit["errors"].as_array().unwrap().len(), 1);
    let unit = json(&f.app, &format!("/api/v1/jobs/{job}/logs/1")).await;
    assert_eq!(
        (
            unit["state"].as_str(),
            unit["errors"].as_array().unwrap().len()
        ),
        (Some("validated"), 0)
    );

    let job_page = html(&f.app, &format!("/jobs/{job}")).await;
    assert!(job_page.contains(&format!("href=\"/jobs/{job}/failed\"")));
    for page in [format!("/jobs/{job}/failed"), format!("/jobs/{job}/logs/2")] {
        let body = html(&f.app, &page).await;
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(body.contains("trapped &lt;b&gt;here&lt;/b&gt;"), "{page}");
        assert!(
            !body.contains("<script>alert(1)") && !body.contains("<b>here"),
            "{page}"
        );
    }

    // Bad and missing ids are answered, not guessed at.
    for (uri, want) in [
        (
            format!("/api/v1/jobs/{job}/logs?after=x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/v1/jobs/{job}/logs?after=9223372036854775808"),
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/jobs/999/logs".into(), StatusCode::NOT_FOUND),
        (
            format!("/api/v1/jobs/{job}/logs/999"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/api/v1/jobs/{job}/logs/x"),
            StatusCode::BAD_REQUEST,
        ),
        ("/jobs/999/failed".into(), StatusCode::NOT_FOUND),
        (format!("/jobs/{job}/logs/999"), StatusCode::NOT_FOUND),
    ] {
        assert_eq!(get(&f.app, &uri).await.0, want, "{uri}");
    }
    // After the last failed unit: an empty page.
    let rest = json(&f.app, &format!("/api/v1/jobs/{job}/logs?after=2")).await;
    assert_eq!(rest["failed_units"].as_array().unwrap().len(), 0);
}
