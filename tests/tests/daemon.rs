//! The volunteer's daemon as a volunteer meets it: real coordinator and
//! worker processes on loopback. Kill -9 and SIGTERM resume from a
//! checkpoint with the output of an uninterrupted run; results computed
//! while the coordinator is down are all delivered when it returns; the CPU
//! time limit holds (measured from /proc); the worker suspends under a
//! non-grid load and resumes after it; pause and resume over the control
//! socket; install and uninstall write and remove a valid systemd unit.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use peergrid_tests::{
    Coordinator, Worker, bin, chain_job, chain_native, children, cpu_time, job_spec, wait_for,
};
use rusqlite::OptionalExtension;

/// Held by every test here: they load the CPU or measure it, so within
/// this binary they run one at a time (under `cargo test` as under
/// nextest, whose `.config/nextest.toml` also runs the measuring ones
/// apart from every other test).
static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn machine() -> std::sync::MutexGuard<'static, ()> {
    peergrid_os::lock(&MACHINE)
}

/// Rounds per step of the long-running chain jobs: a step takes a few
/// milliseconds, so progress moves often.
const ROUNDS: u64 = 1_000_000;
/// Rounds per step of the interrupted job: about 70 ms a step, 400 steps.
const SLOW_ROUNDS: u64 = 20_000_000;

/// The step of the newest checkpoint the worker kept, if any.
fn checkpoint_step(worker: &Worker) -> Option<u64> {
    let db = worker.db().ok()?;
    let state: Option<Vec<u8>> = db
        .query_row(
            "SELECT checkpoint FROM tasks WHERE checkpoint IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .optional()
        .ok()??;
    let state = state?;
    Some(u64::from_le_bytes(state.get(..8)?.try_into().ok()?))
}

fn log_of(worker: &Worker) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(&worker.data).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    text
}

/// Submits one slow chain unit of `steps` steps (about 70 ms each) seeded
/// with `seed`; its job and its input.
fn submit_slow_chain(
    dir: &std::path::Path,
    coordinator: &Coordinator,
    steps: u64,
    seed: u64,
) -> (u64, String) {
    let input = format!("{steps} {SLOW_ROUNDS} {seed}");
    let spec = chain_job(
        dir,
        "chain",
        std::slice::from_ref(&input),
        "quorum = 1\ndeadline_secs = 600",
    )
    .unwrap();
    (coordinator.submit(&spec).unwrap(), input)
}

