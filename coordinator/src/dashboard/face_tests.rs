//! The project's face and what the public can find: the project's name in
//! every page's title, the `/about` page with how to join, the list of
//! every job (finished ones too) and the outputs in the dataset browser.
//! Over the real router and a temporary SQLite store (`tests.rs`'s fixture).

#![allow(clippy::unwrap_used)]

use axum::http::{StatusCode, header};
use peergrid_os::now_ms;
use peergrid_proto::Hash;
use peergrid_proto::signing::{Endorsement, ModuleSignature};
use peergrid_proto::spec::{JobSettings, JobSubmission, UnitSpec};

use super::tests::{EVIL, add_job, fixture, get, html, json, validate};
use crate::project::Project;
use crate::store::{SqliteStore, Store};

/// A job of one unit that no host has taken.
fn bare_job(store: &SqliteStore) -> u64 {
    let input = Hash::of(b"input");
    store.put_blob(&input, b"input").unwrap();
    store.put_blob(&Hash([9; 32]), b"module").unwrap();
    let signature = ModuleSignature {
        endorsement: Endorsement {
            researcher_key: "00".repeat(32),
            name: "Bo".into(),
            project_signature: "00".repeat(64),
        },
        signature: "00".repeat(64),
    };
    let job = JobSubmission {
        plots: Vec::new(),
        name: "bare".into(),
        module: Hash([9; 32]),
        args: vec![],
        settings: JobSettings::default(),
        validator: Default::default(),
        terms: Default::default(),
        signature,
        units: vec![UnitSpec {
            name: "only".into(),
            input,
        }],
    };
    store.create_job(&job, now_ms()).unwrap()
}

fn evil_project() -> Project {
    Project {
        name: format!("Prime {EVIL}"),
        description: format!("We count primes.\n\nSecond {EVIL} paragraph."),
        url: "javascript:alert(1)".into(),
        operator: "Lab <i>of</i> Numbers".into(),
        download_url: "https://example.org/worker".into(),
    }
}

/// Every page's `<title>`.
fn title(page: &str) -> &str {
    let start = page.find("<title>").unwrap() + "<title>".len();
    &page[start..start + page[start..].find("</title>").unwrap()]
}

