//! Task runner processes (`peergrid-runner`): tasks in a warm runner
//! compute what the in-process sandbox computes, with the same fuel; an
//! aarch64 runner under qemu-user computes what the x86-64 one does; a
//! runner killed mid-task costs only that task; a runner runs at idle
//! priority and dies with its parent; checkpoints and progress cross the
//! pipe.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use peergrid_proto::Hash;
use peergrid_proto::runner::{FromRunner, RunTask, RunnerOutcome, RunnerReport};
use peergrid_proto::spec::Metering;
use peergrid_proto::wire::TaskLimits;
use peergrid_runner::{Runner, RunnerCommand, RunnerError};
use peergrid_tests::{
    Coordinator, Worker, aarch64_runner, bin, chain_native, chain_wasm, children, collatz_c,
    is_gone, job_spec, lyapunov_wasm, probe_wasm, seti_wasm, target_dir, wait_for,
};
use peergrid_worker::sandbox::{NanMode, RunOutcome, Sandbox, SandboxTask};

const LIMITS: TaskLimits = TaskLimits {
    memory_bytes: 256 << 20,
    fuel: 1 << 40,
    max_output_bytes: 1 << 20,
    wall_ms: 600_000,
    metering: Metering::Fuel,
};

/// A module of the workspace and a small input for it.
struct Kernel {
    name: &'static str,
    wasm: PathBuf,
    input: Vec<u8>,
}

/// The probe and the five benchmark kernels, on small inputs.
fn kernels() -> Vec<Kernel> {
    let release = target_dir().join("wasm32-wasip1/release");
    let plan = peergrid_example_seti::synth::Plan {
        channels: 1,
        segments: 1,
        signals: 1,
        ..peergrid_example_seti::synth::Plan::demo(3)
    };
    let (_, units) = peergrid_example_seti::synth::generate(&plan).unwrap();
    let seti_unit = units.into_iter().next().unwrap().1;
    vec![
        Kernel {
            name: "probe",
            wasm: probe_wasm(),
            input: b"tag".to_vec(),
        },
        Kernel {
            name: "n-body",
            wasm: release.join("nbody.wasm"),
            input: b"2000".to_vec(),
        },
        Kernel {
            name: "lyapunov",
            wasm: lyapunov_wasm(),
            input: br#"{"r_start":3.4,"r_end":4.0,"steps":8,"iterations":2000,"transient":100}"#
                .to_vec(),
        },
        Kernel {
            name: "sieve",
            wasm: release.join("sieve.wasm"),
            input: b"100000 2".to_vec(),
        },
        Kernel {
            name: "seti",
            wasm: seti_wasm(),
            input: seti_unit,
        },
        Kernel {
            name: "collatz (C)",
            wasm: collatz_c().0,
            input: b"1 20000".to_vec(),
        },
    ]
}

fn task(module: &Hash, input: &[u8], canonical_nan: bool, metering: Metering) -> RunTask {
    RunTask {
        module: *module,
        module_bytes: None,
        input: input.to_vec(),
        args: Vec::new(),
        seed: 7,
        limits: TaskLimits { metering, ..LIMITS },
        canonical_nan,
        resume: None,
        checkpoint_every_ms: 0,
    }
}

fn native_runner() -> RunnerCommand {
    RunnerCommand {
        program: bin("peergrid-runner"),
        prefix: Vec::new(),
        cache: None,
    }
}

fn run(runner: &mut Runner, module: &[u8], task: &RunTask) -> Result<RunnerReport> {
    let report = runner.run(task.clone(), module, |_| {})?;
    Ok(report)
}

fn output(report: &RunnerReport) -> Result<&[u8]> {
    match &report.outcome {
        RunnerOutcome::Success(out) => Ok(out),
        RunnerOutcome::Error(why) => anyhow::bail!("the task failed: {why}"),
    }
}

#[test]
fn a_warm_runner_computes_what_the_in_process_sandbox_computes() -> Result<()> {
    let sandbox = Sandbox::new(None)?;
    let mut runner = Runner::start(&native_runner())?;
    for kernel in kernels() {
        let module = std::fs::read(&kernel.wasm)?;
        let hash = Hash::of(&module);
        for canonical in [false, true] {
            let expected = sandbox.run(&SandboxTask {
                module: &hash,
                module_bytes: &module,
                input: &kernel.input,
                args: &[],
                seed: 7,
                limits: &LIMITS,
                nan: NanMode::from_canonical(canonical),
            });
            let RunOutcome::Success(expected_out) = &expected.outcome else {
                anyhow::bail!("{} failed in process: {:?}", kernel.name, expected.outcome);
            };
            let fueled = run(
                &mut runner,
                &module,
                &task(&hash, &kernel.input, canonical, Metering::Fuel),
            )?;
            ensure!(
                output(&fueled)? == &expected_out[..],
                "{}: outputs differ",
                kernel.name
            );
            // Fuel is counted per instruction, epoch checks or not.
            assert_eq!(
                fueled.fuel_used, expected.fuel_used,
                "{}: fuel differs",
                kernel.name
            );
            assert!(fueled.fuel_used > 0);
            assert!(fueled.engine.contains("/runner/"), "{}", fueled.engine);
            let fixed = run(
                &mut runner,
                &module,
                &task(&hash, &kernel.input, canonical, Metering::Fixed),
            )?;
            ensure!(
                output(&fixed)? == &expected_out[..],
                "{}: fixed mode differs",
                kernel.name
            );
            assert_eq!(fixed.fuel_used, 0, "fixed mode counts no fuel");
            assert!(fixed.engine.contains("/fixed/"), "{}", fixed.engine);
        }
    }
    Ok(())
}

