//! A job's `metering = "fixed"` end to end: real workers, in process and
//! in runner processes, run its tasks with no fuel counted; agreeing hosts
//! earn the job's declared credit, a host claiming fuel earns nothing, a
//! runaway module is stopped by the deadline on every host, and
//! `peergrid verify` checks a fixed job's row.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use peergrid_tests::{Coordinator, Worker, chain_job, chain_native};

/// Rounds of the chain per step: a few milliseconds.
const ROUNDS: u64 = 1_000_000;
const CREDIT: u64 = 40_000_000;

fn credit_of(coordinator: &Coordinator, key: &str) -> u64 {
    coordinator
        .db()
        .query_row(
            "SELECT credit_total FROM hosts WHERE public_key = ?1",
            [hex::decode(key).unwrap()],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64
}

/// A worker running tasks in process (data in `dir/a`) and one running
/// them in runner processes (`dir/b`), one core each.
fn both_kinds_of_worker(coordinator: &Coordinator, dir: &std::path::Path) -> [Worker; 2] {
    let start = |data: &str, flags: &[&str]| {
        Worker::start(&coordinator.join, &dir.join(data), flags).unwrap()
    };
    [
        start("a", &["--cores", "1", "--in-process"]),
        start("b", &["--cores", "1", "--task-processes"]),
    ]
}

#[test]
fn a_fixed_job_grants_its_declared_credit_on_every_kind_of_worker() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    // The cheater comes first, so it takes copies before the honest hosts.
    let cheater = Worker::start(
        &coordinator.join,
        &dir.path().join("cheater"),
        &["--cores", "1", "--simulate-fault", "inflate-fuel"],
    )
    .unwrap();
    let inputs: Vec<String> = (0..6).map(|i| format!("20 {ROUNDS} {i}")).collect();
    let settings = format!("metering = \"fixed\"\ncredit = {CREDIT}\nquorum = 2");
    let spec = chain_job(dir.path(), "fixed", &inputs, &settings).unwrap();
    let job = coordinator.submit(&spec).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let [in_process, runners] = both_kinds_of_worker(&coordinator, dir.path());
    let status = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(status["validated"], 6, "{status}");

    let honest: HashSet<String> = [&in_process, &runners]
        .iter()
        .map(|w| w.host_key().unwrap())
        .collect();
    let cheater_key = cheater.host_key().unwrap();
    let rows = coordinator.dataset(job).unwrap();
    assert_eq!(rows.len(), 6);
    for row in &rows {
        let hosts: HashSet<String> = row["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_string())
            .collect();
        assert_eq!(hosts, honest, "the two honest workers agree: {row}");
        // The row carries the declared credit, not a measured figure.
        assert_eq!(row["fuel"].as_u64(), Some(CREDIT), "{row}");
        let input = inputs[row["name"].as_str().unwrap()[5..].parse::<usize>().unwrap()].clone();
        assert_eq!(
            row["output"].as_str().unwrap().as_bytes(),
            &chain_native(input.as_bytes()).unwrap()[..],
            "{row}"
        );
    }
    // Each honest worker ran every unit, counting no fuel, in its own
    // fixed engine: the runner's without epoch checks, the in-process one
    // with them.
    let db = coordinator.db();
    let engines: Vec<(String, i64, i64)> = db
        .prepare(
            "SELECT r.engine, count(*), max(r.fuel) FROM results r JOIN hosts h ON h.id = r.host_id
             WHERE r.state = 'success' AND h.public_key != ?1 GROUP BY r.engine ORDER BY r.engine",
        )
        .unwrap()
        .query_map([hex::decode(&cheater_key).unwrap()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(engines.len(), 2, "{engines:?}");
    assert!(engines[0].0.contains("/fixed/epoch-10ms/"), "{engines:?}");
    assert!(engines[1].0.contains("/fixed/runner/"), "{engines:?}");
    assert!(
        engines.iter().all(|(_, n, fuel)| *n == 6 && *fuel == 0),
        "{engines:?}"
    );
    for key in &honest {
        assert_eq!(credit_of(&coordinator, key), 6 * CREDIT);
    }

    // The cheater's claims of fuel were refused, and earned nothing.
    let refused: Vec<String> = db
        .prepare(
            "SELECT r.error FROM results r JOIN hosts h ON h.id = r.host_id
             WHERE h.public_key = ?1 AND r.state = 'error'",
        )
        .unwrap()
        .query_map([hex::decode(&cheater_key).unwrap()], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        !refused.is_empty(),
        "the cheater reported nothing; the test proved nothing"
    );
    assert!(
        refused
            .iter()
            .all(|e| e.contains("exceeds the task's limit of 0")),
        "{refused:?}"
    );
    assert_eq!(credit_of(&coordinator, &cheater_key), 0);

    // `peergrid verify` re-runs a row of a fixed job and checks its output.
    let unit = rows[0]["unit"].as_u64().unwrap().to_string();
    let out = coordinator.cli(&["verify", &job.to_string(), &unit]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("verified"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A module that never ends, in a fixed job (no fuel to run out of): the
/// deadline stops it on every host, in process and in a runner, and the
/// unit fails.
#[test]
fn a_runaway_module_in_a_fixed_job_is_stopped_by_the_deadline_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let _workers = both_kinds_of_worker(&coordinator, dir.path());
    let forever = format!("1000000000 {ROUNDS} 1");
    let settings = "metering = \"fixed\"\ncredit = 1000\nquorum = 2\ndeadline_secs = 2\n\
                    max_error_results = 2\nmax_total_results = 2";
    let spec = chain_job(dir.path(), "runaway", &[forever], settings).unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(90))
        .unwrap();
    assert_eq!(status["failed"], 1, "{status}");
    let db = coordinator.db();
    let errors: Vec<(String, String)> = db
        .prepare("SELECT engine, error FROM results WHERE state = 'error' ORDER BY engine")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get(1)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|(_, e)| e.contains("wall-clock limit of 2000 ms exceeded")),
        "{errors:?}"
    );
    let reason: String = db
        .query_row("SELECT reason FROM units", [], |r| r.get(0))
        .unwrap();
    assert!(reason.contains("2 error results"), "{reason}");
}
