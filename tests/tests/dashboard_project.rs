//! The project's face through the real binaries: `peergrid-coordinator
//! init --name --description --url` writes it, `project show` prints it,
//! `project set` changes it and a running `serve` shows the change on its
//! pages within seconds; a bad `--url` is refused and changes nothing.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use peergrid_tests::{Coordinator, bin, wait_for};
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

fn coordinator(args: &[&str]) -> std::process::Output {
    Command::new(bin("peergrid-coordinator"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn init_names_the_project_and_project_set_changes_a_running_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    // `init` with the project's face.
    let data = dir.path().join("named");
    let out = coordinator(&[
        "init",
        "--json",
        "--data",
        data.to_str().unwrap(),
        "--name",
        "Prime Hunt",
        "--description",
        "We count primes.",
        "--url",
        "https://example.org/primes",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = coordinator(&["project", "show", "--data", data.to_str().unwrap()]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["name"], "Prime Hunt");
    assert_eq!(shown["url"], "https://example.org/primes");

    // A running coordinator picks up `project set`.
    let c = Coordinator::start(dir.path()).unwrap();
    let (status, home) = get(&c.http);
    assert_eq!(status, 200);
    assert!(home.contains("<title>peergrid</title>"), "{home}");
    let out = coordinator(&[
        "project",
        "set",
        "--data",
        c.data.to_str().unwrap(),
        "--name",
        "Pi <Estimate>",
        "--operator",
        "The Monte Carlo Lab",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let about = wait_for("the renamed project", Duration::from_secs(15), || {
        let (_, page) = get(&format!("{}/about", c.http));
        page.contains("<title>About · Pi &lt;Estimate&gt;</title>")
            .then_some(page)
    })
    .unwrap();
    assert!(about.contains("The Monte Carlo Lab"));
    assert!(about.contains(&format!(
        "peergrid-worker install --join '{}'",
        c.join.replace('&', "&amp;")
    )));
    let v: Value = serde_json::from_str(&get(&format!("{}/api/v1/project", c.http)).1).unwrap();
    assert_eq!(v["name"], "Pi <Estimate>");

    // A bad address is refused, and nothing changes.
    let out = coordinator(&[
        "project",
        "set",
        "--data",
        c.data.to_str().unwrap(),
        "--url",
        "javascript:alert(1)",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--url must start with https://"), "{err}");
    let out = coordinator(&["project", "show", "--data", c.data.to_str().unwrap()]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (shown["name"].as_str(), shown["url"].as_str()),
        (Some("Pi <Estimate>"), Some(""))
    );
}
