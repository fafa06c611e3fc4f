//! A job's plots over a real router and SQLite store: drawn on the job
//! page from the validated outputs (skipping what has no numbers), served
//! as SVG and as data, cached, sampled, and absent for a job without plots.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::http::StatusCode;
use peergrid_proto::Hash;
use peergrid_proto::signing::{Endorsement, ModuleSignature};
use peergrid_proto::spec::{JobSettings, JobSubmission, Plot, UnitSpec};
use peergrid_proto::wire::HostFacts;

use super::super::tests::{Fixture, fixture, get, html, json};
use super::{FRESH_MS, PlotCache, draw_job};
use crate::store::{DatasetStamp, ReadStore, SqliteStore, Store, StoreOp};
use peergrid_os::now_ms;

fn plots(text: &str) -> Vec<Plot> {
    #[derive(serde::Deserialize)]
    struct Spec {
        plot: Vec<Plot>,
    }
    toml::from_str::<Spec>(text).unwrap().plot
}

/// A job of `outputs.len()` units with `plots`, each unit validated with
/// its output by one host.
fn job_with_outputs(store: &SqliteStore, plots: Vec<Plot>, outputs: &[&str]) -> u64 {
    let module = Hash([9; 32]);
    store.put_blob(&module, b"module").unwrap();
    let units: Vec<UnitSpec> = (0..outputs.len())
        .map(|i| {
            let input = format!("input {i}").into_bytes();
            let hash = Hash::of(&input);
            store.put_blob(&hash, &input).unwrap();
            UnitSpec {
                name: format!("u{i}"),
                input: hash,
            }
        })
        .collect();
    let now = now_ms();
    let first_unit = store.max_unit_id().unwrap() + 1;
    let job = store
        .create_job(
            &JobSubmission {
                name: "plotted".into(),
                module,
                args: vec![],
                settings: JobSettings::default(),
                units,
                validator: Default::default(),
                signature: ModuleSignature {
                    endorsement: Endorsement {
                        researcher_key: "00".repeat(32),
                        name: "Ada".into(),
                        project_signature: "00".repeat(64),
                    },
                    signature: "00".repeat(64),
                },
                plots,
                terms: Default::default(),
            },
            now - 60_000,
        )
        .unwrap();
    let host = store
        .upsert_host(&[7; 32], &HostFacts::default(), "0.1", now)
        .unwrap();
    let mut ops = Vec::new();
    let mut blobs = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        let hash = Hash::of(out.as_bytes());
        blobs.push((hash, out.as_bytes().to_vec()));
        ops.push(StoreOp::Validate {
            pending_credit: false,
            unit: first_unit + i as u64,
            output: hash,
            fuel: 10,
            hosts: vec![host],
            at_ms: now - 1000 + i as u64,
        });
    }
    store.apply(&ops, &blobs).unwrap();
    job
}

const OUTPUTS: &[&str] = &[
    "{\"points\":[{\"r\":1.0,\"lyapunov\":-0.5,\"x\":0.2},{\"r\":2.0,\"lyapunov\":0.1,\"x\":0.3}]}\n",
    "{\"points\":[{\"r\":3.0,\"lyapunov\":0.2,\"x\":0.4},{\"r\":4.0,\"lyapunov\":\"nan\",\"x\":0.5}]}\n",
    "the module printed text\n",
];

const PLOTS: &str = "\
[[plot]]\nkind = \"scatter\"\neach = \"points\"\nx = \"r\"\ny = \"lyapunov\"\nsize = \"x\"\ntitle = \"Exponents <i>\"\n\
[[plot]]\nkind = \"histogram\"\neach = \"points\"\nx = \"lyapunov\"\nbins = 4\n";

fn job(f: &Fixture) -> u64 {
    job_with_outputs(&f.store, plots(PLOTS), OUTPUTS)
}

#[tokio::test]
async fn the_job_page_draws_each_plot_from_the_outputs_with_numbers() {
    let f = fixture();
    let id = job(&f);
    let page = html(&f.app, &format!("/jobs/{id}")).await;
    assert!(page.contains(">Plots</h2>"), "{page}");
    let figure = |n: usize| {
        let start = page.find(&format!("id=\"plot-{n}\"")).unwrap();
        let end = start + page[start..].find("</figure>").unwrap();
        page[start..end].to_string()
    };
    let scatter = figure(1);
    // Three points have numbers at r and lyapunov; one element has a
    // string, and one output is not JSON.
    assert_eq!(scatter.matches("<circle").count(), 3, "{scatter}");
    assert!(scatter.contains("data-shown=\"3\""), "{scatter}");
    assert!(scatter.contains("data-skipped=\"2\""), "{scatter}");
    assert!(
        scatter.contains("from 3 of the dataset&#39;s 3 rows")
            || scatter.contains("from 3 of the dataset's 3 rows"),
        "{scatter}"
    );
    assert!(scatter.contains("2 left out"), "{scatter}");
    // The researcher's title is text, not markup.
    assert!(
        !scatter.contains("<i>") && scatter.contains("Exponents &lt;i&gt;"),
        "{scatter}"
    );
    let histogram = figure(2);
    assert!(histogram.contains("data-kind=\"histogram\""), "{histogram}");
    assert!(histogram.contains("data-shown=\"3\""), "{histogram}");
    assert!(histogram.contains(&format!("href=\"/jobs/{id}/plots/2.svg\"")));

    // The same plot as an image and as data.
    let (status, ct, svg) = get(&f.app, &format!("/jobs/{id}/plots/1.svg")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "image/svg+xml");
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert_eq!(svg.matches("<circle").count(), 3);
    let data = json(&f.app, &format!("/api/v1/jobs/{id}/plots/1")).await;
    assert_eq!(data["points"].as_array().unwrap().len(), 3);
    assert_eq!(data["points"][2]["x"], 3.0);
    assert_eq!(data["points"][2]["size"], 0.4);
    assert_eq!(data["skipped"], 2);
    assert_eq!(data["sample"]["rows_read"], 3);
    assert_eq!(data["sample"]["every"], 1);
    let hist = json(&f.app, &format!("/api/v1/jobs/{id}/plots/2")).await;
    let bins = hist["bins"].as_array().unwrap();
    assert_eq!(bins.len(), 4);
    let counted: u64 = bins.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 3);
    assert!(hist.get("points").is_none(), "{hist}");

    // Drawn once for all of these requests: the dataset did not change.
    assert_eq!(data["drawn_ms"], hist["drawn_ms"]);
    let again = json(&f.app, &format!("/api/v1/jobs/{id}/plots/1")).await;
    assert_eq!(again["drawn_ms"], data["drawn_ms"]);
}

