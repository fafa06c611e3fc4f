//! A researcher cancels a job while a real worker runs two of its units:
//! the worker is told at its next exchange and stops them, the job's
//! validated rows stay in the dataset, `peergrid job status --wait` ends
//! with the cancelled exit code, and a second job's units are numbered
//! from 1 (CLI, API, export, `verify`).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use peergrid_tests::{Coordinator, Worker, chain_job, job_spec, wait_for};
use serde_json::Value;

/// Reads stdin; loops forever when the input's sixth byte is '0' or '1'
/// ("unit 0", "unit 1"), else prints `ok` and the input.
const SLOW_ON_UNITS_0_AND_1: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "ok ")
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 2048))
    (i32.store (i32.const 20) (i32.const 64))
    (drop (call $read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
    (if (i32.lt_u (i32.load8_u (i32.const 2053)) (i32.const 50))
      (then (loop $spin (br $spin))))
    ;; Two writes: a vectored write may take only its first buffer.
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
    (i32.store (i32.const 0) (i32.const 2048))
    (i32.store (i32.const 4) (i32.load (i32.const 24)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))))"#;

fn stdout_of(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn running(worker: &Worker) -> usize {
    worker.status().map_or(usize::MAX, |s| {
        s["running"].as_array().map_or(usize::MAX, Vec::len)
    })
}

#[test]
fn a_cancelled_job_stops_on_the_worker_and_keeps_its_validated_rows() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    // Three slots: two spin, the third runs the quick units.
    let worker =
        Worker::start(&coordinator.join, &dir.path().join("w"), &["--cores", "3"]).unwrap();
    let module = dir.path().join("slow.wasm");
    std::fs::write(&module, wat::parse_str(SLOW_ON_UNITS_0_AND_1).unwrap()).unwrap();
    let settings = "quorum = 1\nfuel = 1_000_000_000_000\nmemory_mb = 16\ndeadline_secs = 3600";
    let spec = job_spec(dir.path(), "slow", &module, 4, settings).unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let job_arg = job.to_string();

    // Units 3 and 4 (inputs "unit 2", "unit 3") validate; 1 and 2 spin.
    wait_for(
        "two units validated and two running",
        Duration::from_secs(60),
        || {
            let s = coordinator.status(job).ok()?;
            (s["validated"] == 2 && running(&worker) == 2).then_some(())
        },
    )
    .unwrap();

    // The token alone does not cancel: the key that signed the job must.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let forged = agent
        .post(format!("{}/api/v1/jobs/{job}/cancel", coordinator.http))
        .header("Authorization", &format!("Bearer {}", coordinator.token))
        .send_json(serde_json::json!({
            "signature": peergrid_proto::signing::sign_cancel(
                &stranger,
                &coordinator.researcher().unwrap().endorsement,
                job
            )
        }))
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(coordinator.status(job).unwrap()["cancelled"], 0);

    let said = stdout_of(coordinator.cli(&["job", "cancel", &job_arg]));
    assert!(
        said.contains(&format!("job {job} cancelled: 2 unfinished units"))
            && said.contains("2 validated rows"),
        "{said}"
    );
    // Told at its next exchange (it exchanges at least every few
    // seconds while it holds work), the worker stops both runs.
    wait_for(
        "the worker to stop the cancelled tasks",
        Duration::from_secs(30),
        || (running(&worker) == 0).then_some(()),
    )
    .unwrap();
    let log = worker.log_lines().unwrap().join("\n");
    assert_eq!(
        log.matches("the coordinator cancelled a held task").count(),
        2,
        "{log}"
    );
    let status = coordinator.status(job).unwrap();
    assert_eq!(
        (
            &status["finished"],
            &status["cancelled"],
            &status["validated"]
        ),
        (&Value::Bool(true), &Value::from(2), &Value::from(2)),
        "{status}"
    );
    assert!(status["cancelled_ms"].as_u64().is_some(), "{status}");
    // Nothing of the job is in progress any more.
    let in_progress: i64 = coordinator
        .db()
        .query_row(
            "SELECT count(*) FROM results r JOIN units u ON u.id = r.unit_id
             WHERE u.job_id = ?1 AND r.state = 'in_progress'",
            [job],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(in_progress, 0);

    // `--wait` on a cancelled job ends at once with its own exit code.
    let waited = coordinator.cli(&["job", "status", &job_arg, "--wait"]);
    assert_eq!(waited.status.code(), Some(3), "{waited:?}");
    assert!(
        String::from_utf8_lossy(&waited.stdout).contains("2 cancelled (cancelled)"),
        "{waited:?}"
    );
    // Cancelling again says so and changes nothing.
    let again = stdout_of(coordinator.cli(&["job", "cancel", &job_arg]));
    assert!(again.contains("already cancelled"), "{again}");

    // The dataset keeps the two validated rows, numbered within the job.
    let rows = coordinator.dataset(job).unwrap();
    let mut units: Vec<u64> = rows.iter().map(|r| r["unit"].as_u64().unwrap()).collect();
    units.sort_unstable();
    assert_eq!(units, vec![3, 4], "{rows:?}");

    // A second job: its units are 1 and 2, not 5 and 6, everywhere.
    let quick = dir.path().join("quick");
    std::fs::create_dir_all(&quick).unwrap();
    std::fs::write(quick.join("lines.jsonl"), "unit 7\nunit 8\n").unwrap();
    std::fs::write(
        quick.join("job.toml"),
        format!(
            "name = \"quick\"\nmodule = {:?}\n{settings}\n[inputs]\njsonl = \"lines.jsonl\"\n",
            module.to_string_lossy()
        ),
    )
    .unwrap();
    let second = coordinator.submit(&quick.join("job.toml")).unwrap();
    let finished = coordinator.cli(&["job", "status", &second.to_string(), "--wait"]);
    assert_eq!(finished.status.code(), Some(0), "{finished:?}");
    let rows = coordinator.dataset(second).unwrap();
    let mut units: Vec<(u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["unit"].as_u64().unwrap(),
                r["output"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    units.sort();
    assert_eq!(
        units,
        vec![(1, "ok unit 7".to_string()), (2, "ok unit 8".to_string())]
    );
    let verified = coordinator.cli(&["verify", &second.to_string(), "2"]);
    assert!(verified.status.success(), "{verified:?}");
    let row: Value = ureq::get(format!(
        "{}/api/v1/jobs/{second}/dataset/1",
        coordinator.http
    ))
    .call()
    .unwrap()
    .body_mut()
    .read_json()
    .unwrap();
    assert_eq!(row["unit"], 1, "{row}");
}

/// A worker finished a unit while the coordinator was down, and the job
/// was cancelled before the worker could report (it could not reach the
/// coordinator's new address). Before (`74f93a5^`), the restarted
/// coordinator had loaded no unit, so it left the report on the
/// cancelled unit unacknowledged, and the worker sent it again forever;
/// now the feeder knows every active unit is loaded and the report is
/// refused, so the worker settles it.
#[test]
fn a_report_on_a_unit_cancelled_while_the_worker_was_away_is_settled() {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Coordinator::start(dir.path()).unwrap();
    let settings = "quorum = 1\ndeadline_secs = 3600";
    let spec = chain_job(
        dir.path(),
        "away",
        &["3000 1000000 7".to_string()],
        settings,
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let worker =
        Worker::start(&coordinator.join, &dir.path().join("w"), &["--cores", "1"]).unwrap();
    wait_for("the unit to run", Duration::from_secs(60), || {
        (running(&worker) == 1).then_some(())
    })
    .unwrap();
    let quic = coordinator.quic.clone();
    coordinator.terminate().unwrap();
    wait_for("the result, held", Duration::from_secs(180), || {
        (worker.status().ok()?["pending_uploads"] == 1).then_some(())
    })
    .unwrap();

    // Elsewhere, where the worker does not look, the job is cancelled.
    coordinator.serve("127.0.0.1:0").unwrap();
    let said = stdout_of(coordinator.cli(&["job", "cancel", &job.to_string()]));
    assert!(said.contains("1 unfinished units"), "{said}");
    coordinator.terminate().unwrap();
    coordinator.serve(&quic).unwrap();

    wait_for("the report to be settled", Duration::from_secs(60), || {
        (worker.status().ok()?["pending_uploads"] == 0).then_some(())
    })
    .unwrap();
    let status = coordinator.status(job).unwrap();
    assert_eq!(
        (status["cancelled"].as_u64(), status["validated"].as_u64()),
        (Some(1), Some(0)),
        "{status}"
    );
}
