//! What a volunteer meets in daily use, with a real coordinator and real
//! worker processes on loopback: a join string with a wrong certificate
//! fingerprint stops the worker with what to do, instead of "connecting"
//! forever; work given back (`abort`, `detach`) goes to another worker at
//! once instead of waiting out its deadline, and the event log
//! (`peergrid-worker log`) tells the story; `pause --for` ends by itself,
//! also across a restart.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use peergrid_tests::{Coordinator, Worker, bin, chain_job, wait_for};

/// Rounds per step of the chain jobs: a few milliseconds a step at full
/// speed, so a 300-step unit takes a second or two, and minutes on a
/// worker computing 1 % of the time.
const ROUNDS: u64 = 1_000_000;

/// A worker that holds work for minutes: one slot at 1 % CPU time.
const SLOW: [&str; 4] = ["--cores", "1", "--cpu-time-percent", "1"];

/// The host keys that agreed on each row of the job's dataset.
fn dataset_hosts(coordinator: &Coordinator, job: u64) -> Vec<String> {
    coordinator
        .dataset(job)
        .unwrap()
        .iter()
        .flat_map(|row| {
            row["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

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

/// Before: a task stayed with the worker until its deadline (here 10
/// minutes). Now `abort` stops the running task and gives it back, and
/// another worker computes the unit at once.
#[test]
fn an_aborted_task_goes_to_another_worker_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let spec = chain_job(
        dir.path(),
        "long",
        &[format!("300 {ROUNDS} 7")],
        "quorum = 1\ndeadline_secs = 600",
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let mut args = SLOW.to_vec();
    args.extend(["--buffer-tasks", "0"]);
    let slow = Worker::start(&coordinator.join, &dir.path().join("slow"), &args).unwrap();
    let unit = wait_for(
        "the slow worker to run the unit",
        Duration::from_secs(30),
        || slow.status().ok()?["running"][0]["unit"].as_u64(),
    )
    .unwrap();

    // Status like BOINC Manager's: the time left, from progress and time run.
    // At 1 % a late first tick can nap the task for many seconds before
    // its first step reports progress.
    let eta = wait_for("an ETA for the slow task", Duration::from_secs(90), || {
        slow.status().ok()?["running"][0]["eta_secs"].as_u64()
    })
    .unwrap();
    assert!(eta > 5, "a task at 1 % CPU time has long to go: {eta} s");
    let said = slow.control(&["abort", &unit.to_string()]).unwrap();
    assert!(said.contains("aborted"), "{said}");
    wait_for("the slow worker to let go", Duration::from_secs(10), || {
        let s = slow.status().ok()?;
        (s["running"].as_array()?.is_empty() && s["queued"] == 0).then_some(())
    })
    .unwrap();
    // A unit it does not hold: a clear refusal.
    let refused = slow.control(&["abort", "999999"]).unwrap_err().to_string();
    assert!(
        refused.contains("holds no task of unit 999999"),
        "{refused}"
    );

    let fast = Worker::start(&coordinator.join, &dir.path().join("fast"), &[]).unwrap();
    coordinator
        .wait_finished(job, Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        dataset_hosts(&coordinator, job),
        vec![fast.host_key().unwrap()]
    );

    // The event logs tell the story, newest last.
    let kinds = |w: &Worker| -> Vec<String> {
        w.control(&["log", "--json"])
            .unwrap()
            .lines()
            .map(|l| {
                let e: serde_json::Value = serde_json::from_str(l).unwrap();
                e["kind"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let slow_log = kinds(&slow);
    for (earlier, later) in [
        ("joined", "fetched"),
        ("fetched", "aborted"),
        ("aborted", "given back"),
    ] {
        let at = |k: &str| slow_log.iter().position(|x| x == k);
        assert!(
            at(earlier).is_some() && at(earlier) < at(later),
            "{slow_log:?}"
        );
    }
    wait_for(
        "the fast worker to log its result",
        Duration::from_secs(10),
        || kinds(&fast).contains(&"finished".to_string()).then_some(()),
    )
    .unwrap();
    // The fast worker's claimed credit of the last 24 hours counts the unit.
    wait_for(
        "claimed credit of the last day",
        Duration::from_secs(10),
        || {
            let s = fast.status().ok()?;
            (s["claimed_credit_fuel_last_day"].as_u64()? > 0
                && s["claimed_credit_fuel_last_day"] == s["claimed_credit_fuel"])
                .then_some(())
        },
    )
    .unwrap();
    let one = slow.control(&["log", "-n", "1"]).unwrap();
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(one.contains(&format!("unit {unit}")), "{one}");
}

/// `detach` gives back the running and the queued task, exits, and
/// forgets the project (its key and the state; the host key stays); the
/// units go to another worker at once.
#[test]
fn detach_gives_back_held_work_and_forgets_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let inputs = [format!("300 {ROUNDS} 1"), format!("300 {ROUNDS} 2")];
    let spec = chain_job(
        dir.path(),
        "leave",
        &inputs,
        "quorum = 1\ndeadline_secs = 600",
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let mut args = SLOW.to_vec();
    args.extend(["--buffer-tasks", "1"]);
    let data = dir.path().join("leaving");
    let mut slow = Worker::start(&coordinator.join, &data, &args).unwrap();
    wait_for(
        "the slow worker to hold both units",
        Duration::from_secs(30),
        || {
            let s = slow.status().ok()?;
            (s["running"].as_array()?.len() == 1 && s["queued"] == 1).then_some(())
        },
    )
    .unwrap();

    let said = slow.control(&["detach"]).unwrap();
    assert!(
        said.contains("giving back 2 task(s)") && said.contains("detached"),
        "{said}"
    );
    wait_for("the worker to exit", Duration::from_secs(10), || {
        (!slow.is_running()).then_some(())
    })
    .unwrap();
    assert!(!data.join("project.pub").exists() && !data.join("worker.sqlite").exists());
    assert!(data.join("host.key").exists(), "the host key stays");

    let fast = Worker::start(&coordinator.join, &dir.path().join("fast"), &[]).unwrap();
    coordinator
        .wait_finished(job, Duration::from_secs(60))
        .unwrap();
    let key = fast.host_key().unwrap();
    assert_eq!(dataset_hosts(&coordinator, job), vec![key.clone(), key]);
}

/// Before: `pause` lasted until `resume`, and `--for` was refused. Now a
/// pause for a while shows its end in `status`, outlives a restart, and
/// ends by itself.
#[test]
fn a_pause_for_a_while_survives_a_restart_and_ends_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let data = dir.path().join("pausing");
    let mut worker = Worker::start(&coordinator.join, &data, &[]).unwrap();
    worker.status().unwrap();
    let said = worker.control(&["pause", "--for", "8s"]).unwrap();
    assert!(said.contains("paused for"), "{said}");
    let s = worker.status().unwrap();
    assert_eq!(s["paused_by_user"], true, "{s}");
    let left = s["pause_ends_in_secs"].as_u64().unwrap();
    assert!((1..=8).contains(&left), "{s}");
    let paused_at = Instant::now();

    // A restart keeps the pause and its end.
    worker.terminate(Duration::from_secs(10)).unwrap();
    drop(worker);
    let worker = Worker::start(&coordinator.join, &data, &[]).unwrap();
    let s = worker.status().unwrap();
    if paused_at.elapsed() < Duration::from_secs(7) {
        assert_eq!(s["paused_by_user"], true, "{s}");
        assert!(s["pause_ends_in_secs"].as_u64().unwrap() <= 8, "{s}");
    }
    wait_for(
        "the pause to end by itself",
        Duration::from_secs(20),
        || {
            let s = worker.status().ok()?;
            (s["paused_by_user"] == false && s["suspended"].is_null()).then_some(())
        },
    )
    .unwrap();
    assert!(paused_at.elapsed() >= Duration::from_secs(7));

    // A bad duration is refused by name.
    let refused = worker
        .control(&["pause", "--for", "soon"])
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not a duration"), "{refused}");
}

/// Before: a worker could only be stopped with its tasks held until their
/// deadline. Now `no-more-work` finishes what it holds, reports it, asks for
/// nothing more and exits; no copy stays in progress at the coordinator.
#[test]
fn no_more_work_finishes_the_held_tasks_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let inputs: Vec<String> = (0..8).map(|i| format!("200 {ROUNDS} {i}")).collect();
    let spec = chain_job(
        dir.path(),
        "enough",
        &inputs,
        "quorum = 1\ndeadline_secs = 600",
    )
    .unwrap();
    coordinator.submit(&spec).unwrap();
    let args = ["--cores", "1", "--buffer-tasks", "1"];
    let mut worker = Worker::start(&coordinator.join, &dir.path().join("w"), &args).unwrap();
    wait_for(
        "the worker to hold two tasks",
        Duration::from_secs(30),
        || {
            let s = worker.status().ok()?;
            (s["running"].as_array()?.len() == 1 && s["queued"] == 1).then_some(())
        },
    )
    .unwrap();
    let said = worker.control(&["no-more-work"]).unwrap();
    assert!(said.contains("no more work"), "{said}");
    wait_for(
        "the worker to finish and exit",
        Duration::from_secs(60),
        || (!worker.is_running()).then_some(()),
    )
    .unwrap();
    let key = worker.host_key().unwrap();
    let done = coordinator.results_of(&key, "success").unwrap();
    assert!(
        (2..8).contains(&done),
        "it finished what it held, and stopped: {done}"
    );
    assert_eq!(coordinator.results_of(&key, "in_progress").unwrap(), 0);
    let db = worker.db().unwrap();
    for table in ["tasks", "reports", "returns"] {
        let n: i64 = db
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

/// Before: a preference changed only with a restart (`config` only
/// printed them). Now `config set` writes the file and the running worker
/// applies it at once, an edit of the file within seconds, a broken file
/// is not applied (the event log says why), and a flag on the command
/// line still wins, as `config set` says.
#[test]
fn config_set_applies_to_a_running_worker_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let data = dir.path().join("tuned");
    let worker = Worker::start(&coordinator.join, &data, &["--cores", "1"]).unwrap();
    let file = data.join("test-worker.toml");
    let s = worker.status().unwrap();
    assert_eq!(
        (s["slots"].as_u64(), s["cpu_time_percent"].as_u64()),
        (Some(1), Some(100)),
        "{s}"
    );
    assert_eq!(s["preferences_file"], file.display().to_string(), "{s}");

    let config = file.to_str().unwrap();
    let said = worker
        .control(&[
            "config",
            "set",
            "cpu_time_percent",
            "40",
            "--config",
            config,
        ])
        .unwrap();
    assert!(said.contains("applied to the running worker"), "{said}");
    assert_eq!(worker.status().unwrap()["cpu_time_percent"], 40);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("suspend_cpu_percent = 100"),
        "other keys kept: {text}"
    );

    // The flag --cores 1 wins over the file, and config set says so.
    let said = worker
        .control(&["config", "set", "cores", "3", "--config", config])
        .unwrap();
    assert!(said.contains("flag"), "{said}");
    assert_eq!(worker.status().unwrap()["slots"], 1);

    // A bad value never reaches the file.
    let refused = worker
        .control(&["config", "set", "cpu_time_percent", "0", "--config", config])
        .unwrap_err()
        .to_string();
    assert!(refused.contains("cpu_time_percent"), "{refused}");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("cpu_time_percent = 40")
    );

    // An edit of the file applies within seconds; a broken one is not.
    std::fs::write(&file, "suspend_cpu_percent = 100\ncpu_time_percent = 70\n").unwrap();
    wait_for("the edited file to apply", Duration::from_secs(10), || {
        (worker.status().ok()?["cpu_time_percent"] == 70).then_some(())
    })
    .unwrap();
    std::fs::write(&file, "suspend_cpu_percent = 100\ncpu_time_percent = 0\n").unwrap();
    let log = wait_for(
        "the broken file in the event log",
        Duration::from_secs(10),
        || {
            let log = worker.control(&["log"]).ok()?;
            log.contains("preferences file").then_some(log)
        },
    )
    .unwrap();
    assert!(
        log.contains("cpu_time_percent") && log.contains("stay as they were"),
        "{log}"
    );
    assert!(log.contains("cpu_time_percent: 100 → 40"), "{log}");
    assert_eq!(worker.status().unwrap()["cpu_time_percent"], 70);
}
