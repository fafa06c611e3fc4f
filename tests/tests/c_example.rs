//! A researcher needs no Rust: the C example, compiled to wasm32-wasi with
//! Debian's clang and wasi-libc, runs on the grid and every validated
//! output equals the native C build's.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use peergrid_tests::{Coordinator, collatz_c};

#[test]
fn the_c_example_runs_on_the_grid_like_native_c() {
    let (wasm, native) = collatz_c();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let _workers = coordinator.workers(dir.path(), "w", 2).unwrap();
    let job_dir = dir.path().join("collatz");
    std::fs::create_dir_all(job_dir.join("inputs")).unwrap();
    let units: Vec<String> = (0..6u64)
        .map(|i| format!("{} 20000", 1 + i * 20_000))
        .collect();
    for (i, u) in units.iter().enumerate() {
        std::fs::write(job_dir.join(format!("inputs/unit-{i:04}.txt")), u).unwrap();
    }
    let spec = job_dir.join("job.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"collatz (C)\"\nmodule = {:?}\nquorum = 2\nmemory_mb = 16\n\n[inputs]\ndir = \"inputs\"\n",
            wasm.to_string_lossy()
        ),
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let s = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(s["validated"], 6, "{s}");
    for row in coordinator.dataset(job).unwrap() {
        let name = row["name"].as_str().unwrap();
        let input = std::fs::read(job_dir.join("inputs").join(name)).unwrap();
        let mut child = Command::new(&native)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let expected = child.wait_with_output().unwrap().stdout;
        assert_eq!(
            row["output"].as_str().unwrap().as_bytes(),
            &expected[..],
            "unit {name}"
        );
    }
}