#[test]
fn an_aarch64_runner_under_qemu_computes_what_x86_64_computes() -> Result<()> {
    let (program, prefix) = aarch64_runner();
    let mut arm = Runner::start(&RunnerCommand {
        program,
        prefix,
        cache: None,
    })?;
    assert_eq!(arm.arch(), "aarch64");
    let mut x86 = Runner::start(&native_runner())?;
    assert_eq!(x86.arch(), std::env::consts::ARCH);
    let mut fast_equal = Vec::new();
    for kernel in kernels() {
        let module = std::fs::read(&kernel.wasm)?;
        let hash = Hash::of(&module);
        let mut fast_same = None;
        for canonical in [false, true] {
            let t = task(&hash, &kernel.input, canonical, Metering::Fuel);
            let a = run(&mut arm, &module, &t).with_context(|| kernel.name)?;
            let b = run(&mut x86, &module, &t).with_context(|| kernel.name)?;
            // Fuel counts wasm instructions and host charges: the same on
            // every architecture, in both NaN modes.
            assert_eq!(
                a.fuel_used, b.fuel_used,
                "{} (canonical {canonical}): fuel",
                kernel.name
            );
            assert!(a.engine.ends_with("aarch64") != canonical, "{}", a.engine);
            if canonical {
                // Canonical NaNs are comparable everywhere: always equal.
                assert_eq!(
                    output(&a)?,
                    output(&b)?,
                    "{}: canonical outputs differ",
                    kernel.name
                );
            } else {
                fast_same = Some(output(&a)? == output(&b)?);
            }
        }
        if fast_same == Some(true) {
            fast_equal.push(kernel.name);
        }
        eprintln!(
            "{}: fast engine outputs equal across architectures: {fast_same:?}",
            kernel.name
        );
    }
    // Only NaN payloads may differ in the fast engine, and only the probe
    // (which prints NaN bits on purpose) makes NaNs; every kernel agrees.
    for name in ["n-body", "lyapunov", "sieve", "seti", "collatz (C)"] {
        assert!(
            fast_equal.contains(&name),
            "{name} differs across architectures in the fast engine"
        );
    }
    Ok(())
}

/// A module that loops forever.
fn endless() -> Vec<u8> {
    wat::parse_str(
        r#"(module (func (export "_start") (loop (br 0))) (memory (export "memory") 1))"#,
    )
    .unwrap()
}

