//! The public dashboard in a real browser (Debian's headless Chromium):
//! after a job runs, the overview, the job page, the leaderboard and the
//! dataset browser show the same numbers as the JSON API, the CSV linked
//! from the job page equals `peergrid results export`, and a screenshot of
//! every page is saved under `target/dashboard-screenshots/`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use peergrid_tests::{
    Coordinator, JobOptions, Worker, lyapunov_job, rendered_dom, screenshot, target_dir,
};
use scraper::{Html, Selector};
use serde_json::Value;

fn get_json(url: &str) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    resp.body_mut().read_json().unwrap()
}

fn get_bytes(url: &str) -> Vec<u8> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    resp.body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .unwrap()
}

fn text(doc: &Html, selector: &str) -> String {
    let sel = Selector::parse(selector).unwrap();
    doc.select(&sel)
        .next()
        .unwrap_or_else(|| panic!("no `{selector}` on the page"))
        .text()
        .collect::<String>()
        .trim()
        .to_string()
}

fn number(doc: &Html, selector: &str) -> u64 {
    let t = text(doc, selector).replace([',', ' '], "");
    t.parse()
        .unwrap_or_else(|_| panic!("`{selector}` shows `{t}`, not a number"))
}

fn attr(doc: &Html, selector: &str, name: &str) -> Vec<String> {
    let sel = Selector::parse(selector).unwrap();
    doc.select(&sel)
        .map(|e| e.value().attr(name).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn pages_in_a_real_browser_match_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    // Two hosts of one volunteer account: the account key file copied to
    // both machines.
    let account_key = dir.path().join("ada.account");
    std::fs::write(&account_key, hex::encode([42u8; 32])).unwrap();
    let _workers: Vec<Worker> = (0..2)
        .map(|i| {
            Worker::start(
                &coordinator.join,
                &dir.path().join(format!("w{i}")),
                &[
                    "--cores",
                    "1",
                    "--account",
                    "Ada <Lovelace>",
                    "--account-key",
                    account_key.to_str().unwrap(),
                    "--team",
                    "Analytical Engines",
                    "--name",
                    &format!("ada-{i}"),
                ],
            )
            .unwrap()
        })
        .collect();
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 12,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    let base = coordinator.http.clone();
    let shots = target_dir().join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // Overview.
    let overview = get_json(&format!("{base}/api/v1/overview"));
    let doc = Html::parse_document(&rendered_dom(&format!("{base}/")).unwrap());
    assert_eq!(
        number(&doc, "#workers-online"),
        overview["workers_online"].as_u64().unwrap()
    );
    assert_eq!(number(&doc, "#workers-online"), 2);
    assert_eq!(number(&doc, "#dataset-rows"), 12);
    assert_eq!(
        number(&doc, "#dataset-rows"),
        overview["dataset"]["rows"].as_u64().unwrap()
    );
    assert_eq!(
        number(&doc, "#jobs-total"),
        overview["jobs_total"].as_u64().unwrap()
    );
    assert_eq!(
        number(&doc, "#results-last-hour"),
        overview["results_last_hour"].as_u64().unwrap()
    );
    assert!(
        doc.select(&Selector::parse("figure#chart-results svg").unwrap())
            .next()
            .is_some(),
        "results chart"
    );
    screenshot(&format!("{base}/"), &shots.join("overview.png")).unwrap();

    // Job page.
    let status = get_json(&format!("{base}/api/v1/jobs/{job}"));
    let doc = Html::parse_document(&rendered_dom(&format!("{base}/jobs/{job}")).unwrap());
    assert_eq!(
        number(&doc, "#validated-total"),
        status["validated"].as_u64().unwrap()
    );
    assert_eq!(number(&doc, "#units-total"), 12);
    assert_eq!(
        number(&doc, "#failed-total"),
        status["failed"].as_u64().unwrap()
    );
    assert_eq!(text(&doc, "#researcher"), "Test Researcher");
    let csv_href = attr(&doc, "a#download-csv", "href").pop().unwrap();
    screenshot(&format!("{base}/jobs/{job}"), &shots.join("job.png")).unwrap();

    // The CSV the page links to is the researcher's export, byte for byte.
    let csv_url = if csv_href.starts_with("http") {
        csv_href
    } else {
        format!("{base}{csv_href}")
    };
    let downloaded = get_bytes(&csv_url);
    let exported = coordinator.cli(&["results", "export", &job.to_string(), "--format", "csv"]);
    assert!(exported.status.success());
    assert_eq!(
        downloaded, exported.stdout,
        "the page's CSV differs from `peergrid results export`"
    );

    // Leaderboard: the same hosts, in the same order, with the same credit.
    let hosts = get_json(&format!("{base}/api/v1/hosts"));
    let doc = Html::parse_document(&rendered_dom(&format!("{base}/hosts")).unwrap());
    let shown = attr(&doc, "table#leaderboard tr[data-host]", "data-host");
    let api: Vec<String> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["public_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown, api);
    assert_eq!(shown.len(), 2);
    let credit = attr(&doc, "table#leaderboard td.credit-total", "data-fuel");
    let api_credit: Vec<String> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["credit"]["total"].to_string())
        .collect();
    assert_eq!(credit, api_credit);
    // Credit is the fuel of every validated unit, once per agreeing host.
    let rows = coordinator.dataset(job).unwrap();
    let granted: u64 = rows
        .iter()
        .map(|r| r["fuel"].as_u64().unwrap() * r["hosts"].as_array().unwrap().len() as u64)
        .sum();
    let total: u64 = credit.iter().map(|c| c.parse::<u64>().unwrap()).sum();
    assert_eq!(total, granted);
    screenshot(&format!("{base}/hosts"), &shots.join("leaderboard.png")).unwrap();

    // Volunteers: both hosts under one account, their credit summed.
    let volunteers = get_json(&format!("{base}/api/v1/volunteers"));
    let doc = Html::parse_document(&rendered_dom(&format!("{base}/volunteers")).unwrap());
    let names = attr(
        &doc,
        "table#volunteers tr[data-volunteer]",
        "data-volunteer",
    );
    assert_eq!(names, vec!["Ada <Lovelace>".to_string()]);
    assert_eq!(volunteers[0]["name"], "Ada <Lovelace>");
    let ada = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
            .verifying_key()
            .to_bytes(),
    );
    assert_eq!(
        volunteers[0]["account"],
        ada.as_str(),
        "the account is its key"
    );
    assert_eq!(
        attr(&doc, "table#volunteers td.host-count", "data-count"),
        vec!["2".to_string()]
    );
    assert_eq!(
        attr(&doc, "table#volunteers td.credit-total", "data-fuel"),
        vec![granted.to_string()]
    );
    assert_eq!(volunteers[0]["credit"]["total"].as_u64().unwrap(), granted);
    screenshot(&format!("{base}/volunteers"), &shots.join("volunteers.png")).unwrap();

    // Dataset browser: every row with its provenance.
    let doc = Html::parse_document(&rendered_dom(&format!("{base}/dataset?job={job}")).unwrap());
    assert_eq!(number(&doc, "#dataset-total-rows"), 12);
    let units = attr(&doc, "table#dataset tr[data-unit]", "data-unit");
    assert_eq!(units.len(), 12);
    let hashes = attr(&doc, "table#dataset code.output-hash", "data-hash");
    for row in &rows {
        let unit = row["unit"].to_string();
        let i = units
            .iter()
            .position(|u| *u == unit)
            .unwrap_or_else(|| panic!("unit {unit} not shown"));
        assert_eq!(hashes[i], row["output_hash"].as_str().unwrap());
    }
    screenshot(
        &format!("{base}/dataset?job={job}"),
        &shots.join("dataset.png"),
    )
    .unwrap();
    // The project page and the list of every job.
    let doc = Html::parse_document(&rendered_dom(&format!("{base}/jobs")).unwrap());
    assert_eq!(
        attr(&doc, "table#jobs tr[data-job]", "data-job"),
        vec![job.to_string()]
    );
    screenshot(&format!("{base}/jobs"), &shots.join("jobs.png")).unwrap();
    screenshot(&format!("{base}/about"), &shots.join("about.png")).unwrap();
    // A host's page with its tasks, and the team both hosts joined.
    let doc = Html::parse_document(&rendered_dom(&format!("{base}/hosts/1")).unwrap());
    assert!(
        doc.root_element().text().any(|t| t.contains("ada-")),
        "the host's chosen name"
    );
    screenshot(&format!("{base}/hosts/1"), &shots.join("host.png")).unwrap();
    let teams = get_json(&format!("{base}/api/v1/teams"));
    assert_eq!(teams[0]["name"], "Analytical Engines", "{teams}");
    screenshot(&format!("{base}/teams"), &shots.join("teams.png")).unwrap();
    eprintln!("screenshots in {}", shots.display());
    docs_show_every_page(&shots);
}

/// Every page this test shoots has its picture in docs/screenshots (a
/// PNG of the same width), shown in docs/dashboard.md: a new page comes
/// with its screenshot. Refresh them with
/// `cp target/dashboard-screenshots/*.png docs/screenshots/`.
fn docs_show_every_page(shots: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = std::fs::read_to_string(root.join("docs/dashboard.md")).unwrap();
    let width = |png: &[u8]| {
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 24,
            "not a PNG"
        );
        u32::from_be_bytes([png[16], png[17], png[18], png[19]])
    };
    for e in std::fs::read_dir(shots).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let committed = root.join("docs/screenshots").join(&name);
        let kept = std::fs::read(&committed).unwrap_or_else(|_| {
            panic!(
                "docs/screenshots/{name} is missing: copy it from {} and show it in docs/dashboard.md",
                shots.display()
            )
        });
        let fresh = std::fs::read(shots.join(&name)).unwrap();
        assert_eq!(width(&kept), width(&fresh), "docs/screenshots/{name}");
        assert!(
            guide.contains(&format!("screenshots/{name}")),
            "docs/dashboard.md does not show screenshots/{name}"
        );
    }
}
