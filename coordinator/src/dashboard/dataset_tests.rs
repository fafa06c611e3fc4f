//! A job's licence and citation and its JSON-columns and Parquet exports
//! over the real router and store: the job page escapes the researcher's
//! text, `CITATION.cff` is served, every export carries the terms in its
//! headers, and the manifest's checksums match each download.

#![allow(clippy::unwrap_used)]

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use parquet::file::reader::{FileReader, SerializedFileReader};
use peergrid_proto::Hash;
use peergrid_proto::citation::{Citation, DatasetTerms};
use peergrid_proto::signing::{Endorsement, ModuleSignature};
use peergrid_proto::spec::{JobSettings, JobSubmission, UnitSpec};
use tower::ServiceExt;

use super::tests::{EVIL, add_job, fixture, get, html, json, validate};
use crate::store::Store;
use peergrid_os::now_ms;

/// A second job (units 3, 4, 5 by id) with terms; its units validated
/// with a JSON object, a plain text and another JSON object.
fn job_with_terms(store: &crate::store::SqliteStore) -> u64 {
    let ih = Hash::of(b"input");
    let job = store
        .create_job(
            &JobSubmission {
                name: "terms".into(),
                module: Hash([9; 32]),
                args: vec![],
                settings: JobSettings::default(),
                validator: Default::default(),
                plots: vec![],
                terms: DatasetTerms {
                    license: Some("CC-BY-4.0 OR LicenseRef-Ours".into()),
                    citation: Some(Citation {
                        title: Some(EVIL.into()),
                        authors: vec!["Lovelace, Ada".into()],
                        doi: Some("10.5281/zenodo.42".into()),
                        url: Some("https://example.org/\"x\"".into()),
                        ..Citation::default()
                    }),
                },
                signature: ModuleSignature {
                    endorsement: Endorsement {
                        researcher_key: "00".repeat(32),
                        name: "Ada".into(),
                        project_signature: "00".repeat(64),
                    },
                    signature: "00".repeat(64),
                },
                units: ["a", "b", "c"]
                    .map(|n| UnitSpec {
                        name: n.into(),
                        input: ih,
                    })
                    .to_vec(),
            },
            now_ms(),
        )
        .unwrap();
    validate(store, 3, b"{\"snr\": 5, \"f\": 1.5, \"=cmd\": \"x\"}\n");
    validate(store, 4, b"plain text\n");
    validate(store, 5, b"{\"snr\": 7, \"tags\": [1, 2]}\n");
    job
}

async fn headers(app: &axum::Router, uri: &str) -> axum::http::HeaderMap {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{uri}");
    let h = resp.headers().clone();
    to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    h
}