/// The cache keeps a job's plots while its dataset is unchanged, and for
/// [`FRESH_MS`] after it changes.
#[test]
fn drawn_plots_are_kept_until_the_dataset_changes_and_they_are_old() {
    let f = fixture();
    let id = job(&f);
    let drawn = draw_job(f.store.as_ref(), id, 1_000).unwrap().unwrap();
    let stamp = drawn.stamp;
    let cache = PlotCache::default();
    cache.keep(id, Arc::new(drawn));
    let moved = DatasetStamp {
        rows: stamp.rows + 1,
        ..stamp
    };
    assert!(cache.fresh(id, &stamp, 1_000 + 10 * FRESH_MS).is_some());
    assert!(cache.fresh(id, &moved, 1_000 + FRESH_MS - 1).is_some());
    assert!(cache.fresh(id, &moved, 1_000 + FRESH_MS).is_none());
    assert!(cache.fresh(id + 1, &stamp, 1_000).is_none());
}

#[tokio::test]
async fn a_job_without_plots_shows_none_and_bad_plot_paths_say_why() {
    let f = fixture();
    let id = job_with_outputs(&f.store, Vec::new(), &["{\"a\": 1}"]);
    let page = html(&f.app, &format!("/jobs/{id}")).await;
    assert!(!page.contains(">Plots</h2>"), "{page}");
    assert!(!page.contains("class=\"plot\""), "{page}");
    let (status, _, body) = get(&f.app, &format!("/api/v1/jobs/{id}/plots/1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("declares 0 plots"));
    for (uri, want) in [
        ("/jobs/999/plots/1.svg", StatusCode::NOT_FOUND),
        ("/api/v1/jobs/999/plots/1", StatusCode::NOT_FOUND),
        ("/jobs/1/plots/1.png", StatusCode::NOT_FOUND),
        ("/jobs/1/plots/x.svg", StatusCode::BAD_REQUEST),
        ("/api/v1/jobs/x/plots/1", StatusCode::BAD_REQUEST),
        ("/api/v1/jobs/1/plots/0", StatusCode::NOT_FOUND),
    ] {
        let (status, ct, _) = get(&f.app, uri).await;
        assert_eq!(status, want, "{uri}");
        assert!(ct.starts_with("application/json"), "{uri}: {ct}");
    }
}

/// Every k-th unit's row, by the job's unit ids: a uniform sample.
#[test]
fn the_store_samples_every_kth_row_within_a_byte_budget() {
    let f = fixture();
    let outputs: Vec<String> = (0..10).map(|i| format!("{{\"i\": {i}}}")).collect();
    let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    // A first job moves the second's unit ids off multiples of anything.
    job_with_outputs(&f.store, Vec::new(), &["{}"]);
    let id = job_with_outputs(&f.store, Vec::new(), &refs);
    let rows = f
        .store
        .dataset_sample_within(id, 3, 0, 100, u64::MAX)
        .unwrap();
    let numbers: Vec<u64> = rows.iter().map(|r| r.unit).collect();
    assert_eq!(numbers.len(), 3, "{numbers:?}");
    assert!(numbers.windows(2).all(|w| w[1] - w[0] == 3), "{numbers:?}");
    assert_eq!(rows[0].output, outputs[numbers[0] as usize - 1].as_bytes());
    // Paged after a unit number, and cut at the byte budget (the first
    // row always comes).
    let after = f
        .store
        .dataset_sample_within(id, 3, numbers[0], 100, u64::MAX)
        .unwrap();
    assert_eq!(after.len(), 2);
    let cut = f.store.dataset_sample_within(id, 1, 0, 100, 1).unwrap();
    assert_eq!(cut.len(), 1);
    assert_eq!(
        f.store
            .dataset_sample_within(id, 1, 0, 100, u64::MAX)
            .unwrap()
            .len(),
        10
    );
}
