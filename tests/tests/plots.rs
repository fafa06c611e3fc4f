//! A job's declared plots, end to end: the Lyapunov example with
//! `[[plot]]`s runs on a real worker, and its page on the real
//! coordinator draws one mark per point of the exported dataset, says
//! what it left out, and serves the same plot as SVG and as data; a job
//! without plots shows none.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use peergrid_tests::{Coordinator, JobOptions, Worker, lyapunov_job};
use serde_json::Value;

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

/// The `<figure>` of plot `n` on a job page.
fn figure(page: &str, n: usize) -> &str {
    let start = page
        .find(&format!("id=\"plot-{n}\""))
        .unwrap_or_else(|| panic!("no plot {n} on the page:\n{page}"));
    let end = start + page[start..].find("</figure>").unwrap();
    &page[start..end]
}

const PLOTS: &str = r#"
[[plot]]
kind = "scatter"
each = "points"
x = "r"
y = "lyapunov"
size = "x_final"

[[plot]]
kind = "line"
each = "points"
x = "r"
y = "no_such_key"

[[plot]]
kind = "histogram"
each = "points"
x = "lyapunov"
bins = 10
"#;

#[test]
fn a_job_page_draws_the_declared_plots_from_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let _worker =
        Worker::start(&coordinator.join, &dir.path().join("w"), &["--cores", "1"]).unwrap();
    let opts = JobOptions {
        units: 3,
        quorum: 1,
        deadline_secs: 60,
        ..JobOptions::default()
    };
    for sub in ["plotted", "plain"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let plotted = lyapunov_job(&dir.path().join("plotted"), &opts).unwrap();
    let spec = std::fs::read_to_string(&plotted).unwrap();
    std::fs::write(&plotted, format!("{spec}\n{PLOTS}")).unwrap();
    let plain = lyapunov_job(&dir.path().join("plain"), &JobOptions { units: 1, ..opts }).unwrap();

    let job = coordinator.submit(&plotted).unwrap();
    let without = coordinator.submit(&plain).unwrap();
    for id in [job, without] {
        let status = coordinator
            .wait_finished(id, Duration::from_secs(180))
            .unwrap();
        assert_eq!(status["failed"], 0, "{status}");
    }

    // The points the plots should show, from the exported dataset.
    let rows = coordinator.dataset(job).unwrap();
    assert_eq!(rows.len(), 3);
    let points: Vec<Value> = rows
        .iter()
        .flat_map(|row| {
            let output: Value = serde_json::from_str(row["output"].as_str().unwrap()).unwrap();
            output["points"].as_array().unwrap().clone()
        })
        .collect();
    assert!(points.len() > 3, "{} points", points.len());

    let (code, page) = get(&format!("{}/jobs/{job}", coordinator.http));
    assert_eq!(code, 200);
    let scatter = figure(&page, 1);
    assert_eq!(
        scatter.matches("<circle").count(),
        points.len(),
        "one mark per point of the dataset"
    );
    assert!(scatter.contains("data-skipped=\"0\""), "{scatter}");
    assert!(scatter.contains("from 3 of the dataset"), "{scatter}");
    // A key no output has: nothing drawn, every point said to be left out.
    let line = figure(&page, 2);
    assert!(line.contains("data-shown=\"0\""), "{line}");
    assert!(
        line.contains(&format!("data-skipped=\"{}\"", points.len())),
        "{line}"
    );
    let histogram = figure(&page, 3);
    assert!(
        histogram.contains(&format!("data-shown=\"{}\"", points.len())),
        "{histogram}"
    );

    // The same plot on its own, and its data.
    let (code, svg) = get(&format!("{}/jobs/{job}/plots/1.svg", coordinator.http));
    assert_eq!(code, 200);
    assert_eq!(svg.matches("<circle").count(), points.len());
    let (code, body) = get(&format!("{}/api/v1/jobs/{job}/plots/1", coordinator.http));
    assert_eq!(code, 200, "{body}");
    let data: Value = serde_json::from_str(&body).unwrap();
    let drawn = data["points"].as_array().unwrap();
    assert_eq!(drawn.len(), points.len());
    assert_eq!(drawn[0]["x"], points[0]["r"]);
    assert_eq!(drawn[0]["y"], points[0]["lyapunov"]);
    assert_eq!(drawn[0]["size"], points[0]["x_final"]);
    let (code, body) = get(&format!("{}/api/v1/jobs/{job}/plots/3", coordinator.http));
    assert_eq!(code, 200, "{body}");
    let bins: Value = serde_json::from_str(&body).unwrap();
    let counted: u64 = bins["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, points.len() as u64);

    // The job without plots shows none, and has none to serve.
    let (code, page) = get(&format!("{}/jobs/{without}", coordinator.http));
    assert_eq!(code, 200);
    assert!(!page.contains("id=\"plot-1\""), "{page}");
    assert!(!page.contains(">Plots</h2>"), "{page}");
    let (code, _) = get(&format!("{}/jobs/{without}/plots/1.svg", coordinator.http));
    assert_eq!(code, 404);
}