#[tokio::test]
async fn terms_show_on_the_page_the_api_and_every_export() {
    let f = fixture();
    let (plain_job, _) = add_job(&f.store);
    let job = job_with_terms(&f.store);

    let status = json(&f.app, &format!("/api/v1/jobs/{job}")).await;
    assert_eq!(status["license"], "CC-BY-4.0 OR LicenseRef-Ours");
    assert_eq!(status["citation"]["title"], EVIL);
    let bare = json(&f.app, &format!("/api/v1/jobs/{plain_job}")).await;
    assert!(bare.get("license").is_none() && bare.get("citation").is_none());

    let page = html(&f.app, &format!("/jobs/{job}")).await;
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains(r#"<code id="license">CC-BY-4.0 OR LicenseRef-Ours</code>"#));
    assert!(page.contains(r#"href="https://spdx.org/licenses/CC-BY-4.0.html""#));
    assert!(!page.contains("spdx.org/licenses/LicenseRef"));
    assert!(
        page.contains(r#"<cite id="citation-title">&lt;script&gt;"#),
        "{page}"
    );
    assert!(page.contains(r#"href="https://doi.org/10.5281/zenodo.42""#));
    assert!(
        page.contains(r#"href="https://example.org/&quot;x&quot;""#),
        "{page}"
    );
    assert!(page.contains(&format!(r#"href="/api/v1/jobs/{job}/CITATION.cff""#)));
    let plain = html(&f.app, &format!("/jobs/{plain_job}")).await;
    assert!(plain.contains(r#"id="license-none""#));

    let (code, ct, cff) = get(&f.app, &format!("/api/v1/jobs/{job}/CITATION.cff")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(ct.starts_with("application/yaml"), "{ct}");
    let cff = String::from_utf8(cff).unwrap();
    assert!(
        cff.contains("title: \"<script>alert('x')</script> & co\"\n"),
        "{cff}"
    );
    // `OR` with a LicenseRef: not expressible in CFF, left to a comment.
    assert!(
        cff.contains(
            "# license (an SPDX expression CFF 1.2.0 cannot state): CC-BY-4.0 OR LicenseRef-Ours\n"
        ),
        "{cff}"
    );
    let (code, _, _) = get(&f.app, "/api/v1/jobs/99/CITATION.cff").await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let manifest = json(&f.app, &format!("/api/v1/jobs/{job}/manifest")).await;
    assert_eq!(manifest["license"], "CC-BY-4.0 OR LicenseRef-Ours");
    assert_eq!(manifest["citation"]["doi"], "10.5281/zenodo.42");
    for (key, query) in [
        ("jsonl", "format=jsonl"),
        ("csv", "format=csv"),
        ("csv_columns", "format=csv&columns=json"),
        ("parquet", "format=parquet"),
    ] {
        let uri = format!("/api/v1/jobs/{job}/results?{query}");
        let (code, _, body) = get(&f.app, &uri).await;
        assert_eq!(code, StatusCode::OK, "{uri}");
        assert_eq!(
            manifest["exports"][key]["blake3"],
            blake3::hash(&body).to_hex().as_str(),
            "{key}"
        );
        assert_eq!(manifest["exports"][key]["bytes"], body.len());
        let h = headers(&f.app, &uri).await;
        assert_eq!(h["peergrid-license"], "CC-BY-4.0 OR LicenseRef-Ours");
        let links: Vec<&str> = h
            .get_all("link")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            links.contains(&"<https://doi.org/10.5281/zenodo.42>; rel=\"cite-as\""),
            "{links:?}"
        );
        assert!(links.contains(&"<https://spdx.org/licenses/CC-BY-4.0.html>; rel=\"license\""));
        assert!(
            links
                .iter()
                .any(|l| l.contains("CITATION.cff>; rel=\"describedby\""))
        );
    }

    // CSV with JSON columns: keys in order, the formula key neutralised,
    // the text output with empty cells.
    let (_, _, csv) = get(
        &f.app,
        &format!("/api/v1/jobs/{job}/results?format=csv&columns=json"),
    )
    .await;
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].ends_with(",output,'=cmd,f,snr,tags"), "{csv}");
    assert!(lines[1].ends_with(",x,1.5,5,"), "{csv}");
    assert!(lines[2].ends_with(",plain text,,,,"), "{csv}");
    assert!(lines[3].ends_with(",,,7,\"[1,2]\""), "{csv}");
    assert_eq!(lines.len(), 4);
    // The plain CSV is as before.
    let (_, _, plain) = get(&f.app, &format!("/api/v1/jobs/{job}/results?format=csv")).await;
    assert!(
        String::from_utf8(plain)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .ends_with(",validated_ms,output")
    );

    // Parquet: typed columns, and the terms in its metadata.
    let (_, ct, pq) = get(
        &f.app,
        &format!("/api/v1/jobs/{job}/results?format=parquet"),
    )
    .await;
    assert_eq!(ct, "application/vnd.apache.parquet");
    let reader = SerializedFileReader::new(axum::body::Bytes::from(pq)).unwrap();
    let meta = reader.metadata().file_metadata();
    assert_eq!(meta.num_rows(), 3);
    let kv = meta.key_value_metadata().unwrap();
    let value = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone());
    assert_eq!(
        value("peergrid.license").as_deref(),
        Some("CC-BY-4.0 OR LicenseRef-Ours")
    );
    assert!(
        value("peergrid.citation_cff")
            .unwrap()
            .contains("cff-version: 1.2.0")
    );
    let schema = meta.schema_descr();
    let col = |name: &str| {
        (0..schema.num_columns())
            .map(|i| schema.column(i))
            .find(|c| c.path().string() == name)
            .map(|c| c.physical_type())
    };
    use parquet::basic::Type;
    assert_eq!(col("snr"), Some(Type::INT64));
    assert_eq!(col("f"), Some(Type::DOUBLE));
    assert_eq!(col("tags"), Some(Type::BYTE_ARRAY));
    assert_eq!(col("=cmd"), Some(Type::BYTE_ARRAY));
    assert_eq!(col("fuel"), Some(Type::INT64));

    // Bad parameters are a 400 with a message.
    for q in [
        "format=xml",
        "format=jsonl&columns=all",
        "format=csv&columns=all",
    ] {
        let (code, _, body) = get(&f.app, &format!("/api/v1/jobs/{job}/results?{q}")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{q}");
        assert!(String::from_utf8(body).unwrap().contains("error"));
    }
}
