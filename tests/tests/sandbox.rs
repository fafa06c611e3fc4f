//! The sandbox seen from outside: hostile modules are contained with a
//! clear error while the same worker keeps computing, and a module that
//! reads floats, NaNs, clocks and randomness gives bitwise-identical
//! results on differently configured hosts.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use peergrid_tests::{Coordinator, JobOptions, Worker, job_spec, lyapunov_job, probe_wasm};

/// Hostile modules in WAT; each is valid wasm importing only WASI, within
/// the workers' fixed limits, so it passes submission and reaches a worker.
/// The loops on growth and host calls spend most of their time in host
/// code, which fuel charges for, so they end on fuel too, well within the
/// deadline.
const HOSTILE: &[(&str, &str, &str)] = &[
    (
        "infinite-loop",
        r#"(module (func (export "_start") (loop (br 0))))"#,
        "fuel",
    ),
    (
        "memory-bomb",
        r#"(module (memory 1)
             (func (export "_start") (local $i i32)
               (loop
                 (drop (memory.grow (i32.const 256)))
                 ;; write into the newest page, whether growth worked or not
                 (i32.store (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 4)) (i32.const 1))
                 (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br_if 0 (i32.lt_u (local.get $i) (i32.const 100000))))
               ;; growth was capped: touch far beyond the cap
               (i32.store (i32.const 0x7ffffff0) (i32.const 1))))"#,
        "out of bounds",
    ),
    (
        "deep-recursion",
        r#"(module (func $f (call $f)) (func (export "_start") (call $f)))"#,
        "stack overflow",
    ),
    (
        "huge-output",
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 2)
             (func (export "_start")
               (i32.store (i32.const 0) (i32.const 64))
               (i32.store (i32.const 4) (i32.const 65536))
               (loop (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br 0))))"#,
        "output exceeds",
    ),
    (
        "table-grow-loop",
        r#"(module (table 1 funcref)
             (func (export "_start")
               (loop (drop (table.grow (ref.null func) (i32.const 1000000))) (br 0))))"#,
        "fuel",
    ),
    (
        "failing-grow-loop",
        r#"(module (memory 1) (func (export "_start") (loop (drop (memory.grow (i32.const 1024))) (br 0))))"#,
        "fuel",
    ),
    (
        "clock-loop",
        r#"(module
             (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "_start")
               (loop (drop (call $now (i32.const 1) (i64.const 1) (i32.const 8))) (br 0))))"#,
        "fuel",
    ),
    (
        "trapping-start",
        r#"(module (func $s unreachable) (start $s) (func (export "_start")))"#,
        "unreachable",
    ),
];

#[test]
fn hostile_modules_are_contained_and_the_worker_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    // Every hostile unit fails on this one new host, and a new host's small
    // daily quota halves with each failure (docs/security.md): this test is
    // about containment, so it starts the host with a large quota.
    let coordinator =
        Coordinator::start_with(dir.path(), &["--new-host-quota-per-core", "1000000"]).unwrap();
    let mut worker =
        Worker::start(&coordinator.join, &dir.path().join("w"), &["--cores", "1"]).unwrap();
    // One try per unit, one host: a hostile unit fails on its first error.
    let settings =
        "quorum = 1\nmax_error_results = 1\nfuel = 500_000_000\nmemory_mb = 32\ndeadline_secs = 60";
    let mut jobs = Vec::new();
    for (name, wat, expect) in HOSTILE {
        let module = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&module, wat::parse_str(wat).unwrap()).unwrap();
        let spec = job_spec(dir.path(), name, &module, 2, settings).unwrap();
        jobs.push((coordinator.submit(&spec).unwrap(), *name, *expect));
    }
    // Honest work queued behind and between the hostile jobs.
    let honest_dir = dir.path().join("honest");
    std::fs::create_dir_all(&honest_dir).unwrap();
    let spec = lyapunov_job(
        &honest_dir,
        &JobOptions {
            units: 6,
            quorum: 1,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let honest = coordinator.submit(&spec).unwrap();

    for (job, name, expect) in &jobs {
        let s = coordinator
            .wait_finished(*job, Duration::from_secs(120))
            .unwrap();
        assert_eq!(s["failed"], 2, "{name}: {s}");
        for f in s["failed_units"].as_array().unwrap() {
            let reason = f["reason"].as_str().unwrap();
            assert!(
                reason.contains(expect),
                "{name}: expected `{expect}` in: {reason}"
            );
        }
    }
    let s = coordinator
        .wait_finished(honest, Duration::from_secs(120))
        .unwrap();
    assert_eq!(s["validated"], 6, "{s}");
    assert!(
        worker.is_running(),
        "the worker survived every hostile module"
    );
}

#[test]
fn an_import_the_host_lacks_is_refused_at_submission() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let module = dir.path().join("import.wasm");
    let wat = r#"(module (import "env" "nope" (func)) (func (export "_start")))"#;
    std::fs::write(&module, wat::parse_str(wat).unwrap()).unwrap();
    let spec = job_spec(dir.path(), "import", &module, 1, "").unwrap();
    let out = coordinator.cli(&["job", "submit", &spec.to_string_lossy()]);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("env.nope") && msg.contains("422"), "{msg}");
}