#[test]
fn a_runner_killed_mid_task_costs_only_that_task() -> Result<()> {
    let mut runner = Runner::start(&native_runner())?;
    let module = endless();
    let hash = Hash::of(&module);
    let pid = runner.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        Command::new("kill").args(["-9", &pid.to_string()]).status()
    });
    let started = Instant::now();
    let e = runner
        .run(task(&hash, b"", false, Metering::Fixed), &module, |_| {})
        .unwrap_err();
    assert!(killer.join().unwrap()?.success());
    assert!(matches!(e, RunnerError::Died(_)), "{e}");
    let message = e.to_string();
    assert!(
        message.contains("signal 9") && message.contains("the task is lost"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // A fresh runner takes the next task.
    let mut fresh = Runner::start(&native_runner())?;
    let probe = std::fs::read(probe_wasm())?;
    let report = run(
        &mut fresh,
        &probe,
        &task(&Hash::of(&probe), b"x", false, Metering::Fuel),
    )?;
    output(&report)?;
    Ok(())
}

#[test]
fn a_runner_runs_at_idle_priority_and_dies_with_its_parent() -> Result<()> {
    let runner = Runner::start(&native_runner())?;
    let (policy, _nice) = peergrid_os::process::policy_and_nice(runner.pid())?;
    assert_eq!(
        policy, 5,
        "a runner runs under SCHED_IDLE (policy 5), not {policy}"
    );
    let ionice = Command::new("ionice")
        .args(["-p", &runner.pid().to_string()])
        .output()?;
    let ionice = String::from_utf8_lossy(&ionice.stdout);
    assert!(ionice.trim() == "idle", "I/O class: {ionice}");

    // Another process (python3: any program would do) starts a runner and
    // a `sleep` that inherits the write end of the runner's stdin, so the
    // pipe stays open when the parent dies: only PR_SET_PDEATHSIG can end
    // the runner then. The parent is killed with SIGKILL.
    let script = "import os, subprocess, sys, time\n\
                  env = dict(os.environ, PEERGRID_RUNNER_PARENT=str(os.getpid()))\n\
                  p = subprocess.Popen([sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)\n\
                  k = subprocess.Popen(['sleep', '60'], pass_fds=[p.stdin.fileno()])\n\
                  print(p.pid, k.pid, flush=True)\n\
                  time.sleep(60)\n";
    let mut shell = Command::new("python3")
        .args(["-c", script])
        .arg(bin("peergrid-runner"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("python3 (Debian's python3) starts the runner's parent")?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(shell.stdout.take().unwrap()),
        &mut line,
    )?;
    let (pid, keeper) = line.trim().split_once(' ').context("two pids")?;
    let (pid, keeper): (u32, u32) = (pid.parse()?, keeper.parse()?);
    wait_for("the runner to start", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .filter(|c| c.trim() == "peergrid-runner")
    })?;
    shell.kill()?;
    shell.wait()?;
    let died = wait_for(
        "the runner to die with its parent",
        Duration::from_secs(5),
        || is_gone(pid).then_some(()),
    );
    let _ = Command::new("kill").arg(keeper.to_string()).status();
    died?;
    Ok(())
}

#[test]
fn checkpoints_and_progress_cross_the_pipe_and_a_resumed_run_finishes_alike() -> Result<()> {
    let module = std::fs::read(chain_wasm())?;
    let hash = Hash::of(&module);
    let input = b"400 20000 5";
    let expected = chain_native(input)?;
    let mut runner = Runner::start(&native_runner())?;
    let mut t = task(&hash, input, false, Metering::Fuel);
    t.checkpoint_every_ms = 1;
    let (mut checkpoints, mut progress) = (Vec::new(), Vec::new());
    let whole = runner.run(t.clone(), &module, |event| match event {
        FromRunner::Checkpoint { state, fuel_used } => checkpoints.push((state, fuel_used)),
        FromRunner::Progress(p) => progress.push(p),
        _ => {}
    })?;
    assert_eq!(output(&whole)?, &expected[..]);
    assert!(checkpoints.len() >= 2, "{} checkpoints", checkpoints.len());
    assert!(!progress.is_empty() && progress.iter().all(|p| (0.0..=1.0).contains(p)));
    // Resumed from a checkpoint in the middle, in a fresh runner.
    let middle = checkpoints[checkpoints.len() / 2].clone();
    let mut fresh = Runner::start(&native_runner())?;
    t.resume = Some(middle.clone());
    t.checkpoint_every_ms = 0;
    let resumed = fresh.run(t.clone(), &module, |_| {})?;
    assert!(resumed.resumed);
    assert_eq!(output(&resumed)?, &expected[..]);
    assert!(resumed.fuel_used >= middle.1);
    Ok(())
}

#[test]
fn a_runner_asks_for_a_module_it_does_not_hold() -> Result<()> {
    use peergrid_proto::codec;
    use peergrid_proto::runner::{ToRunner, frame, frame_len};
    use std::io::{Read, Write};

    let probe = std::fs::read(probe_wasm())?;
    let hash = Hash::of(&probe);
    // Raw frames: a task without the module's bytes to a fresh runner.
    let mut child = Command::new(bin("peergrid-runner"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let (mut stdin, mut stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut next = || -> Result<FromRunner> {
        let mut header = [0; 4];
        stdout.read_exact(&mut header)?;
        let mut body = vec![0; frame_len(header)?];
        stdout.read_exact(&mut body)?;
        Ok(codec::decode(&body)?)
    };
    assert!(matches!(next()?, FromRunner::Ready { .. }));
    let t = task(&hash, b"x", false, Metering::Fuel);
    stdin.write_all(&frame(&ToRunner::Run(Box::new(t.clone())))?)?;
    stdin.flush()?;
    assert_eq!(next()?, FromRunner::NeedModule);
    let with_bytes = RunTask {
        module_bytes: Some(probe.clone()),
        ..t
    };
    stdin.write_all(&frame(&ToRunner::Run(Box::new(with_bytes)))?)?;
    stdin.flush()?;
    let done = loop {
        if let FromRunner::Done(report) = next()? {
            break report;
        }
    };
    output(&done)?;
    drop(stdin);
    child.wait()?;

    // Through the client: the module was sent for a fuel task, so the
    // next goes without its bytes; the runner's fixed-mode engine never
    // compiled it, asks, and the task runs once the bytes come.
    let mut runner = Runner::start(&native_runner())?;
    let fuel = run(
        &mut runner,
        &probe,
        &task(&hash, b"x", false, Metering::Fuel),
    )?;
    let fixed = run(
        &mut runner,
        &probe,
        &task(&hash, b"x", false, Metering::Fixed),
    )?;
    assert_eq!(output(&fuel)?, output(&fixed)?);
    // Bytes that are not the module are refused, not run.
    let mut fresh = Runner::start(&native_runner())?;
    let wrong = run(
        &mut fresh,
        b"not the module",
        &task(&hash, b"x", false, Metering::Fuel),
    )?;
    let RunnerOutcome::Error(why) = &wrong.outcome else {
        panic!("{wrong:?}")
    };
    assert!(why.contains("corrupt"), "{why}");
    Ok(())
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .is_none_or(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
}

/// A worker whose tasks run in an aarch64 runner under qemu-user: a real
/// host of another architecture.
fn aarch64_worker(coordinator: &Coordinator, data: &std::path::Path) -> Result<Worker> {
    let (program, prefix) = aarch64_runner();
    let wrapper: Vec<String> = prefix
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    Worker::start(
        &coordinator.join,
        data,
        &[
            "--cores",
            "1",
            "--runner",
            program.to_str().context("runner path")?,
            "--runner-wrapper",
            &wrapper.join(" "),
        ],
    )
}

/// Real aarch64 hosts (workers whose tasks run in an aarch64 runner under
/// qemu-user) and x86-64 hosts compute the probe, which prints NaN bits:
/// an aarch64 and an x86-64 host's fast-engine outputs disagree, the
/// coordinator re-runs each unit with canonical NaNs, and there a second
/// aarch64 host and a second x86-64 host agree. Killing an aarch64 worker
/// with SIGKILL leaves no runner behind.
#[test]
fn aarch64_and_x86_64_hosts_disagree_then_agree_with_canonical_nans() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path())?;
    let mut arm = aarch64_worker(&coordinator, &dir.path().join("arm"))?;
    let _x86 = Worker::start(
        &coordinator.join,
        &dir.path().join("x86"),
        &["--cores", "1"],
    )?;
    let spec = job_spec(dir.path(), "probe", &probe_wasm(), 3, "quorum = 2")?;
    let job = coordinator.submit(&spec)?;
    let count = |sql: &str| -> i64 {
        coordinator
            .db()
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or(-1)
    };
    wait_for(
        "both hosts to report every unit",
        Duration::from_secs(240),
        || (count("SELECT count(*) FROM results WHERE state = 'success'") == 6).then_some(()),
    )?;
    assert_eq!(
        coordinator.status(job)?["validated"],
        0,
        "the fast outputs disagree"
    );
    assert_eq!(
        count("SELECT count(*) FROM results WHERE engine LIKE '%/runner/%nocanon%/aarch64'"),
        3,
        "the aarch64 host ran the fast engine in its runner"
    );
    let _arm2 = aarch64_worker(&coordinator, &dir.path().join("arm2"))?;
    let _x86b = Worker::start(
        &coordinator.join,
        &dir.path().join("x86b"),
        &["--cores", "1"],
    )?;
    let status = coordinator.wait_finished(job, Duration::from_secs(300))?;
    assert_eq!(status["validated"], 3, "{status}");
    for row in coordinator.dataset(job)? {
        let engines = row["engines"].to_string();
        assert!(
            engines.contains("nancanon"),
            "settled with canonical NaNs: {engines}"
        );
        // Only the aarch64 hosts run tasks in runners here.
        assert!(
            engines.contains("/runner/"),
            "an aarch64 host agrees: {engines}"
        );
    }

    let runners = children(arm.pid());
    assert!(!runners.is_empty(), "the worker keeps a warm runner");
    arm.kill();
    wait_for(
        "the runners to die with their worker",
        Duration::from_secs(10),
        || runners.iter().all(|&pid| gone(pid)).then_some(()),
    )?;
    Ok(())
}

/// In a runner process nothing in the generated code checks the time:
/// the worker kills a runner whose task runs past its deadline, the task
/// fails with the wall-clock message, and the next task gets a fresh
/// runner.
#[test]
fn a_runner_past_its_deadline_is_killed_and_the_task_fails() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path())?;
    let module = dir.path().join("endless.wasm");
    std::fs::write(&module, endless())?;
    let spec = job_spec(
        dir.path(),
        "endless",
        &module,
        1,
        "quorum = 1\nmax_error_results = 1\ndeadline_secs = 2",
    )?;
    let worker = Worker::start(
        &coordinator.join,
        &dir.path().join("w"),
        &["--cores", "1", "--task-processes"],
    )?;
    let job = coordinator.submit(&spec)?;
    let status = coordinator.wait_finished(job, Duration::from_secs(60))?;
    assert_eq!(status["failed"], 1, "{status}");
    let error: String =
        coordinator
            .db()
            .query_row("SELECT error FROM results WHERE state = 'error'", [], |r| {
                r.get(0)
            })?;
    assert!(
        error.contains("wall-clock limit of 2000 ms exceeded"),
        "{error}"
    );
    // The probe runs next, in a fresh runner.
    let spec = job_spec(dir.path(), "probe", &probe_wasm(), 2, "quorum = 1")?;
    let job = coordinator.submit(&spec)?;
    let status = coordinator.wait_finished(job, Duration::from_secs(60))?;
    assert_eq!(status["validated"], 2, "{status}");
    let engines = success_engines(&coordinator)?;
    assert!(engines.contains("/runner/"), "{engines}");
    drop(worker);
    Ok(())
}

/// The distinct engines of the coordinator's successful results, joined
/// with commas.
fn success_engines(coordinator: &Coordinator) -> Result<String> {
    Ok(coordinator.db().query_row(
        "SELECT group_concat(DISTINCT engine) FROM results WHERE state = 'success'",
        [],
        |r| r.get(0),
    )?)
}

/// On Linux a worker runs tasks in runner processes unless told
/// `--in-process`; one whose runner is missing refuses to start, with exit
/// status 78 (the service unit does not restart on it) and what to do.
#[test]
fn runners_are_the_default_and_a_missing_runner_stops_the_worker() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coordinator = Coordinator::start(dir.path())?;
    let spec = job_spec(dir.path(), "probe", &probe_wasm(), 1, "quorum = 1")?;
    let job = coordinator.submit(&spec)?;
    let worker = Worker::start(&coordinator.join, &dir.path().join("w"), &["--cores", "1"])?;
    let status = coordinator.wait_finished(job, Duration::from_secs(60))?;
    assert_eq!(status["validated"], 1, "{status}");
    let engine = success_engines(&coordinator)?;
    assert!(engine.contains("/runner/"), "{engine}");
    let runners = children(worker.pid());
    assert_eq!(runners.len(), 1, "one warm runner: {runners:?}");
    drop(worker);

    let run = |extra: &[&str]| -> Result<std::process::Output> {
        Ok(Command::new(bin("peergrid-worker"))
            .args(["run", "--join", &coordinator.join, "--data"])
            .arg(dir.path().join("v"))
            .args(extra)
            .output()?)
    };
    let out = run(&["--runner", "/nonexistent/peergrid-runner"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(
        said.contains("the task runner /nonexistent/peergrid-runner is missing")
            && said.contains("--in-process"),
        "{said}"
    );
    // A bare name is looked up on PATH.
    let out = run(&["--runner", "no-such-peergrid-runner"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(
        said.contains("the task runner no-such-peergrid-runner is missing"),
        "{said}"
    );
    let out = run(&["--in-process", "--task-processes"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("cannot be used with"), "{said}");
    Ok(())
}

/// A runner whose faults on purpose (`PEERGRID_RUNNER_FAULT`, the
/// `simulate-fault` feature) do `fault` for a task whose input begins
/// with `fault`.
fn faulty_runner(fault: &str, cache: Option<PathBuf>) -> RunnerCommand {
    RunnerCommand {
        program: bin("peergrid-runner"),
        prefix: vec![
            "env".into(),
            format!("PEERGRID_RUNNER_FAULT={fault}").into(),
        ],
        cache,
    }
}

/// What a fault on purpose said, from a runner that survived it.
fn fault_said(runner: &mut Runner, probe: &[u8]) -> Result<String> {
    let report = run(
        runner,
        probe,
        &task(&Hash::of(probe), b"fault", false, Metering::Fuel),
    )?;
    match report.outcome {
        RunnerOutcome::Error(why) if why.starts_with("simulated fault: ") => Ok(why),
        RunnerOutcome::Error(why) => anyhow::bail!("the fault's task failed otherwise: {why}"),
        RunnerOutcome::Success(_) => anyhow::bail!(
            "this peergrid-runner ignores PEERGRID_RUNNER_FAULT (built without its \
             simulate-fault feature; rebuild the tests' binaries as scripts/test does)"
        ),
    }
}

/// A field of /proc/PID/status.
fn proc_status(pid: u32, field: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Before: a runner kept every descriptor its starter left open, and ran
/// unfiltered. Now it closes them, runs under a seccomp filter with
/// `no_new_privs`, and still compiles (Cranelift's threads are allowed)
/// and keeps compiled code in its cache, the one folder landlock leaves
/// it.
#[test]
fn a_runner_holds_no_inherited_files_and_runs_under_seccomp() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("worker.sqlite");
    std::fs::write(&secret, "the worker's own file")?;
    let cache = dir.path().join("compiled");
    // bash opens the file on descriptor 7 without close-on-exec, then
    // becomes the runner: the runner inherits it.
    let command = RunnerCommand {
        program: bin("peergrid-runner"),
        prefix: vec![
            "bash".into(),
            "-c".into(),
            "exec 7<\"$0\" && exec \"$@\"".into(),
            secret.clone().into(),
        ],
        cache: Some(cache.clone()),
    };
    let mut runner = Runner::start(&command)?;
    let pid = runner.pid();
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        !held.iter().any(|p| p.contains("worker.sqlite")),
        "the runner holds its starter's file: {held:?}"
    );
    assert_eq!(proc_status(pid, "NoNewPrivs")?, "1");
    assert_eq!(proc_status(pid, "Seccomp")?, "2", "mode 2 is a filter");
    // One filter more than the test itself runs under (a container may
    // hold one already).
    let own: u32 = proc_status(std::process::id(), "Seccomp_filters")?.parse()?;
    assert_eq!(proc_status(pid, "Seccomp_filters")?, (own + 1).to_string());
    // A session of its own: no controlling terminal shared with the worker.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let session = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(3))
        .context("no session in /proc/PID/stat")?;
    assert_eq!(session, pid.to_string(), "the runner leads its own session");

    let probe = std::fs::read(probe_wasm())?;
    let report = run(
        &mut runner,
        &probe,
        &task(&Hash::of(&probe), b"x", false, Metering::Fuel),
    )?;
    output(&report)?;
    let mut kept = 0;
    for engine in std::fs::read_dir(&cache)? {
        kept += std::fs::read_dir(engine?.path())?.count();
    }
    assert!(
        kept > 0,
        "the compiled probe is kept in {}",
        cache.display()
    );
    Ok(())
}

/// Before: a runner could open a socket, exec a program, start a process
/// or type into the worker's terminal. Now each kills it with SIGSYS; the task fails saying so, and a
/// fresh runner takes the next task. Threads stay allowed.
#[test]
fn forbidden_system_calls_kill_the_runner_and_cost_one_task() -> Result<()> {
    let probe = std::fs::read(probe_wasm())?;
    let hash = Hash::of(&probe);
    let mut alive = Runner::start(&faulty_runner("thread", None))?;
    assert_eq!(
        fault_said(&mut alive, &probe)?,
        "simulated fault: thread: ok"
    );
    output(&run(
        &mut alive,
        &probe,
        &task(&hash, b"x", false, Metering::Fuel),
    )?)?;
    for fault in ["socket", "exec", "fork", "tiocsti", "tioclinux"] {
        let mut runner = Runner::start(&faulty_runner(fault, None))?;
        let e = runner
            .run(task(&hash, b"fault", false, Metering::Fuel), &probe, |_| {})
            .err()
            .with_context(|| format!("the runner survived `{fault}`"))?;
        let message = e.to_string();
        assert!(
            message.contains("signal 31, SIGSYS") && message.contains("the task is lost"),
            "{fault}: {message}"
        );
        let mut fresh = Runner::start(&faulty_runner(fault, None))?;
        output(&run(
            &mut fresh,
            &probe,
            &task(&hash, b"x", false, Metering::Fuel),
        )?)?;
    }
    Ok(())
}

/// Before: a runner (often root's, under a system install) could read any
/// file. Now landlock leaves it its cache folder alone, and without a
/// cache it opens nothing.
#[test]
fn a_runner_opens_no_file_outside_its_cache() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let outside = dir.path().join("host.key");
    std::fs::write(&outside, "a key")?;
    let cache = dir.path().join("compiled");
    std::fs::create_dir_all(&cache)?;
    let inside = cache.join("kept");
    std::fs::write(&inside, "compiled code")?;
    let probe = std::fs::read(probe_wasm())?;

    let open = |path: &std::path::Path, cache: Option<PathBuf>| -> Result<String> {
        let mut runner = Runner::start(&faulty_runner(&format!("open:{}", path.display()), cache))?;
        fault_said(&mut runner, &probe)
    };
    let said = open(&inside, Some(cache.clone()))?;
    assert!(said.ends_with("13 bytes"), "{said}");
    let said = open(&outside, Some(cache.clone()))?;
    assert!(said.contains("Permission denied"), "{said}");
    let said = open(&outside, None)?;
    assert!(said.contains("Permission denied"), "{said}");
    Ok(())
}

/// A coordinator and a worker (data in `dir/w`) whose runners provoke
/// `fault` on an input of `fault`, running a quorum-1 job of `units` probe
/// units of which the last one (`dir/NAME/inputs/unit-…`) is that input;
/// with the job's final status and the error its failed copy reported.
fn worker_with_runner_fault(
    dir: &std::path::Path,
    name: &str,
    units: usize,
    fault: &str,
) -> Result<(Coordinator, Worker, serde_json::Value, String)> {
    let coordinator = Coordinator::start(dir)?;
    let spec = job_spec(
        dir,
        name,
        &probe_wasm(),
        units,
        "quorum = 1\nmax_error_results = 1",
    )?;
    std::fs::write(
        dir.join(name).join(format!("inputs/unit-{:04}", units - 1)),
        "fault",
    )?;
    let wrapper = format!("env PEERGRID_RUNNER_FAULT={fault}");
    let worker = Worker::start(
        &coordinator.join,
        &dir.join("w"),
        &["--cores", "1", "--runner-wrapper", &wrapper],
    )?;
    let job = coordinator.submit(&spec)?;
    let status = coordinator.wait_finished(job, Duration::from_secs(60))?;
    let error: String =
        coordinator
            .db()
            .query_row("SELECT error FROM results WHERE state = 'error'", [], |r| {
                r.get(0)
            })?;
    Ok((coordinator, worker, status, error))
}

/// A runner killed by its seccomp filter costs the worker one task, which
/// fails with the reason; the worker goes on with the others.
#[test]
fn a_seccomp_kill_costs_a_worker_one_task() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_coordinator, mut worker, status, error) =
        worker_with_runner_fault(dir.path(), "socket", 3, "socket")?;
    assert_eq!(status["failed"], 1, "{status}");
    assert_eq!(status["validated"], 2, "{status}");
    assert!(error.contains("SIGSYS"), "{error}");
    assert!(worker.is_running(), "the worker goes on");
    // Runners keep compiled modules in memory only: nothing a runner
    // wrote lies where the worker (or the next runner) would load it.
    let compiled = dir.path().join("w/compiled");
    let kept: Vec<_> = walk(&compiled);
    assert!(kept.is_empty(), "a runner left compiled code: {kept:?}");
    Ok(())
}

/// Code that escaped the sandbox in a runner cannot type escapes into the
/// volunteer's terminal or journal, nor fill them, through the runner's
/// stderr: the worker passes it on line by line without control
/// characters, and closes it after 64 KiB.
#[test]
fn a_runners_stderr_reaches_the_worker_cleaned_and_bounded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_coordinator, worker, status, error) =
        worker_with_runner_fault(dir.path(), "stderr", 1, "stderr")?;
    assert_eq!(status["failed"], 1, "{status}");
    assert!(error.contains("simulated fault: stderr"), "{error}");
    let mut log = Vec::new();
    for e in std::fs::read_dir(dir.path().join("w"))? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "log") {
            log.extend(std::fs::read(&path)?);
        }
    }
    assert!(
        !log.iter().any(|&b| b == 0x1b || b == 0x07),
        "a control character reached the worker's log"
    );
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.lines().any(|l| {
            l.starts_with("peergrid-runner ") && l.ends_with(": [2J]0;ownedescaped the sandbox")
        }),
        "{text}"
    );
    assert!(
        text.contains("more than 64 KiB on stderr; the rest is dropped"),
        "{text}"
    );
    // 64 KiB of the runner's, with the prefixes, beside the worker's own.
    assert!(
        log.len() < 160 * 1024,
        "the worker's log grew to {} bytes",
        log.len()
    );
    assert!(
        error.contains("then Err("),
        "the runner's writes should fail once its stderr is closed: {error}"
    );
    drop(worker);
    Ok(())
}