/// A task interrupted by `kill -9` and later by SIGTERM resumes from its
/// checkpoints each time and ends with the output of an uninterrupted
/// (native) run; SIGTERM exits within a few seconds.
#[test]
fn kill_9_and_sigterm_resume_from_checkpoints_with_the_same_output() {
    let _machine = machine();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let steps = 400;
    let (job, input) = submit_slow_chain(dir.path(), &coordinator, steps, 42);
    let data = dir.path().join("w");
    let args = ["--cores", "1", "--checkpoint-secs", "1"];
    let mut worker = Worker::start(&coordinator.join, &data, &args).unwrap();

    // Let it keep a checkpoint some way in, then kill -9.
    let first = wait_for("a first checkpoint", Duration::from_secs(60), || {
        checkpoint_step(&worker).filter(|s| *s >= 20)
    })
    .unwrap();
    assert!(
        first < steps,
        "the task finished before the crash; make it longer"
    );
    worker.kill();
    let kept = checkpoint_step(&worker).unwrap();

    // Restarted: it resumes from there, not from the start.
    let mut worker = Worker::start(&coordinator.join, &data, &args).unwrap();
    wait_for("a later checkpoint", Duration::from_secs(60), || {
        checkpoint_step(&worker).filter(|s| *s >= kept + 20)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", log_of(&worker)));
    let status = worker.status().unwrap();
    let running = &status["running"][0];
    assert_eq!(running["resumed"], true, "{status}");
    assert!(
        running["progress"].as_f64().unwrap() >= kept as f64 / steps as f64,
        "progress restarted from zero: {status}"
    );

    // SIGTERM: the task checkpoints and the worker exits within seconds.
    let (exit, took) = worker.terminate(Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let at_stop = checkpoint_step(&worker).unwrap();
    assert!(at_stop > kept, "no checkpoint kept on SIGTERM");

    let worker = Worker::start(&coordinator.join, &data, &args).unwrap();
    coordinator
        .wait_finished(job, Duration::from_secs(180))
        .unwrap();
    let rows = coordinator.dataset(job).unwrap();
    assert_eq!(rows.len(), 1);
    let expected = chain_native(input.as_bytes()).unwrap();
    let out_hash = rows[0]["output_hash"].as_str().unwrap();
    assert_eq!(
        out_hash,
        blake3::hash(&expected).to_hex().as_str(),
        "resumed output differs from an uninterrupted run"
    );
    let log = log_of(&worker);
    assert!(
        log.matches("resuming a task from its checkpoint").count() >= 2,
        "{log}"
    );
    assert!(log.contains("resumed=true"), "{log}");
}

/// In a runner process (`--task-processes`) the task's generated code has
/// no epoch checks, so on SIGTERM the worker asks the runner for a
/// checkpoint (SIGUSR1) instead: with a checkpoint interval of an hour, the
/// only checkpoint is the one taken for the stop, and the restarted worker
/// resumes from it to the output of an uninterrupted run.
#[test]
fn sigterm_checkpoints_a_task_in_a_runner_process_and_it_resumes() {
    let _machine = machine();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let steps = 400;
    let (job, input) = submit_slow_chain(dir.path(), &coordinator, steps, 7);
    let data = dir.path().join("w");
    let args = [
        "--cores",
        "1",
        "--checkpoint-secs",
        "3600",
        "--task-processes",
    ];
    let mut worker = Worker::start(&coordinator.join, &data, &args).unwrap();
    wait_for("the task to make progress", Duration::from_secs(60), || {
        let status = worker.status().ok()?;
        (status["running"][0]["progress"].as_f64()? > 0.05).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", log_of(&worker)));
    assert_eq!(
        checkpoint_step(&worker),
        None,
        "no checkpoint before the stop"
    );
    let (exit, took) = worker.terminate(Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let at_stop = checkpoint_step(&worker)
        .unwrap_or_else(|| panic!("no checkpoint kept on SIGTERM\n{}", log_of(&worker)));
    assert!(
        at_stop > 0 && at_stop < steps,
        "checkpoint at step {at_stop}"
    );

    let worker = Worker::start(&coordinator.join, &data, &args).unwrap();
    coordinator
        .wait_finished(job, Duration::from_secs(180))
        .unwrap();
    let rows = coordinator.dataset(job).unwrap();
    let expected = chain_native(input.as_bytes()).unwrap();
    assert_eq!(
        rows[0]["output_hash"].as_str().unwrap(),
        blake3::hash(&expected).to_hex().as_str(),
        "resumed output differs from an uninterrupted run"
    );
    let engines = rows[0]["engines"].to_string();
    assert!(engines.contains("/runner/"), "{engines}");
    assert!(log_of(&worker).contains("resuming a task from its checkpoint"));
}

/// With the coordinator down, the worker computes its buffered tasks; when
/// it returns, every result is delivered.
#[test]
fn offline_work_is_delivered_when_the_coordinator_returns() {
    let _machine = machine();
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Coordinator::start(dir.path()).unwrap();
    let units = 6;
    // About a second of work each.
    let inputs: Vec<String> = (0..units).map(|i| format!("300 {ROUNDS} {i}")).collect();
    let spec = chain_job(
        dir.path(),
        "offline",
        &inputs,
        "quorum = 1\ndeadline_secs = 600",
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let worker = Worker::start(
        &coordinator.join,
        &dir.path().join("w"),
        &["--cores", "1", "--buffer-tasks", &units.to_string()],
    )
    .unwrap();
    let held = |w: &Worker, table: &str| -> Option<i64> {
        w.db()
            .ok()?
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .ok()
    };
    // The buffer holds every unit (one slot runs, the rest wait).
    wait_for(
        "the worker to hold every unit",
        Duration::from_secs(30),
        || (held(&worker, "tasks")? + held(&worker, "reports")? >= units as i64).then_some(()),
    )
    .unwrap();
    let quic = coordinator.quic.clone();
    coordinator.kill();
    let left = held(&worker, "tasks").unwrap();
    assert!(
        left >= 2,
        "only {left} tasks left when the coordinator died; make them longer"
    );

    // Offline: the CPU keeps working through the whole buffer.
    wait_for("offline computing", Duration::from_secs(120), || {
        (held(&worker, "tasks")? == 0).then_some(())
    })
    .unwrap();
    let pending = held(&worker, "reports").unwrap();
    assert!(pending > 0, "nothing was computed offline");
    // The worker notices and says so.
    wait_for("status to say offline", Duration::from_secs(30), || {
        let s = worker.status().ok()?;
        s["connection"]
            .as_str()?
            .starts_with("offline")
            .then_some(())
    })
    .unwrap();

    coordinator.serve(&quic).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(status["validated"], units as u64, "{status}");
    wait_for(
        "the worker's uploads to drain",
        Duration::from_secs(30),
        || (held(&worker, "reports")? == 0).then_some(()),
    )
    .unwrap();
}

/// A worker running tasks in its own threads (`--in-process`), limited to
/// 50 % CPU time, uses half a core (±10 points) on a
/// CPU-bound task, measured from /proc.
#[test]
fn cpu_time_limit_holds_within_ten_points() {
    let _machine = machine();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = busy_coordinator(dir.path(), 1);
    let worker = Worker::start(
        &coordinator.join,
        &dir.path().join("w"),
        &["--cores", "1", "--cpu-time-percent", "50", "--in-process"],
    )
    .unwrap();
    wait_running(&worker);
    std::thread::sleep(Duration::from_secs(1));
    let share = cpu_share(&worker, Duration::from_secs(8));
    eprintln!("measured CPU share at a 50 % limit: {share:.1} %");
    assert!(
        (40.0..=60.0).contains(&share),
        "CPU share {share:.1} % at a 50 % limit"
    );
}

/// Before: a worker counted its own task runners as other programs, and a
/// runner computing flat out on one of two cores (50 % of the machine, over
/// the default 25 %) suspended its worker within seconds. Now runners are
/// grid load, and the duty cycle by SIGSTOP and SIGCONT holds their share
/// at 75, 50 and 25 % (worker and runner CPU time from /proc, ±10 points).
#[test]
fn task_processes_hold_the_cpu_share_and_never_suspend_their_worker() {
    let _machine = machine();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = busy_coordinator(dir.path(), 3);
    let data = dir.path().join("w");
    let worker = Worker::start(
        &coordinator.join,
        &data,
        &[
            "--cores",
            "1",
            "--task-processes",
            "--suspend-cpu-percent",
            "25",
        ],
    )
    .unwrap();
    wait_running(&worker);
    assert!(
        !children(worker.pid()).is_empty(),
        "the task runs in a runner process"
    );
    never_suspends_itself(&worker);
    let config = data.join("test-worker.toml");
    for percent in [75, 50, 25] {
        worker
            .control(&[
                "config",
                "set",
                "cpu_time_percent",
                &percent.to_string(),
                "--config",
                config.to_str().unwrap(),
            ])
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let (share, runner) = grid_cpu_share(&worker, Duration::from_secs(8));
        eprintln!(
            "measured CPU share at a {percent} % limit: {share:.1} % (the runner {runner:.1} %, the worker the rest)"
        );
        assert!(
            (share - percent as f64).abs() <= 10.0,
            "CPU share {share:.1} % at a {percent} % limit"
        );
        assert!(worker.status().unwrap()["suspended"].is_null());
    }
}

/// A worker computing flat out in process (one core of two: 50 % of the
/// machine, over the 25 % threshold) does not take its own task for
/// another program's load. (A governor that listed the worker's threads as
/// separate processes once dropped the worker from the grid's load.)
#[test]
fn an_in_process_worker_never_suspends_itself() {
    let _machine = machine();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = busy_coordinator(dir.path(), 4);
    let worker = Worker::start(
        &coordinator.join,
        &dir.path().join("w"),
        &[
            "--cores",
            "1",
            "--suspend-cpu-percent",
            "25",
            "--in-process",
        ],
    )
    .unwrap();
    wait_running(&worker);
    never_suspends_itself(&worker);
}

/// Once computing unsuspended (the coordinator's own start-up on this
/// machine is another program's load), for 6 s the worker is never
/// suspended: a worker that counted its own task as another program's
/// would suspend, resume after 3 s of calm, and suspend again.
fn never_suspends_itself(worker: &Worker) {
    // A runner just started reads as another program for one sample (its
    // CPU use takes two): let the start-up settle.
    std::thread::sleep(Duration::from_secs(2));
    wait_for(
        "the worker to compute unsuspended",
        Duration::from_secs(30),
        || worker.status().ok().filter(|s| s["suspended"].is_null()),
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let s = worker.status().unwrap();
        assert!(
            s["suspended"].is_null(),
            "the worker suspended itself for its own task: {}",
            s["suspended"]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The CPU use over `window` of the worker and its runners, and of the
/// runners alone, as % of one core.
fn grid_cpu_share(worker: &Worker, window: Duration) -> (f64, f64) {
    let runners = children(worker.pid());
    let time = |pids: &[u32]| -> Duration { pids.iter().filter_map(|&p| cpu_time(p).ok()).sum() };
    let (w0, r0, t0) = (worker.cpu_time().unwrap(), time(&runners), Instant::now());
    std::thread::sleep(window);
    let (w1, r1, t1) = (worker.cpu_time().unwrap(), time(&runners), Instant::now());
    assert_eq!(
        children(worker.pid()),
        runners,
        "a runner changed while measuring"
    );
    let share = |d: Duration| d.as_secs_f64() / (t1 - t0).as_secs_f64() * 100.0;
    (share((w1 - w0) + (r1 - r0)), share(r1 - r0))
}

/// A non-grid process loading the machine suspends the worker within 5 s;
/// it resumes after the load ends.
#[test]
fn suspends_under_load_and_resumes_after() {
    suspend_under_load_and_resume(false);
}

/// The same with the task in a runner process: suspended, the runner is
/// stopped (SIGSTOP, state T in /proc), and it runs again after the load.
#[test]
fn task_processes_suspend_under_load_and_resume_after() {
    suspend_under_load_and_resume(true);
}

fn suspend_under_load_and_resume(task_processes: bool) {
    let _machine = machine();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = busy_coordinator(dir.path(), 2);
    let mut flags = vec!["--cores", "1", "--suspend-cpu-percent", "25"];
    flags.push(if task_processes {
        "--task-processes"
    } else {
        "--in-process"
    });
    let worker = Worker::start(&coordinator.join, &dir.path().join("w"), &flags).unwrap();
    wait_running(&worker);
    let share = |w: &Worker, window| {
        if task_processes {
            grid_cpu_share(w, window).0
        } else {
            cpu_share(w, window)
        }
    };
    let unsuspended = |w: &Worker| w.status().ok().filter(|s| s["suspended"].is_null());
    wait_for(
        "the worker to compute unsuspended",
        Duration::from_secs(30),
        || unsuspended(&worker),
    )
    .unwrap();

    // As many busy loops as cores: well above 25 % of the machine.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut hogs = KillOnDrop((0..cores).map(|_| hog()).collect());
    let start = Instant::now();
    let status = wait_for("the worker to suspend", Duration::from_secs(5), || {
        worker.status().ok().filter(|s| !s["suspended"].is_null())
    })
    .unwrap();
    eprintln!(
        "suspended after {:?}: {}",
        start.elapsed(),
        status["suspended"]
    );
    assert!(
        status["suspended"]
            .as_str()
            .unwrap()
            .contains("other programs"),
        "{status}"
    );
    if task_processes {
        // The runner is stopped, not merely starved by the load beside it.
        let runner = children(worker.pid())[0];
        // A stop takes effect when the runner next gets a CPU, which a
        // SCHED_IDLE process beside two busy loops waits for.
        wait_for("the runner to stop", Duration::from_secs(5), || {
            process_state(runner).filter(|&s| s == 'T')
        })
        .unwrap();
        eprintln!("runner stopped {:?} after the load began", start.elapsed());
    }
    // Suspended means the task no longer runs.
    std::thread::sleep(Duration::from_millis(500));
    let used = share(&worker, Duration::from_secs(2));
    assert!(used < 10.0, "a suspended worker used {used:.1} % CPU");

    hogs.0.iter_mut().for_each(|h| {
        let _ = h.kill();
        let _ = h.wait();
    });
    let start = Instant::now();
    wait_for("the worker to resume", Duration::from_secs(20), || {
        unsuspended(&worker)
    })
    .unwrap_or_else(|e| {
        // The load it still sees is not ours: say so rather than blame the worker.
        panic!(
            "{e}; the worker still reports {} (other processes on this machine \
             keep it busy; run this test on an otherwise idle machine)",
            worker
                .status()
                .map(|s| s["suspended"].to_string())
                .unwrap_or_default()
        )
    });
    eprintln!("resumed {:?} after the load ended", start.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let used = share(&worker, Duration::from_secs(2));
    assert!(used > 50.0, "a resumed worker used only {used:.1} % CPU");
}

/// A process's state letter from /proc (R running, S sleeping, T stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `pause` and `resume` act on the running worker through its socket.
#[test]
fn pause_and_resume_over_the_control_socket() {
    let _machine = machine();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = busy_coordinator(dir.path(), 3);
    let worker =
        Worker::start(&coordinator.join, &dir.path().join("w"), &["--cores", "1"]).unwrap();
    wait_running(&worker);
    let text = worker.control(&["status"]).unwrap();
    assert!(
        text.contains("running tasks:    1") && text.contains("connected"),
        "{text}"
    );

    let out = worker.control(&["pause"]).unwrap();
    assert!(out.contains("paused"), "{out}");
    let status = worker.status().unwrap();
    assert_eq!(status["paused_by_user"], true, "{status}");
    assert!(
        status["suspended"]
            .as_str()
            .unwrap()
            .contains("paused by the volunteer")
    );
    std::thread::sleep(Duration::from_millis(300));
    let paused = cpu_share(&worker, Duration::from_secs(2));
    assert!(paused < 10.0, "a paused worker used {paused:.1} % CPU");
    // The step that was running when the pause came may finish; after
    // that, nothing moves.
    let progress = worker.status().unwrap()["running"][0]["progress"]
        .as_f64()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let later = worker.status().unwrap()["running"][0]["progress"]
        .as_f64()
        .unwrap();
    assert_eq!(progress, later, "progress moved while paused");

    // The pause outlives a restart (a reboot, an upgrade) until `resume`.
    let mut worker = worker;
    worker.kill();
    let worker =
        Worker::start(&coordinator.join, &dir.path().join("w"), &["--cores", "1"]).unwrap();
    let status = wait_for_status(&worker);
    assert_eq!(status["paused_by_user"], true, "{status}");
    std::thread::sleep(Duration::from_millis(500));
    let restarted = cpu_share(&worker, Duration::from_secs(2));
    assert!(
        restarted < 10.0,
        "a worker restarted while paused used {restarted:.1} % CPU"
    );
    assert!(
        worker.status().unwrap()["running"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a worker restarted while paused started a task"
    );

    let out = worker.control(&["resume"]).unwrap();
    assert!(out.contains("resumed"), "{out}");
    assert!(worker.status().unwrap()["suspended"].is_null());
    let resumed = cpu_share(&worker, Duration::from_secs(2));
    assert!(
        resumed > 50.0,
        "a resumed worker used only {resumed:.1} % CPU"
    );

    // A worker that is not running: a clear error, not a hang.
    let out = Command::new(bin("peergrid-worker"))
        .args(["status", "--data"])
        .arg(dir.path().join("nobody"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no worker answers"));
}

/// `install` writes a systemd unit that `systemd-analyze verify` accepts;
/// `uninstall` removes it. The system unit runs the worker as a dynamic
/// unprivileged user with its data in systemd's state folder, hardened, and
/// with the memory cap of the volunteer's preferences; the worker started
/// from the unit's `ExecStart=` with the folder systemd gives it
/// (`STATE_DIRECTORY`) keeps its data there, unprivileged when the test
/// runs as root. `config` shows the merged preferences.
#[test]
fn install_writes_a_valid_unit_and_uninstall_removes_it() {
    let _machine = machine();
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is missing: run scripts/setup as root, or `apt-get install systemd`"
    );
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let data = dir.path().join("data");
    let prefs = dir.path().join("worker.toml");
    std::fs::write(
        &prefs,
        "memory_in_use_percent = 40\nmemory_idle_percent = 70\n",
    )
    .unwrap();
    let join = format!(
        "peergrid://127.0.0.1:4433#sha256:{}&project={}",
        "ab".repeat(32),
        "cd".repeat(32)
    );
    let run = |args: &[&str]| {
        let out = Command::new(bin("peergrid-worker"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let unit_dir = units.to_str().unwrap();
    let data_dir = data.to_str().unwrap();
    for user in [false, true] {
        let mut args = vec![
            "install",
            "--join",
            &join,
            "--unit-dir",
            unit_dir,
            "--config",
            prefs.to_str().unwrap(),
            "--no-enable",
        ];
        if user {
            args.extend(["--user", "--data", data_dir]);
        } else {
            // Never created by install: systemd makes it for its user.
            args.extend(["--system", "--data", "/var/lib/peergrid-worker-test"]);
        }
        let path = run(&args);
        let unit = units.join("peergrid-worker.service");
        assert_eq!(Path::new(path.trim()), unit);
        let text = std::fs::read_to_string(&unit).unwrap();
        assert!(text.contains("Restart=on-failure"), "{text}");
        assert!(text.contains(&format!("--join \"{join}\"")), "{text}");
        let wanted = if user {
            "default.target"
        } else {
            "multi-user.target"
        };
        assert!(text.contains(&format!("WantedBy={wanted}")), "{text}");
        assert!(text.contains("\nMemoryMax=70%\n"), "{text}");
        let hardening = [
            "DynamicUser=yes",
            "StateDirectory=peergrid-worker-test",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectControlGroups=yes",
            "RestrictSUIDSGID=yes",
            "LockPersonality=yes",
            "CapabilityBoundingSet=\n",
        ];
        for line in hardening {
            assert_eq!(
                text.contains(&format!("\n{line}")),
                !user,
                "{line} in the {} unit:\n{text}",
                if user { "user" } else { "system" }
            );
        }
        let mut verify = Command::new(analyze);
        verify.arg("verify");
        if user {
            // A user manager needs a runtime folder, absent outside a login.
            let runtime = dir.path().join("runtime");
            std::fs::create_dir_all(&runtime).unwrap();
            verify.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
        }
        let out = verify.arg(&unit).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("peergrid-worker.service"),
            "systemd-analyze verify refused the unit:\n{stderr}\n{text}"
        );
        if !user {
            starts_where_the_system_unit_says(&text, dir.path());
        }
        let removed = run(&["uninstall", "--unit-dir", unit_dir, "--no-disable"]);
        assert!(removed.contains("removed"), "{removed}");
        assert!(!unit.exists());
    }
    let again = run(&["uninstall", "--unit-dir", unit_dir, "--no-disable"]);
    assert!(again.contains("not installed"), "{again}");
    // A bad join string is refused before anything is written.
    let out = Command::new(bin("peergrid-worker"))
        .args([
            "install",
            "--join",
            "nonsense",
            "--data",
            data_dir,
            "--unit-dir",
            unit_dir,
            "--no-enable",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!units.join("peergrid-worker.service").exists());

    // `config`: the file, then flags.
    let file = dir.path().join("worker.toml");
    std::fs::write(
        &file,
        "cpu_time_percent = 70\ntime_windows = [\"22:00-06:00\"]\n",
    )
    .unwrap();
    let shown = run(&[
        "config",
        "--config",
        file.to_str().unwrap(),
        "--suspend-cpu-percent",
        "40",
    ]);
    assert!(shown.contains("cpu_time_percent = 70"), "{shown}");
    assert!(shown.contains("suspend_cpu_percent = 40"), "{shown}");
    assert!(shown.contains("checkpoint_secs = 60"), "{shown}");
    assert!(shown.contains("22:00-06:00"), "{shown}");
    std::fs::write(&file, "cpu_time_percent = 0\n").unwrap();
    let out = Command::new(bin("peergrid-worker"))
        .args(["config", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cpu_time_percent"));
}

/// Runs the system unit's `ExecStart=` as systemd would: with the state
/// folder in `STATE_DIRECTORY` and, when the test runs as root, as an
/// unprivileged user with `no_new_privs` (what `DynamicUser=yes` and
/// `NoNewPrivileges=yes` give it). The worker must keep its key and state in
/// that folder and answer `status` there.
fn starts_where_the_system_unit_says(unit: &str, dir: &Path) {
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart= line");
    let argv = unit_words(exec);
    assert!(
        !argv.iter().any(|a| a == "--data"),
        "the system unit names its data folder only through StateDirectory=: {exec}"
    );
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let root = peergrid_worker::install::is_root();
    let mut cmd = if root {
        // As systemd's dynamic user would: not root, no new privileges.
        let status = Command::new("chown")
            .args(["65534:65534"])
            .arg(&state)
            .status()
            .unwrap();
        assert!(status.success());
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--no-new-privs",
        ]);
        c.args(&argv);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    let log = std::fs::File::create(dir.join("unit-worker.log")).unwrap();
    let child = cmd
        .env("STATE_DIRECTORY", &state)
        .env_remove("PEERGRID_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _child = KillOnDrop(vec![child]);
    let answered = wait_for(
        "the unit's worker to answer status",
        Duration::from_secs(20),
        || {
            let out = Command::new(bin("peergrid-worker"))
                .args(["status", "--json", "--data"])
                .arg(&state)
                .output()
                .ok()?;
            out.status.success().then_some(out.stdout)
        },
    );
    let log = std::fs::read_to_string(dir.join("unit-worker.log")).unwrap_or_default();
    let answered = answered.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(String::from_utf8_lossy(&answered).contains("127.0.0.1:4433"));
    for kept in ["worker.sqlite", "project.pub", "modules"] {
        assert!(
            state.join(kept).exists(),
            "{kept} not in the state folder\n{log}"
        );
    }
}

/// The words of an `ExecStart=` line as `peergrid-worker install` quotes
/// them (double quotes; `\\`, `\"`, `%%` and `$$` escaped).
fn unit_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => word.extend(chars.next()),
            '%' | '$' if chars.peek() == Some(&c) => {
                chars.next();
                word.push(c);
            }
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A coordinator with one long CPU-bound unit (the chain example, seeded
/// with `seed`) for a single worker to chew on.
fn busy_coordinator(dir: &Path, seed: u32) -> Coordinator {
    let coordinator = Coordinator::start(dir).unwrap();
    let spec = chain_job(
        dir,
        "busy",
        &[format!("100000 {ROUNDS} {seed}")],
        "quorum = 1\ndeadline_secs = 600",
    )
    .unwrap();
    coordinator.submit(&spec).unwrap();
    coordinator
}

/// Waits until the worker runs a task that has reported progress (so it is
/// past compiling its module, which takes a while on a loaded machine).
fn wait_running(worker: &Worker) {
    wait_for("the worker to run a task", Duration::from_secs(60), || {
        let s = worker.status().ok()?;
        s["running"][0]["progress"].as_f64().map(|_| ())
    })
    .unwrap();
}

/// The worker's status, once its control socket answers.
fn wait_for_status(worker: &Worker) -> serde_json::Value {
    wait_for(
        "the worker's control socket",
        Duration::from_secs(30),
        || worker.status().ok(),
    )
    .unwrap()
}

/// The CPU use over `window` of the worker and its task runners (those
/// running at each end), as % of one core.
fn cpu_share(worker: &Worker, window: Duration) -> f64 {
    let total = || -> Duration {
        let runners: Duration = children(worker.pid())
            .iter()
            .filter_map(|&p| cpu_time(p).ok())
            .sum();
        worker.cpu_time().unwrap() + runners
    };
    let (c0, t0) = (total(), Instant::now());
    std::thread::sleep(window);
    let (c1, t1) = (total(), Instant::now());
    c1.saturating_sub(c0).as_secs_f64() / (t1 - t0).as_secs_f64() * 100.0
}

/// Child processes (busy loops, a worker), killed when dropped.
struct KillOnDrop(Vec<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for h in &mut self.0 {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

fn hog() -> Child {
    Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap()
}

/// On a terminal `run` draws progress bars (a status line and one bar per
/// task); without one it logs plain lines.
#[test]
fn progress_bars_on_a_terminal_plain_lines_otherwise() {
    let _machine = machine();
    let script = Path::new("/usr/bin/script");
    assert!(
        script.exists(),
        "/usr/bin/script (util-linux) is missing: `apt-get install bsdutils`"
    );
    let dir = tempfile::tempdir().unwrap();
    let coordinator = busy_coordinator(dir.path(), 4);
    let data = dir.path().join("tty");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("test.toml"), "suspend_cpu_percent = 100\n").unwrap();
    // `script` gives the worker a pseudo-terminal; `timeout` ends it with
    // SIGTERM after a few seconds of drawing.
    let command = format!(
        "timeout -s TERM 5 {} run --cores 1 --config {} --data {} --join '{}'",
        bin("peergrid-worker").display(),
        data.join("test.toml").display(),
        data.display(),
        coordinator.join
    );
    let out = Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .env("COLUMNS", "160")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("computing"), "no status line:\n{screen}");
    assert!(
        screen.contains("unit ") && screen.contains('%') && screen.contains('['),
        "no task bar:\n{screen}"
    );
    assert!(screen.contains("worker stopped"), "{screen}");

    // The same worker without a terminal: plain log lines, no bars.
    let worker = Worker::start(&coordinator.join, &data, &["--cores", "1"]).unwrap();
    wait_running(&worker);
    let log = log_of(&worker);
    assert!(
        log.contains("starting worker") && !log.contains("] "),
        "{log}"
    );
}

/// A restarted worker runs the tasks it holds, except those it can no
/// longer finish in time after being down: it gives them back.
#[test]
fn held_tasks_too_late_to_start_are_given_back_after_a_restart() {
    let _machine = machine();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let inputs: Vec<String> = (0..2).map(|i| format!("100000 {ROUNDS} {i}")).collect();
    let spec = chain_job(dir.path(), "late", &inputs, "quorum = 1\ndeadline_secs = 2").unwrap();
    coordinator.submit(&spec).unwrap();
    let data = dir.path().join("w");
    let args = ["--cores", "1", "--buffer-tasks", "1"];
    let mut worker = Worker::start(&coordinator.join, &data, &args).unwrap();
    let held = |w: &Worker| -> Option<i64> {
        w.db()
            .ok()?
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
            .ok()
    };
    wait_for(
        "the worker to hold both tasks",
        Duration::from_secs(30),
        || (held(&worker)? == 2).then_some(()),
    )
    .unwrap();
    worker.kill();
    // Due 2 × 2 s + 10 s after they were sent: after 8 s down, a task's
    // 2 s run and 5 s report margin no longer fit.
    std::thread::sleep(Duration::from_secs(8));

    let worker = Worker::start(&coordinator.join, &data, &args).unwrap();
    wait_for(
        "the late tasks to be given back",
        Duration::from_secs(20),
        || (held(&worker)? == 0).then_some(()),
    )
    .unwrap();
    let log = log_of(&worker);
    assert_eq!(
        log.matches("giving back a task that can no longer start in time")
            .count(),
        2,
        "{log}"
    );
    assert!(!log.contains("task done"), "{log}");
}

/// A task held behind one that runs to its wall-clock limit still starts
/// and reports in time, and a task that cannot start in time is given
/// back: the host is never charged a timeout for the grid's own
/// scheduling, and the unit it gave back goes to another host.
#[test]
fn tasks_waiting_behind_a_full_run_start_in_time_or_are_given_back() {
    let _machine = machine();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let module = dir.path().join("spin.wasm");
    let spin = wat::parse_str(r#"(module (func (export "_start") (loop (br 0))))"#).unwrap();
    std::fs::write(&module, spin).unwrap();
    let settings = "quorum = 1\nmax_error_results = 1\nfuel = 1_000_000_000_000\ndeadline_secs = 3";
    let spec = job_spec(dir.path(), "spin", &module, 4, settings).unwrap();
    let job = coordinator.submit(&spec).unwrap();
    // One slot, three tasks waiting, every task runs to its 3 s limit: a
    // copy is due after two runs and two 5 s margins (16 s), so the
    // waiting tasks that start after 3 and 6 s are in time, the one that
    // could start only after 9 s is not: it is given back.
    let args = ["--cores", "1", "--buffer-tasks", "3"];
    let first = Worker::start(&coordinator.join, &dir.path().join("a"), &args).unwrap();
    let first_key = first.host_key().unwrap();
    wait_for(
        "the first worker to give a task back",
        Duration::from_secs(60),
        || (coordinator.results_of(&first_key, "voided").ok()? == 1).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", log_of(&first)));
    // The unit it gave back goes to a host of another network.
    let second = Worker::start(&coordinator.join, &dir.path().join("b"), &args).unwrap();
    let s = coordinator
        .wait_finished(job, Duration::from_secs(60))
        .unwrap();
    assert_eq!(s["failed"], 4, "{s}");
    for f in s["failed_units"].as_array().unwrap() {
        let reason = f["reason"].as_str().unwrap();
        assert!(reason.contains("wall-clock limit"), "{reason}");
    }
    for (worker, key, ran) in [
        (&first, &first_key, 3),
        (&second, &second.host_key().unwrap(), 1),
    ] {
        assert_eq!(
            coordinator.results_of(key, "timed_out").unwrap(),
            0,
            "{}",
            log_of(worker)
        );
        assert_eq!(
            coordinator.results_of(key, "error").unwrap(),
            ran,
            "{}",
            log_of(worker)
        );
    }
}

/// A join string with line breaks would add lines (a section, an
/// `ExecStartPre=` run as root) to the generated unit: `install` refuses
/// it and writes nothing.
#[test]
fn install_refuses_a_join_string_that_would_inject_unit_lines() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    let data = dir.path().join("data");
    let evil = format!(
        "peergrid://127.0.0.1:4433\n[Service]\nExecStartPre=/bin/sh -c 'touch /tmp/pwned'\n#sha256:{}&project={}",
        "ab".repeat(32),
        "cd".repeat(32)
    );
    for user in [false, true] {
        let mut cmd = Command::new(bin("peergrid-worker"));
        cmd.args(["install", "--join", &evil, "--no-enable", "--data"])
            .arg(&data)
            .arg("--unit-dir")
            .arg(&units);
        if user {
            cmd.arg("--user");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let unit = units.join("peergrid-worker.service");
        assert!(
            !out.status.success(),
            "install accepted a join string with line breaks; it wrote:\n{}",
            std::fs::read_to_string(&unit).unwrap_or_default()
        );
        assert!(stderr.contains("whitespace or control"), "{stderr}");
        assert!(!unit.exists() && !data.exists(), "install wrote something");
    }
}
