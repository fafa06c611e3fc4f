//! What a volunteer meets in daily use, with a real coordinator and real
//! worker processes on loopback: a join string with a wrong certificate
//! fingerprint stops the worker with what to do, instead of "connecting"
//! forever.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use peergrid_tests::{Coordinator, Worker, bin, wait_for};

/// A `peergrid-worker run` started here, killed if the test fails first.
struct Run(Child);

impl Run {
    /// `peergrid-worker run --join JOIN --data DATA` with stderr in
    /// `DATA/run.log`, never suspending for other test processes' load.
    fn start(join: &str, data: &Path) -> Run {
        std::fs::create_dir_all(data).unwrap();
        let config = data.join("test-worker.toml");
        std::fs::write(&config, "suspend_cpu_percent = 100\n").unwrap();
        let log = std::fs::File::create(data.join("run.log")).unwrap();
        let child = Command::new(bin("peergrid-worker"))
            .env("PEERGRID_CONFIG", &config)
            .env("PEERGRID_BIND", "127.0.0.1")
            .args(["run", "--no-progress", "--join", join, "--data"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Run(child)
    }

    /// Waits at most `timeout` for the process to exit.
    fn exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        wait_for("the worker to exit", timeout, || {
            self.0.try_wait().ok().flatten()
        })
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `join` with the first hex digit of its certificate fingerprint changed.
fn wrong_fingerprint(join: &str) -> String {
    let (head, tail) = join.split_once("#sha256:").unwrap();
    let mut digits: Vec<char> = tail.chars().collect();
    digits[0] = if digits[0] == '0' { '1' } else { '0' };
    format!("{head}#sha256:{}", digits.into_iter().collect::<String>())
}

/// Before: the worker retried for ever, showing "connecting". Now it stops
/// after a few attempts, exits with 78 (which the service unit does not
/// restart on) and a message naming the cause and what to do; `status`
/// says why it is not running; with the right join string it connects and
/// the reason is gone.
#[test]
fn a_wrong_certificate_fingerprint_stops_the_worker_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let data = dir.path().join("volunteer");
    let mut run = Run::start(&wrong_fingerprint(&coordinator.join), &data);
    let started = Instant::now();
    let status = run.exit(Duration::from_secs(30)).unwrap();
    let log = std::fs::read_to_string(data.join("run.log")).unwrap();
    assert_eq!(status.code(), Some(78), "{log}");
    for expected in [
        "the coordinator's certificate",
        "does not match the join string's fingerprint",
        "get a fresh join string from the project",
    ] {
        assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );

    // `status` tells why no worker answers.
    let out = Command::new(bin("peergrid-worker"))
        .args(["status", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("the worker stopped")
            && said.contains("does not match the join string's fingerprint"),
        "{said}"
    );

    // The right join string: connected, and the reason is forgotten.
    let worker = Worker::start(&coordinator.join, &data, &[]).unwrap();
    wait_for("the worker to connect", Duration::from_secs(30), || {
        let s = worker.status().ok()?;
        (s["connection"] == "connected").then_some(())
    })
    .unwrap();
    let s = worker.status().unwrap();
    assert!(s["permanent_error"].is_null(), "{s}");
    assert_eq!(peergrid_worker::state::stopped_for(&data), None);
}