/// A bug in the runner's own code (a panic outside the wasm sandbox) costs
/// one task, which fails saying how the runner ended; a fresh runner takes
/// the next.
#[test]
fn a_panic_in_the_runner_costs_one_task() -> Result<()> {
    let probe = std::fs::read(probe_wasm())?;
    let hash = Hash::of(&probe);
    let mut runner = Runner::start(&faulty_runner("panic", None))?;
    let e = runner
        .run(task(&hash, b"fault", false, Metering::Fuel), &probe, |_| {})
        .err()
        .context("the runner survived its panic (is it built with simulate-fault?)")?;
    let message = e.to_string();
    assert!(
        message.contains("exit status 101") && message.contains("the task is lost"),
        "{message}"
    );
    let mut fresh = Runner::start(&faulty_runner("panic", None))?;
    output(&run(
        &mut fresh,
        &probe,
        &task(&hash, b"x", false, Metering::Fuel),
    )?)?;
    Ok(())
}

/// A runner held to a memory limit (a cgroup, as a service manager sets
/// one) that uses more outside the sandbox, as a leak in the host would,
/// is killed by the kernel's OOM killer; the task fails saying so, and a
/// fresh runner takes the next.
#[test]
fn an_out_of_memory_kill_costs_one_task() -> Result<()> {
    let group = MemoryGroup::new(128 << 20)?;
    let in_group = |fault: &str| RunnerCommand {
        program: bin("peergrid-runner"),
        prefix: vec![
            "env".into(),
            format!("PEERGRID_RUNNER_FAULT={fault}").into(),
            "sh".into(),
            "-c".into(),
            "echo $$ > \"$0\" && exec \"$@\"".into(),
            group.dir.join("cgroup.procs").into(),
        ],
        cache: None,
    };
    let probe = std::fs::read(probe_wasm())?;
    let hash = Hash::of(&probe);
    let mut runner = Runner::start(&in_group("alloc:1024"))?;
    let e = runner
        .run(task(&hash, b"fault", false, Metering::Fuel), &probe, |_| {})
        .err()
        .context("the runner held 1 GiB under a 128 MiB limit")?;
    let message = e.to_string();
    assert!(
        message.contains("signal 9, SIGKILL: killed, perhaps for using too much memory"),
        "{message}"
    );
    assert!(group.oom_kills()? >= 1, "the OOM killer did it");
    let mut fresh = Runner::start(&in_group("alloc:1024"))?;
    output(&run(
        &mut fresh,
        &probe,
        &task(&hash, b"x", false, Metering::Fuel),
    )?)?;
    Ok(())
}

