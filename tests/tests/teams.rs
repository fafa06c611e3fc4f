//! Hosts and teams on the dashboard, with real workers: hosts started with
//! `--name` and `--team` run a real job beside a cheater; each host's page
//! lists its tasks with what became of them (valid for the honest, voided
//! with the reason for the caught cheater) and the credit they earned, and the team page totals
//! its members' credit.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use peergrid_tests::{Coordinator, JobOptions, Worker, lyapunov_job};
use scraper::{Html, Selector};
use serde_json::Value;

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

fn json(url: &str) -> Value {
    let (status, body) = get(url);
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn page(url: &str) -> Html {
    let (status, body) = get(url);
    assert_eq!(status, 200, "{url}: {body}");
    Html::parse_document(&body)
}

fn select<'a>(doc: &'a Html, selector: &str) -> Vec<scraper::ElementRef<'a>> {
    doc.select(&Selector::parse(selector).unwrap()).collect()
}

fn text(doc: &Html, selector: &str) -> String {
    let found = select(doc, selector);
    let first = found
        .first()
        .unwrap_or_else(|| panic!("no `{selector}` on the page"));
    first.text().collect::<String>().trim().to_string()
}

/// The CPU model Linux reports, if it names one.
fn cpuinfo_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
}

#[test]
fn named_hosts_list_their_tasks_and_teams_total_their_credit() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let http = &coordinator.http;
    let key_file = |name: &str, byte: u8| {
        let path = dir.path().join(format!("{name}.account"));
        std::fs::write(&path, hex::encode([byte; 32])).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (ada_key, bob_key) = (key_file("ada", 41), key_file("bob", 42));
    // The cheater grabs work first, so some of its wrong outputs meet
    // honest ones.
    let _cheater = Worker::start(
        &coordinator.join,
        &dir.path().join("cheater"),
        &[
            "--cores",
            "1",
            "--simulate-fault",
            "wrong-output",
            "--name",
            "Mallory's <b>box</b>",
        ],
    )
    .unwrap();
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 8,
            iterations: 2000,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let volunteer = |dir_name: &str, cores: &str, name: &str, account: &str, key: &str, team| {
        Worker::start(
            &coordinator.join,
            &dir.path().join(dir_name),
            &[
                "--cores",
                cores,
                "--name",
                name,
                "--account",
                account,
                "--account-key",
                key,
                "--team",
                team,
            ],
        )
        .unwrap()
    };
    let _honest = [
        volunteer("a1", "1", "ada-desktop", "Ada", &ada_key, "Rustaceans"),
        volunteer("a2", "2", "ada-laptop", "Ada", &ada_key, "Rustaceans"),
        // Another spelling of the same team.
        volunteer("b1", "1", "bob's pi", "Bob", &bob_key, "rustaceans"),
    ];
    let status = coordinator
        .wait_finished(job, Duration::from_secs(180))
        .unwrap();
    assert_eq!(status["validated"], 8, "{status}");

    // Every host by the name its volunteer gave it.
    let hosts: Vec<Value> = json(&format!("{http}/api/v1/hosts"))
        .as_array()
        .unwrap()
        .clone();
    let by_name: HashMap<&str, &Value> = hosts
        .iter()
        .map(|h| (h["name"].as_str().unwrap(), h))
        .collect();
    let mut names: Vec<&str> = by_name.keys().copied().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Mallory's <b>box</b>",
            "ada-desktop",
            "ada-laptop",
            "bob's pi"
        ]
    );
    let laptop = by_name["ada-laptop"];
    assert_eq!(laptop["slots"], 2, "{laptop}");
    if let Some(model) = cpuinfo_model() {
        assert_eq!(laptop["cpu_model"], model.as_str(), "{laptop}");
    }
    let team_id = laptop["team_id"].as_u64().unwrap();
    assert!(by_name["Mallory's <b>box</b>"]["team_id"].is_null());

    // Each host's tasks: all of them, with states; valid ones carry the
    // host's whole credit.
    let db = coordinator.db();
    let mut team_credit = 0u64;
    for (name, host) in &by_name {
        let id = host["id"].as_u64().unwrap();
        let tasks: Vec<Value> = json(&format!("{http}/api/v1/hosts/{id}/tasks"))
            .as_array()
            .unwrap()
            .clone();
        let sent: u64 = db
            .query_row(
                "SELECT count(*) FROM results WHERE host_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tasks.len() as u64, sent, "{name}");
        let count = |state: &str| tasks.iter().filter(|t| t["state"] == state).count();
        let credit: u64 = tasks.iter().map(|t| t["credit"].as_u64().unwrap()).sum();
        assert_eq!(credit, host["credit"]["total"].as_u64().unwrap(), "{name}");
        for t in &tasks {
            assert_eq!(t["job"], job, "{t}");
            assert!((1..=8).contains(&t["unit"].as_u64().unwrap()), "{t}");
        }
        if name.starts_with("Mallory") {
            // Caught with an invalid result, its copies are voided, each
            // saying why.
            assert!(
                tasks.iter().any(|t| t["state"] == "voided"
                    && t["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("was caught"))),
                "{name}: {tasks:?}"
            );
            assert_eq!((count("valid"), credit), (0, 0), "{name}: {tasks:?}");
        } else {
            team_credit += credit;
        }

        // The host's page shows the same tasks, in the same order.
        let doc = page(&format!("{http}/hosts/{id}"));
        assert_eq!(text(&doc, "#host-name"), *name);
        let rows: Vec<&str> = select(&doc, "#host-tasks tbody tr")
            .iter()
            .map(|r| r.value().attr("data-state").unwrap())
            .collect();
        let states: Vec<&str> = tasks.iter().map(|t| t["state"].as_str().unwrap()).collect();
        assert_eq!(rows, states, "{name}");
        assert_eq!(text(&doc, "#tasks-total"), sent.to_string());
        if *name == "ada-laptop" {
            assert_eq!(
                select(&doc, "#slots")[0].value().attr("data-slots"),
                Some("2")
            );
            assert_eq!(
                text(&doc, "#cpu-model"),
                host["cpu_model"].as_str().unwrap()
            );
            // The team as its founder (whoever said Hello first) spelled it.
            assert_eq!(text(&doc, "#host-team"), host["team"].as_str().unwrap());
            assert_eq!(host["team"].as_str().unwrap().to_lowercase(), "rustaceans");
        }
    }
    assert!(team_credit > 0);

    // One team, whatever the spelling, founded by whoever joined first,
    // totalling its three hosts.
    let teams = json(&format!("{http}/api/v1/teams"));
    assert_eq!(teams.as_array().unwrap().len(), 1, "{teams}");
    let team = &teams[0];
    assert_eq!(team["id"], team_id);
    assert_eq!(team["name"].as_str().unwrap().to_lowercase(), "rustaceans");
    assert_eq!(
        (team["members"].as_u64(), team["hosts"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(team["credit"]["total"], team_credit, "{team}");
    let by_name = json(&format!("{http}/api/v1/teams/RUSTACEANS"));
    assert_eq!(by_name["id"], team_id);
    let members = by_name["members"].as_array().unwrap();
    let ada = members.iter().find(|m| m["name"] == "Ada").unwrap();
    assert_eq!(ada["hosts"].as_array().unwrap().len(), 2, "{ada}");
    let member_total: u64 = members
        .iter()
        .map(|m| m["credit"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(member_total, team_credit);

    // The team's page and the leaderboard say the same.
    let doc = page(&format!("{http}/teams/{team_id}"));
    assert_eq!(text(&doc, "#members-total"), "2");
    assert_eq!(
        select(&doc, "#credit-total")[0].value().attr("data-fuel"),
        Some(team_credit.to_string().as_str())
    );
    let fuel: Vec<u64> = select(&doc, "#members tbody tr td.credit-total")
        .iter()
        .map(|c| c.value().attr("data-fuel").unwrap().parse().unwrap())
        .collect();
    assert_eq!(fuel.len(), 2);
    assert!(fuel[0] >= fuel[1], "members by credit: {fuel:?}");
    let doc = page(&format!("{http}/teams"));
    assert_eq!(text(&doc, "#teams-total"), "1");
    assert_eq!(
        text(&doc, "#teams tbody tr td.name"),
        team["name"].as_str().unwrap()
    );
    // Names are the volunteers' text, escaped: no markup gets through.
    let doc = page(&format!("{http}/hosts"));
    let shown: Vec<String> = select(&doc, "td.host-name")
        .iter()
        .map(|c| c.text().collect::<String>())
        .collect();
    assert!(
        shown.contains(&"Mallory's <b>box</b>".to_string()),
        "{shown:?}"
    );
    assert!(select(&doc, "td.host-name b").is_empty());
    let (status, _) = get(&format!("{http}/teams/no-such-team"));
    assert_eq!(status, 404);
}
