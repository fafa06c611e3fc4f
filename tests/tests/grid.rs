//! The grid end to end: a coordinator, workers and the CLI as separate
//! processes on loopback, running the Lyapunov example.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use peergrid_tests::{
    Coordinator, JobOptions, Worker, bin, chain_job, inputs_by_name, lyapunov_job, lyapunov_native,
};

/// Every unit of a 50-unit, quorum-2 job ends in the dataset with two
/// distinct agreeing hosts and the output the native build computes.
#[test]
fn job_completes_with_outputs_equal_to_native() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let workers: Vec<Worker> = coordinator.workers(dir.path(), "w", 3).unwrap();
    let keys: HashSet<String> = workers.iter().map(|w| w.host_key().unwrap()).collect();
    let spec = lyapunov_job(dir.path(), &JobOptions::default()).unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(status["units_total"], 50);
    assert_eq!(status["validated"], 50, "{status}");
    assert_eq!(status["failed"], 0);

    let rows = coordinator.dataset(job).unwrap();
    assert_eq!(rows.len(), 50);
    let inputs = inputs_by_name(dir.path()).unwrap();
    let mut names = HashSet::new();
    for row in &rows {
        let hosts: HashSet<&str> = row["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert_eq!(hosts.len(), 2, "two distinct agreeing hosts: {row}");
        assert!(
            hosts.iter().all(|h| keys.contains(*h)),
            "hosts are our workers"
        );
        let name = row["name"].as_str().unwrap();
        names.insert(name.to_string());
        let native = lyapunov_native(&inputs[name]).unwrap();
        assert_eq!(
            row["output"].as_str().unwrap().as_bytes(),
            &native[..],
            "unit {name}"
        );
        assert!(row["fuel"].as_u64().unwrap() > 0);
        assert_eq!(
            row["input_hash"].as_str().unwrap(),
            peergrid_proto::Hash::of(&inputs[name]).to_hex()
        );
    }
    assert_eq!(names.len(), 50, "every unit appears once");

    // The CSV export has the same rows.
    let csv = coordinator.cli(&["results", "export", &job.to_string(), "--format", "csv"]);
    assert!(csv.status.success());
    let text = String::from_utf8(csv.stdout).unwrap();
    assert!(text.starts_with(
        "job,unit,name,input_hash,module_hash,output_hash,hosts,engines,fuel,validated_ms,output\n"
    ));

    // Resubmitting the same job uploads nothing: every blob is content-addressed.
    let again = coordinator.cli(&["job", "submit", &spec.to_string_lossy()]);
    assert!(again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("uploaded 0 blobs"), "{said}");
}

/// A host that returns wrong outputs never enters the dataset and every
/// unit still ends with the correct output.
#[test]
fn a_cheating_host_never_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let cheater = Worker::start(
        &coordinator.join,
        &dir.path().join("cheater"),
        &["--cores", "2", "--simulate-fault", "wrong-output"],
    )
    .unwrap();
    let cheater_key = cheater.host_key().unwrap();
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 30,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    // Let the cheater grab work first, then bring honest hosts.
    std::thread::sleep(Duration::from_millis(1500));
    let _honest: Vec<Worker> = coordinator.workers(dir.path(), "h", 2).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(status["validated"], 30, "{status}");

    let inputs = inputs_by_name(dir.path()).unwrap();
    for row in coordinator.dataset(job).unwrap() {
        let hosts: Vec<&str> = row["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert!(
            !hosts.contains(&cheater_key.as_str()),
            "cheater among agreeing hosts: {row}"
        );
        let native = lyapunov_native(&inputs[row["name"].as_str().unwrap()]).unwrap();
        assert_eq!(row["output"].as_str().unwrap().as_bytes(), &native[..]);
    }
    // The test means something only if the cheater did report results.
    // Once caught, its results are voided (docs/validation.md).
    let cheats: i64 = coordinator.results_of(&cheater_key, "success").unwrap()
        + coordinator.results_of(&cheater_key, "voided").unwrap();
    assert!(
        cheats > 0,
        "the cheater reported no result; the test proved nothing"
    );
}