/// A memory cgroup made for one test, under the test's own (cgroup v1's
/// memory controller, or v2 where memory is delegated); removed on drop.
struct MemoryGroup {
    dir: PathBuf,
    events: &'static str,
}

impl MemoryGroup {
    fn new(limit: u64) -> Result<MemoryGroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let name = format!("peergrid-oom-{}", std::process::id());
        let v1 = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p));
        let v2 = own.lines().find_map(|l| l.strip_prefix("0::"));
        let (dir, limit_file, events) = match (v1, v2) {
            (Some(path), _) if std::path::Path::new("/sys/fs/cgroup/memory").is_dir() => (
                PathBuf::from(format!("/sys/fs/cgroup/memory{path}")).join(&name),
                "memory.limit_in_bytes",
                "memory.oom_control",
            ),
            (_, Some(path))
                if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() =>
            {
                (
                    PathBuf::from(format!("/sys/fs/cgroup{path}")).join(&name),
                    "memory.max",
                    "memory.events",
                )
            }
            _ => anyhow::bail!(
                "this test needs a memory cgroup: cgroup v1's memory controller at \
                 /sys/fs/cgroup/memory, or cgroup v2 with memory delegated (run it as root)"
            ),
        };
        std::fs::create_dir(&dir).with_context(|| {
            format!("creating the memory cgroup {} (run as root)", dir.display())
        })?;
        let group = MemoryGroup { dir, events };
        std::fs::write(group.dir.join(limit_file), limit.to_string())
            .with_context(|| format!("setting {limit_file}"))?;
        Ok(group)
    }

    /// Processes the OOM killer ended in this group.
    fn oom_kills(&self) -> Result<u64> {
        let text = std::fs::read_to_string(self.dir.join(self.events))?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .with_context(|| format!("no oom_kill count in {}: {text}", self.events))
    }
}