/// The probe reads float NaNs, a HashMap's random order, the clocks and
/// random bytes. Run on a 1-slot and a 2-slot host, every unit validates
/// on the first two copies: the outputs were bitwise identical.
#[test]
fn probe_outputs_are_identical_across_hosts_with_different_cores() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let _a = Worker::start(&coordinator.join, &dir.path().join("a"), &["--cores", "1"]).unwrap();
    let _b = Worker::start(&coordinator.join, &dir.path().join("b"), &["--cores", "2"]).unwrap();
    let spec = job_spec(
        dir.path(),
        "probe",
        &probe_wasm(),
        8,
        "quorum = 2\nargs = [\"--flag\", \"x\"]",
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let s = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(s["validated"], 8, "{s}");
    let copies: i64 = coordinator
        .db()
        .query_row("SELECT count(*) FROM results", [], |r| r.get(0))
        .unwrap();
    assert_eq!(copies, 16, "no unit needed a tie-breaker");
    // Randomness is seeded per unit: the outputs differ between units.
    let outputs: HashSet<String> = coordinator
        .dataset(job)
        .unwrap()
        .iter()
        .map(|r| r["output_hash"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outputs.len(), 8);
}

/// The volunteer's memory cap wins over a job's request.
#[test]
fn the_volunteers_memory_cap_bounds_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    // Grows memory by 16 MiB and traps if that is refused.
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "_start")
          (if (i32.eq (memory.grow (i32.const 256)) (i32.const -1)) (then unreachable))))"#;
    let module = dir.path().join("grow.wasm");
    std::fs::write(&module, wat::parse_str(wat).unwrap()).unwrap();
    let settings = "quorum = 1\nmax_error_results = 1\nmemory_mb = 64";

    let mut capped = Worker::start(
        &coordinator.join,
        &dir.path().join("capped"),
        &["--cores", "1", "--max-task-memory-mb", "8"],
    )
    .unwrap();
    let job = coordinator
        .submit(&job_spec(dir.path(), "capped", &module, 1, settings).unwrap())
        .unwrap();
    let s = coordinator
        .wait_finished(job, Duration::from_secs(60))
        .unwrap();
    assert_eq!(s["failed"], 1, "{s}");
    capped.kill();

    let _free = Worker::start(
        &coordinator.join,
        &dir.path().join("free"),
        &["--cores", "1"],
    )
    .unwrap();
    let job = coordinator
        .submit(&job_spec(dir.path(), "free", &module, 1, settings).unwrap())
        .unwrap();
    let s = coordinator
        .wait_finished(job, Duration::from_secs(60))
        .unwrap();
    assert_eq!(s["validated"], 1, "{s}");
}