/// Replicas from hosts whose NaN bits differ (simulated: another
/// architecture) disagree; the coordinator re-runs the unit with
/// canonical NaNs instead of failing it, and the job completes with the
/// right outputs.
#[test]
fn cross_architecture_disagreement_is_resolved_with_canonical_nans() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 6,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let _native_arch =
        Worker::start(&coordinator.join, &dir.path().join("a"), &["--cores", "1"]).unwrap();
    let foreign = Worker::start(
        &coordinator.join,
        &dir.path().join("b"),
        &["--cores", "1", "--simulate-fault", "foreign-arch"],
    )
    .unwrap();
    let foreign_key = foreign.host_key().unwrap();
    // Wait until both hosts reported every unit: each unit now has two
    // disagreeing results from different engines.
    let start = std::time::Instant::now();
    loop {
        let n: i64 = coordinator
            .db()
            .query_row(
                "SELECT count(*) FROM results WHERE state = 'success'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if n == 12 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {n} results"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(coordinator.status(job).unwrap()["validated"], 0);
    let _c = Worker::start(&coordinator.join, &dir.path().join("c"), &["--cores", "1"]).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(60))
        .unwrap();
    assert_eq!(status["validated"], 6, "{status}");
    let inputs = inputs_by_name(dir.path()).unwrap();
    for row in coordinator.dataset(job).unwrap() {
        let hosts: Vec<&str> = row["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert!(!hosts.contains(&foreign_key.as_str()));
        let engines = row["engines"].to_string();
        assert!(
            engines.contains("nancanon"),
            "the tie-breaker ran with canonical NaNs: {engines}"
        );
        let native = lyapunov_native(&inputs[row["name"].as_str().unwrap()]).unwrap();
        assert_eq!(row["output"].as_str().unwrap().as_bytes(), &native[..]);
    }
}

/// `peergrid verify` re-runs a dataset row's unit locally and confirms it;
/// a row whose output hash was altered in the store is caught.
#[test]
fn verify_reruns_a_unit_and_catches_an_altered_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Coordinator::start(dir.path()).unwrap();
    let _workers = coordinator.workers(dir.path(), "w", 2).unwrap();
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 3,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    coordinator
        .wait_finished(job, Duration::from_secs(60))
        .unwrap();
    let rows = coordinator.dataset(job).unwrap();
    let (a, b) = (
        rows[0]["unit"].as_u64().unwrap(),
        rows[1]["unit"].as_u64().unwrap(),
    );

    let out = coordinator.cli(&["verify", &job.to_string(), &a.to_string()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("verified"), "{said}");
    // A unit the job has no row for: the server's reason, not a guess.
    let out = coordinator.cli(&["verify", &job.to_string(), "999999"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("no validated row for unit 999999"), "{said}");

    // Give unit a the output of unit b, as a corrupted or forged store would.
    let quic = coordinator.quic.clone();
    coordinator.kill();
    let db = rusqlite::Connection::open(coordinator.data.join("coordinator.sqlite")).unwrap();
    db.execute(
        "UPDATE dataset SET output_hash = (SELECT output_hash FROM dataset WHERE unit_id = ?2) WHERE unit_id = ?1",
        [a, b],
    )
    .unwrap();
    drop(db);
    coordinator.serve(&quic).unwrap();
    let out = coordinator.cli(&["verify", &job.to_string(), &a.to_string()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("MISMATCH"), "{said}");
}

/// `peergrid-coordinator reissue` as the test's operator runs it.
fn reissue(coordinator: &Coordinator, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin("peergrid-coordinator"))
        .arg("reissue")
        .arg("--data")
        .arg(&coordinator.data)
        .args(args)
        .output()
        .unwrap()
}

/// Before: a unit that failed stayed failed (only a new job could compute
/// it again). Now the operator reissues failed units, which a running
/// coordinator hands out at once with their whole budget again, the
/// earlier copies kept on record; validated units, and units or jobs that
/// do not exist, are refused by name.
#[test]
fn the_operator_reissues_failed_units() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    // Two copies and no room for a third: a cheater and an honest host
    // disagree on every unit, which fails.
    let inputs: Vec<String> = (0..3).map(|i| format!("20 1000 {i}")).collect();
    let spec = chain_job(
        dir.path(),
        "reissued",
        &inputs,
        "quorum = 2\nmax_total_results = 2",
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let mut cheater = Worker::start(
        &coordinator.join,
        &dir.path().join("cheater"),
        &["--cores", "1", "--simulate-fault", "wrong-output"],
    )
    .unwrap();
    let _honest =
        Worker::start(&coordinator.join, &dir.path().join("h0"), &["--cores", "1"]).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(status["failed"], 3, "{status}");
    cheater.terminate(Duration::from_secs(10)).unwrap();

    let missing = reissue(&coordinator, &["999", "--failed"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no job 999"));
    let out = reissue(
        &coordinator,
        &[&job.to_string(), "--failed", "--reason", "cheater gone"],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("3 of 3 unit(s)"), "{said}");
    // Earlier copies stay on record, no longer counted.
    let retired: i64 = coordinator
        .db()
        .query_row(
            "SELECT count(*) FROM retired_results WHERE reason = 'cheater gone'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(retired, 6);

    // A second honest host: every unit now validates, the cheater's
    // copies left out.
    let _second =
        Worker::start(&coordinator.join, &dir.path().join("h1"), &["--cores", "1"]).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(
        (status["validated"].as_u64(), status["failed"].as_u64()),
        (Some(3), Some(0)),
        "{status}"
    );

    // Validated units keep their rows; unknown units are named.
    let refused = reissue(&coordinator, &[&job.to_string(), "2", "9"]);
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "nothing was reissued: {said}");
    assert!(
        said.contains("unit 2: left alone: it is validated"),
        "{said}"
    );
    assert!(said.contains("has no unit 9"), "{said}");
    assert_eq!(coordinator.status(job).unwrap()["validated"], 3);
    assert_eq!(coordinator.dataset(job).unwrap().len(), 3);
}