impl Drop for MemoryGroup {
    fn drop(&mut self) {
        // The runners in it are gone (killed with their Runner); a group
        // is removed once empty, which may take a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Before: a runner's own allocations were bounded by nothing but the
/// machine. Now its writable memory is held (RLIMIT_DATA) to its task's
/// memory plus a headroom, under a hard limit of the largest task's: a
/// runner leaking 1 GiB beside a 64 MiB task is stopped (signal 6: an
/// allocation failed), while 256 MiB beside a 256 MiB task is allowed.
#[test]
fn a_runners_memory_is_held_to_its_tasks_by_the_os() -> Result<()> {
    let probe = std::fs::read(probe_wasm())?;
    let mut small = task(&Hash::of(&probe), b"fault", false, Metering::Fuel);
    small.limits.memory_bytes = 64 << 20;
    let mut runner = Runner::start(&faulty_runner("alloc:1024", None))?;
    let e = runner
        .run(small, &probe, |_| {})
        .err()
        .context("the runner held 1 GiB beside a 64 MiB task")?;
    let message = e.to_string();
    assert!(message.contains("signal 6"), "{message}");

    let mut runner = Runner::start(&faulty_runner("alloc:256", None))?;
    assert_eq!(
        fault_said(&mut runner, &probe)?,
        "simulated fault: alloc: held 256 MiB"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", runner.pid()))?;
    let data: Vec<&str> = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max data size"))
        .context("no data size in /proc/PID/limits")?
        .split_whitespace()
        .collect();
    let mib = |v: &str| v.parse::<u64>().map(|b| b >> 20).unwrap_or(0);
    assert_eq!(
        (mib(data[0]), mib(data[1])),
        (256 + 512, 4096 + 512),
        "soft: the task's memory and the headroom; hard: the largest task's"
    );
    Ok(())
}

/// Every file beneath `dir` (none if it does not exist).
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Before: a runner could signal any process of its user (or, as root,
/// any process). Now landlock's signal scope (Linux 6.12, ABI 6) refuses
/// a signal to any process outside the runner.
#[test]
fn a_runner_cannot_signal_other_processes() -> Result<()> {
    let mut bystander = Command::new("sleep").arg("60").spawn()?;
    let probe = std::fs::read(probe_wasm())?;
    let mut runner = Runner::start(&faulty_runner(&format!("signal:{}", bystander.id()), None))?;
    let said = fault_said(&mut runner, &probe)?;
    let alive = bystander.try_wait()?.is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(
        said.contains(": -1, Operation not permitted") && alive,
        "{said} (landlock's signal scope needs Linux 6.12 or later)"
    );
    Ok(())
}
