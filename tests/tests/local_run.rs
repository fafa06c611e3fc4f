//! `peergrid run` and `peergrid job submit --dry-run`: the researcher's
//! local checks, which need no server. A local run gives a grid worker's
//! output and fuel for the same unit; a bad module, input or spec is
//! named before anything is uploaded.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use peergrid_tests::{
    Coordinator, JobOptions, bin, job_spec, lyapunov_job, lyapunov_wasm, probe_wasm,
};
use serde_json::Value;

/// The `peergrid` CLI with `server` as its coordinator and no token:
/// nothing here may need either.
fn peergrid(server: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(bin("peergrid"))
        .env("PEERGRID_SERVER", server)
        .env_remove("PEERGRID_TOKEN")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// A server address that refuses connections: nothing listens there.
const NOWHERE: &str = "http://127.0.0.1:9";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A local run of a dataset row's unit (with its job's spec and seed)
/// prints the output the grid's workers agreed on, with the same fuel:
/// for the Lyapunov example, and for the probe, whose output shows its
/// arguments, random bytes and clocks.
#[test]
fn run_gives_the_grid_workers_output_and_fuel() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let _workers = coordinator.workers(dir.path(), "w", 2).unwrap();
    let lyapunov = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 2,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let probe = job_spec(
        dir.path(),
        "probe",
        &probe_wasm(),
        1,
        "args = [\"--flag\", \"x y\"]\nfuel = 5_000_000_000\nmemory_mb = 64",
    )
    .unwrap();
    let jobs = [
        (coordinator.submit(&lyapunov).unwrap(), lyapunov),
        (coordinator.submit(&probe).unwrap(), probe),
    ];
    for (job, spec) in &jobs {
        coordinator
            .wait_finished(*job, Duration::from_secs(90))
            .unwrap();
        let row = &coordinator.dataset(*job).unwrap()[0];
        let (unit, fuel) = (row["unit"].as_u64().unwrap(), row["fuel"].as_u64().unwrap());
        let expected = row["output"].as_str().unwrap();
        let input = spec
            .parent()
            .unwrap()
            .join("inputs")
            .join(row["name"].as_str().unwrap());
        let (job, unit) = (job.to_string(), unit.to_string());
        let seed = ["--job", &job, "--unit", &unit];
        let spec = spec.to_str().unwrap();
        let input = input.to_str().unwrap();

        // Raw output on stdout, the summary on stderr.
        let mut args = vec!["run", "--spec", spec, "--input", input];
        args.extend(seed);
        let out = peergrid(NOWHERE, &args, None);
        let said = text(&out.stderr);
        assert!(out.status.success(), "{said}");
        assert_eq!(text(&out.stdout), expected, "{said}");
        assert!(said.contains(&format!("fuel {fuel},")), "{said}");

        // The same unit from stdin, as one JSON object.
        let mut args = vec!["run", "--spec", spec, "--input", "-", "--json"];
        args.extend(seed);
        let unit_input = std::fs::read(input).unwrap();
        let out = peergrid(NOWHERE, &args, Some(&unit_input));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["ok"], true, "{got}");
        assert_eq!(got["output"], expected, "{got}");
        assert_eq!(got["output_hash"], row["output_hash"], "{got}");
        assert_eq!(got["fuel"], fuel, "{got}");
        // The same configuration but for how a run is interrupted: epoch
        // checks in `peergrid run`, none in the workers' task runners.
        let grid_engine = row["engines"][0].as_str().unwrap();
        assert!(grid_engine.contains("/runner/"), "{grid_engine}");
        assert_eq!(
            got["engine"],
            grid_engine.replace("/runner/", "/epoch-10ms/"),
            "{got}"
        );
    }

    // The probe shows what else a run is given: another seed draws other
    // random bytes, and --args replaces the spec's arguments.
    let (job, spec) = &jobs[1];
    let row = &coordinator.dataset(*job).unwrap()[0];
    let spec = spec.to_str().unwrap();
    let out = peergrid(
        NOWHERE,
        &["run", "--spec", spec, "--seed", "7", "--args", "--other"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let local: Value = serde_json::from_slice(&out.stdout).unwrap();
    let grid: Value = serde_json::from_str(row["output"].as_str().unwrap()).unwrap();
    assert_eq!(local["args"], serde_json::json!(["task", "--other"]));
    assert_eq!(grid["args"], serde_json::json!(["task", "--flag", "x y"]));
    assert_ne!(
        local["random_bytes"], grid["random_bytes"],
        "{local}\n{grid}"
    );
}

/// A module that traps, or exits non-zero, fails the command with the
/// error and its stderr; a file that is not a module is refused by name
/// before anything runs; an input larger than a worker takes is refused.
#[test]
fn run_reports_failures_and_refuses_what_is_not_a_module() {
    let dir = tempfile::tempdir().unwrap();
    let trap = dir.path().join("trap.wasm");
    std::fs::write(
        &trap,
        wat::parse_str(
            r#"(module
                 (import "wasi_snapshot_preview1" "fd_write"
                   (func $write (param i32 i32 i32 i32) (result i32)))
                 (memory (export "memory") 1)
                 (data (i32.const 16) "about to trap\n")
                 (func (export "_start")
                   (i32.store (i32.const 0) (i32.const 16))
                   (i32.store (i32.const 4) (i32.const 14))
                   (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
                   unreachable))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let out = peergrid(NOWHERE, &["run", trap.to_str().unwrap()], None);
    let said = text(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("trap.wasm failed"), "{said}");
    assert!(said.contains("unreachable"), "{said}");
    assert!(said.contains("about to trap"), "{said}");
    assert!(out.stdout.is_empty());

    // The Lyapunov example on a bad unit exits 1 and says why on stderr.
    let wasm = lyapunov_wasm();
    let out = peergrid(
        NOWHERE,
        &["run", wasm.to_str().unwrap(), "--input", "-", "--json"],
        Some(b"not a unit"),
    );
    assert!(!out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["ok"], false, "{got}");
    assert!(
        got["stderr"].as_str().unwrap().contains("lyapunov:"),
        "{got}"
    );

    let not_wasm = dir.path().join("notes.txt");
    std::fs::write(&not_wasm, "hello").unwrap();
    let out = peergrid(NOWHERE, &["run", not_wasm.to_str().unwrap()], None);
    let said = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("notes.txt") && said.contains("not WebAssembly"),
        "{said}"
    );

    let missing = dir.path().join("missing.wasm");
    let out = peergrid(NOWHERE, &["run", missing.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("missing.wasm"));

    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 4 * 1024 * 1024 + 1]).unwrap();
    let out = peergrid(
        NOWHERE,
        &[
            "run",
            wasm.to_str().unwrap(),
            "--input",
            big.to_str().unwrap(),
        ],
        None,
    );
    let said = text(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("big is larger than"), "{said}");
}

/// `--dry-run` on a good job prints its summary and makes no connection
/// at all (the server given listens, and nobody calls); on a bad spec,
/// module or input it names the problem.
#[test]
fn dry_run_checks_a_job_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    // For the researcher's key and endorsement only.
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let key = coordinator.researcher_key.to_str().unwrap().to_string();
    let endorsement = coordinator
        .researcher_endorsement
        .to_str()
        .unwrap()
        .to_string();
    let dry_run = |spec: &Path| {
        peergrid(
            &server,
            &[
                "job",
                "submit",
                spec.to_str().unwrap(),
                "--dry-run",
                "--key",
                &key,
                "--endorsement",
                &endorsement,
            ],
            None,
        )
    };

    let good_dir = dir.path().join("good");
    std::fs::create_dir_all(&good_dir).unwrap();
    let good = lyapunov_job(
        &good_dir,
        &JobOptions {
            units: 3,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let out = dry_run(&good);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(said.contains("3 units"), "{said}");
    assert!(
        said.contains("quorum 2") && said.contains("fuel 10000000000"),
        "{said}"
    );
    assert!(said.contains("signed by \"Test Researcher\""), "{said}");
    assert!(said.contains("nothing was uploaded"), "{said}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "--dry-run connected to the server"
    );
    let jobs = coordinator.cli(&["job", "list"]);
    assert!(jobs.status.success() && jobs.stdout.is_empty());

    // Each fault, named.
    let bad = |name: &str, module: &Path, settings: &str| {
        let spec = job_spec(dir.path(), name, module, 2, settings).unwrap();
        let out = dry_run(&spec);
        assert!(!out.status.success(), "{name}: {}", text(&out.stdout));
        (spec, text(&out.stderr))
    };
    let (_, said) = bad("quorum", &lyapunov_wasm(), "quorum = 0");
    assert!(said.contains("`quorum` must be between 1 and 16"), "{said}");
    let not_wasm = dir.path().join("module.txt");
    std::fs::write(&not_wasm, "hello").unwrap();
    let (_, said) = bad("not-wasm", &not_wasm, "");
    assert!(said.contains("is not a wasm module"), "{said}");
    let importer = dir.path().join("importer.wasm");
    let wasm =
        wat::parse_str(r#"(module (import "env" "open_socket" (func)) (func (export "_start")))"#)
            .unwrap();
    std::fs::write(&importer, wasm).unwrap();
    let (_, said) = bad("importer", &importer, "");
    assert!(said.contains("open_socket"), "{said}");
    let (_, said) = bad("memory", &lyapunov_wasm(), "memory_mb = 100000");
    assert!(said.contains("`memory_mb`"), "{said}");

    let spec = job_spec(dir.path(), "big-input", &lyapunov_wasm(), 1, "").unwrap();
    let big = spec.parent().unwrap().join("inputs/unit-0001");
    std::fs::write(&big, vec![b'x'; 4 * 1024 * 1024 + 1]).unwrap();
    let said = text(&dry_run(&spec).stderr);
    assert!(
        said.contains("input `unit-0001` is 4194305 bytes"),
        "{said}"
    );

    let spec = job_spec(dir.path(), "no-inputs", &lyapunov_wasm(), 1, "").unwrap();
    std::fs::remove_dir_all(spec.parent().unwrap().join("inputs")).unwrap();
    let said = text(&dry_run(&spec).stderr);
    assert!(
        said.contains("cannot use") && said.contains("inputs"),
        "{said}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "--dry-run connected to the server"
    );
}
