//! Why a unit failed, end to end: a module that panics on one input (it
//! writes a long stderr, then a panic message, then traps as Rust's
//! `panic = "abort"` does on wasm) runs on a real worker; `peergrid job
//! logs` shows the panic message from the end of its stderr, bounded, and
//! the dashboard's failed-units page shows it escaped.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use peergrid_tests::{Coordinator, Worker, job_spec};
use serde_json::Value;

/// Panics on the unit whose input is `unit 1`: 200 lines of dots (12 800
/// bytes) on stderr, then the panic message (with markup in it), then `unreachable`.
/// Other units print `ok`.
const PANICS_ON_UNIT_1: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "...............................................................\n")
  (data (i32.const 512) "thread 'main' panicked at src/main.rs:7:9:\nbad input <script>alert(1)</script>\n")
  (data (i32.const 1024) "ok\n")
  (func $out (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (local $i i32)
    (i32.store (i32.const 16) (i32.const 2048))
    (i32.store (i32.const 20) (i32.const 64))
    (drop (call $read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
    ;; "unit 1": the byte after "unit " is '1'
    (if (i32.eq (i32.load8_u (i32.const 2053)) (i32.const 49))
      (then
        (loop $noise
          (call $out (i32.const 2) (i32.const 256) (i32.const 64))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $noise (i32.lt_u (local.get $i) (i32.const 200))))
        (call $out (i32.const 2) (i32.const 512) (i32.const 79))
        unreachable))
    (call $out (i32.const 1) (i32.const 1024) (i32.const 3))))"#;

const PANIC_LINE: &str = "thread 'main' panicked at src/main.rs:7:9:";
const PANIC_MESSAGE: &str = "bad input <script>alert(1)</script>";

fn stdout_of(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

#[test]
fn job_logs_show_the_panic_message_from_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let _worker =
        Worker::start(&coordinator.join, &dir.path().join("w"), &["--cores", "1"]).unwrap();
    let module = dir.path().join("panics.wasm");
    std::fs::write(&module, wat::parse_str(PANICS_ON_UNIT_1).unwrap()).unwrap();
    // One copy per unit: the panicking unit fails on its first error.
    let settings = "quorum = 1\nmax_error_results = 1\nfuel = 100_000_000\nmemory_mb = 16";
    let spec = job_spec(dir.path(), "panics", &module, 3, settings).unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(
        (status["validated"].as_u64(), status["failed"].as_u64()),
        (Some(2), Some(1)),
        "{status}"
    );
    let failed = status["failed_units"][0]["unit"].as_u64().unwrap();
    let job_arg = job.to_string();

    // The text: the worker's error and, below it, the end of stderr.
    let text = stdout_of(coordinator.cli(&["job", "logs", &job_arg]));
    assert!(
        text.contains(&format!("failed unit {failed} (unit-0001)")),
        "{text}"
    );
    assert!(text.contains("unreachable"), "{text}");
    assert!(text.contains(&format!("| {PANIC_LINE}\n")), "{text}");
    assert!(text.contains(&format!("| {PANIC_MESSAGE}\n")), "{text}");

    // The JSON: the stderr's end, bounded, the panic message last.
    let json = stdout_of(coordinator.cli(&["job", "logs", &job_arg, "--json"]));
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{json}");
    let stderr = lines[0]["last_error"]["stderr"].as_str().unwrap();
    assert!(
        stderr.ends_with(&format!("{PANIC_LINE}\n{PANIC_MESSAGE}")),
        "{stderr}"
    );
    assert!(
        stderr.len() <= 4096 && stderr.starts_with("...."),
        "{} bytes",
        stderr.len()
    );

    // One unit: its every error result.
    let unit = stdout_of(coordinator.cli(&["job", "logs", &job_arg, &failed.to_string()]));
    assert!(unit.contains("1 error results"), "{unit}");
    assert!(unit.contains(PANIC_MESSAGE), "{unit}");
    let unit =
        stdout_of(coordinator.cli(&["job", "logs", &job_arg, &failed.to_string(), "--json"]));
    let unit: Value = serde_json::from_str(&unit).unwrap();
    assert_eq!(unit["state"], "failed");
    assert!(
        unit["errors"][0]["stderr"]
            .as_str()
            .unwrap()
            .ends_with(PANIC_MESSAGE)
    );
    // A unit the job does not have is a clear error.
    let out = coordinator.cli(&["job", "logs", &job_arg, "999999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no unit 999999"));

    // The dashboard: linked from the job page, the message escaped.
    let (code, page) = get(&format!("{}/jobs/{job}", coordinator.http));
    assert_eq!(code, 200);
    assert!(page.contains(&format!("/jobs/{job}/failed")), "{page}");
    let (code, page) = get(&format!("{}/jobs/{job}/failed", coordinator.http));
    assert_eq!(code, 200);
    assert!(
        page.contains("bad input &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(
        page.contains("thread &#39;main&#39; panicked") || page.contains("thread 'main' panicked"),
        "{page}"
    );
}
