//! Crashes: a worker killed mid-task, a coordinator killed with -9.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use peergrid_tests::{Coordinator, JobOptions, Worker, lyapunov_job};

/// A worker killed with tasks in hand: they are reissued after their
/// deadline and the job completes on the other hosts.
#[test]
fn tasks_of_a_killed_worker_are_reissued() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let opts = JobOptions {
        units: 12,
        iterations: 200_000,
        deadline_secs: 4,
        ..JobOptions::default()
    };
    let spec = lyapunov_job(dir.path(), &opts).unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let mut doomed = Worker::start(
        &coordinator.join,
        &dir.path().join("doomed"),
        &["--cores", "2"],
    )
    .unwrap();
    let doomed_key = doomed.host_key().unwrap();
    let start = Instant::now();
    while coordinator.status(job).unwrap()["in_progress"]
        .as_u64()
        .unwrap()
        == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the worker never took a task"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    doomed.kill();
    let _others: Vec<Worker> = coordinator.workers(dir.path(), "w", 2).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(180))
        .unwrap();
    assert_eq!(status["validated"], 12, "{status}");
    let timed_out: i64 = coordinator.results_of(&doomed_key, "timed_out").unwrap();
    assert!(
        timed_out > 0,
        "the killed worker's tasks were not timed out"
    );
}

/// Results acknowledged before `kill -9` of the coordinator are all there
/// after a restart, unchanged, and the job completes.
#[test]
fn coordinator_kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Coordinator::start(dir.path()).unwrap();
    let opts = JobOptions {
        units: 60,
        iterations: 30_000,
        deadline_secs: 30,
        ..JobOptions::default()
    };
    let spec = lyapunov_job(dir.path(), &opts).unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let workers: Vec<Worker> = coordinator.workers(dir.path(), "w", 3).unwrap();
    let start = Instant::now();
    loop {
        let s = coordinator.status(job).unwrap();
        let v = s["validated"].as_u64().unwrap();
        if v >= 10 {
            assert!(
                v < 60,
                "the job finished before the crash; make units heavier"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no progress: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // What the coordinator acknowledged: validated rows and every reported result.
    let before: HashMap<u64, String> = coordinator
        .dataset(job)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r["unit"].as_u64().unwrap(),
                r["output_hash"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let quic = coordinator.quic.clone();
    coordinator.kill();

    // Every result the coordinator acknowledged to a worker is in the
    // database the crash left behind.
    let db = coordinator.db();
    let mut acked = 0;
    for w in &workers {
        let key = hex::decode(w.host_key().unwrap()).unwrap();
        for unit in w.acknowledged().unwrap() {
            let state: String = db
                .query_row(
                    "SELECT r.state FROM results r JOIN hosts h ON h.id = r.host_id
                     WHERE h.public_key = ?1 AND r.unit_id = ?2",
                    rusqlite::params![key, unit],
                    |r| r.get(0),
                )
                .unwrap_or_else(|e| panic!("acknowledged result of unit {unit} lost: {e}"));
            assert!(
                state == "success" || state == "error",
                "unit {unit} is {state}"
            );
            acked += 1;
        }
    }
    assert!(
        acked >= 20,
        "only {acked} acknowledgements seen; the test proved little"
    );
    drop(db);

    coordinator.serve(&quic).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(180))
        .unwrap();
    assert_eq!(status["validated"], 60, "{status}");
    let after: HashMap<u64, String> = coordinator
        .dataset(job)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r["unit"].as_u64().unwrap(),
                r["output_hash"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!before.is_empty());
    for (unit, hash) in &before {
        assert_eq!(
            after.get(unit),
            Some(hash),
            "unit {unit} changed or vanished after the crash"
        );
    }
}

/// SIGTERM stops the coordinator cleanly and a restart serves the same data.
#[test]
fn coordinator_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Coordinator::start(dir.path()).unwrap();
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 3,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let status = coordinator.terminate().unwrap();
    assert!(status.success(), "exit status {status}");
    coordinator.serve("127.0.0.1:0").unwrap();
    assert_eq!(coordinator.status(job).unwrap()["units_total"], 3);
}