#[tokio::test]
async fn every_page_is_titled_with_the_project_name_escaped() {
    let f = fixture();
    let (job, _) = add_job(&f.store);
    let bare = html(&f.app, "/").await;
    assert_eq!(title(&bare), "peergrid", "no name yet");
    f.api.project.set(evil_project());
    let escaped = "Prime &lt;script&gt;alert('x')&lt;/script&gt; &amp; co";
    for uri in [
        "/".to_string(),
        "/about".into(),
        "/jobs".into(),
        format!("/jobs/{job}"),
        "/hosts".into(),
        "/hosts/1".into(),
        "/volunteers".into(),
        "/dataset".into(),
        format!("/jobs/{job}/failed"),
        format!("/jobs/{job}/logs/1"),
    ] {
        let page = html(&f.app, &uri).await;
        assert!(title(&page).ends_with(escaped), "{uri}: {}", title(&page));
        assert!(!page.contains("<script>alert"), "{uri}");
    }
    // Error pages too.
    let (status, _, body) = get(&f.app, "/jobs/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(title(&String::from_utf8(body).unwrap()).ends_with(escaped));
    let home = html(&f.app, "/").await;
    assert_eq!(title(&home), escaped);
    assert!(home.contains(&format!(r#"id="project-name">{escaped}<"#)));
    assert!(
        home.contains(r#"id="project-summary">We count primes."#),
        "{home}"
    );
}

#[tokio::test]
async fn the_about_page_says_what_the_project_is_and_how_to_join() {
    let f = fixture();
    f.api.project.set(evil_project());
    let about = html(&f.app, "/about").await;
    assert!(about.contains("<p>We count primes.</p>"), "{about}");
    assert!(about.contains("Second &lt;script&gt;"));
    assert!(about.contains(r#"id="project-operator">Lab &lt;i&gt;of&lt;/i&gt; Numbers<"#));
    // A web address that is not http(s) is text, never a link.
    assert!(about.contains("javascript:alert(1)"));
    assert!(!about.contains(r#"href="javascript:"#), "{about}");
    assert!(about.contains(r#"id="worker-download" href="https://example.org/worker""#));
    let join = f.api.join.clone();
    assert!(
        about.contains(&format!(
            "peergrid-worker install --join '{}'",
            join.replace('&', "&amp;")
        )),
        "{about}"
    );
    assert!(about.contains(r#"id="run-command""#));
    // Without a download address: how to build the worker.
    f.api.project.set(Project::default());
    let about = html(&f.app, "/about").await;
    assert!(about.contains(r#"id="worker-build""#));
    assert!(about.contains("has not described this project yet"));

    f.api.project.set(evil_project());
    let v = json(&f.app, "/api/v1/project").await;
    assert_eq!(v["name"], evil_project().name);
    assert_eq!(v["display_name"], evil_project().name);
    assert_eq!(v["operator"], "Lab <i>of</i> Numbers");
    assert_eq!(v["join"], join.as_str());
}

#[tokio::test]
async fn finished_jobs_are_listed_with_their_state_and_counts() {
    let f = fixture();
    assert!(html(&f.app, "/jobs").await.contains(r#"id="no-jobs""#));
    let (first, _) = add_job(&f.store);
    // The job finishes: its second unit validates too.
    validate(&f.store, 2, b"second");
    let second = bare_job(&f.store);
    let overview = html(&f.app, "/").await;
    assert!(
        !overview.contains(&format!(r#"<tr data-job="{first}">"#)),
        "finished: not on the overview"
    );

    let page = html(&f.app, "/jobs").await;
    assert!(page.contains(r#"id="jobs-total">2<"#));
    let at = |id: u64| page.find(&format!(r#"<tr data-job="{id}">"#)).unwrap();
    assert!(at(second) < at(first), "newest first");
    let row = &page[at(first)..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains(r#"data-state="finished""#), "{row}");
    assert!(row.contains(r#"class="num validated">2<"#), "{row}");
    assert!(!page.contains("<script>alert"));

    // The JSON twin: a page as an array, with the count and links.
    let (status, _, body) = get(&f.app, "/api/v1/jobs?page=1").await;
    assert_eq!(status, StatusCode::OK);
    let jobs: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(jobs[0]["id"], second);
    assert_eq!(jobs[1]["finished"], true);
    // Without a page: every job, oldest first, as `peergrid job list` reads it.
    let all = json(&f.app, "/api/v1/jobs").await;
    assert_eq!(all[0]["id"], first);
    for uri in ["/jobs?page=x", "/api/v1/jobs?page=x"] {
        assert_eq!(get(&f.app, uri).await.0, StatusCode::BAD_REQUEST, "{uri}");
    }
}

#[tokio::test]
async fn the_job_list_is_paged() {
    let f = fixture();
    for _ in 0..super::jobs::JOBS_PER_PAGE + 3 {
        bare_job(&f.store);
    }
    let resp = tower::ServiceExt::oneshot(
        f.app.clone(),
        axum::http::Request::get("/api/v1/jobs?page=2")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["x-total-count"], "53");
    assert!(
        resp.headers()[header::LINK]
            .to_str()
            .unwrap()
            .contains("page=1>; rel=\"prev\"")
    );
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(page.as_array().unwrap().len(), 3);
    assert_eq!(page[2]["id"], 1, "the oldest comes last");
    let html1 = html(&f.app, "/jobs").await;
    assert_eq!(
        html1.matches("<tr data-job=").count(),
        super::jobs::JOBS_PER_PAGE
    );
    assert!(html1.contains(r#"id="page-next" href="/jobs?page=2""#));
    // Past the end: the last page.
    assert!(
        html(&f.app, "/jobs?page=99")
            .await
            .contains(r#"id="page">2<"#)
    );
}

#[tokio::test]
async fn the_dataset_shows_a_bounded_escaped_preview_of_each_output() {
    let f = fixture();
    let (job, _) = add_job(&f.store);
    let long = format!("<b>{}</b>\n", "x".repeat(1000));
    validate(&f.store, 2, long.as_bytes());
    let page = html(&f.app, &format!("/dataset?job={job}")).await;
    assert!(
        page.contains(r#"<code class="output-preview">the answer</code>"#),
        "{page}"
    );
    assert!(page.contains("&lt;b&gt;xxx"));
    assert!(!page.contains("<b>xxx"));
    assert!(
        !page.contains(&"x".repeat(super::preview::PREVIEW_BYTES)),
        "bounded"
    );
    let v = json(&f.app, &format!("/api/v1/dataset?job={job}")).await;
    assert_eq!(v["previews"][0]["text"], "the answer");
    assert_eq!(v["previews"][1]["truncated"], true);
    assert_eq!(v["previews"][1]["bytes"], long.len());
    assert_eq!(
        v["rows"][1]["output_hash"],
        Hash::of(long.as_bytes()).to_hex()
    );
}

/// `/metrics` answers Prometheus's text format with the store's counts,
/// and a refused submission is counted (and logged) by status.
#[tokio::test]
async fn metrics_count_units_hosts_and_refusals() {
    use std::sync::atomic::Ordering;

    let f = fixture();
    add_job(&f.store);
    let (status, ct, body) = get(&f.app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = String::from_utf8(body).unwrap();
    for line in [
        "peergrid_units{state=\"validated\"} 1\n",
        "peergrid_units{state=\"active\"} 1\n",
        "peergrid_jobs 1\n",
        "peergrid_hosts_online 2\n",
        "peergrid_queue_depth 0\n",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(text.contains("# TYPE peergrid_writer_commit_seconds histogram"));

    let before = crate::metrics::REFUSED[0].load(Ordering::Relaxed);
    let resp = tower::ServiceExt::oneshot(
        f.app.clone(),
        axum::http::Request::post("/api/v1/jobs")
            .header(header::AUTHORIZATION, "Bearer wrong")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The body the client gets is untouched by the log.
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let e: peergrid_proto::api::ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(e.error, "wrong researcher token");
    assert_eq!(
        crate::metrics::REFUSED[0].load(Ordering::Relaxed),
        before + 1
    );
    let (_, _, body) = get(&f.app, "/metrics").await;
    assert!(String::from_utf8(body).unwrap().contains(&format!(
        "peergrid_refused_requests_total{{status=\"401\"}} {}",
        before + 1
    )));
}

/// "Gfuel" is explained wherever it appears, and the overview's rate says
/// it is the hour's average that the red line on its chart shows.
#[tokio::test]
async fn fuel_is_explained_and_the_rate_says_its_window() {
    let f = fixture();
    let (job, _) = add_job(&f.store);
    for uri in ["/hosts".to_string(), "/volunteers".into()] {
        let page = html(&f.app, &uri).await;
        assert!(
            page.contains(r#"<abbr title="Fuel counts the work"#),
            "{uri}"
        );
    }
    for uri in [format!("/jobs/{job}"), "/hosts/1".into()] {
        assert!(
            html(&f.app, &uri).await.contains(r#"id="fuel-meaning""#),
            "{uri}"
        );
    }
    let home = html(&f.app, "/").await;
    assert!(home.contains("average of the last hour (the red line)"));
    // The average line is drawn (in red, #d62828) when there were results.
    let chart = &home[home.find(r#"id="chart-results""#).unwrap()..];
    let chart = chart[..chart.find("</figure>").unwrap()].to_ascii_lowercase();
    assert!(chart.contains("#d62828"), "{chart}");
}
