//! Tasks in runner processes (the default on Linux): each
//! running task borrows a warm `peergrid-runner` from a [`Pool`] and a
//! pacer thread beside it acts on [`TaskRun::decide`] with signals:
//! SIGSTOP and SIGCONT for the duty cycle and suspensions, SIGKILL for a
//! stop and at the wall-clock deadline (paused time excluded). The runner's
//! generated code has no epoch checks. A runner that dies costs its task,
//! which fails with how it died; the next task gets a fresh runner.
//!
//! The pool starts runners from one long-lived thread, because a runner
//! dies with the thread that started it (`PR_SET_PDEATHSIG`): a worker
//! killed with SIGKILL leaves no runner behind.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peergrid_os::lock;
use peergrid_os::process::{Signal, signal};
use peergrid_proto::limits::{MAX_CHECKPOINT, MAX_STDERR_TAIL};
use peergrid_proto::runner::{FromRunner, RunTask, RunnerOutcome};
use peergrid_proto::text::stderr_tail;
use peergrid_proto::wire::{Outcome, Task, TaskReport, error_with_stderr};
use peergrid_runner::{Pool, RunnerCommand};

use super::run_rules::Step;
use super::task_run::{Decision, TaskRun};
use crate::sandbox::Checkpoint;

/// How often the pacer looks at the task's decision.
const PACE_TICK: Duration = Duration::from_millis(10);
/// On shutdown, how often the pacer repeats its request for a checkpoint.
const CHECKPOINT_ASK_EVERY: Duration = Duration::from_millis(250);

/// How to start task runners: `None` to run tasks in the worker's own
/// threads (`in_runners` false); else `peergrid-runner` beside this
/// executable, or `program`, under `wrapper` (split at spaces). `Err` with
/// what to do when that program is missing (a bare name is looked up on
/// PATH; a wrapper finds its program itself, so it is not checked then).
pub fn runner_command(
    in_runners: bool,
    program: Option<PathBuf>,
    wrapper: Option<String>,
) -> std::io::Result<Result<Option<RunnerCommand>, String>> {
    if !in_runners {
        return Ok(Ok(None));
    }
    let mut command = RunnerCommand::beside_current_exe()?;
    if let Some(program) = program {
        command.program = program;
    }
    command.prefix = wrapper
        .unwrap_or_default()
        .split_whitespace()
        .map(Into::into)
        .collect();
    if !command.prefix.is_empty() {
        return Ok(Ok(Some(command)));
    }
    let missing = |program: &std::path::Path| {
        Ok(Err(format!(
            "the task runner {} is missing: install peergrid-runner beside peergrid-worker, \
             name it with --runner PATH, or run tasks in the worker's own threads with --in-process",
            program.display()
        )))
    };
    // A bare name is looked up on PATH, as starting it would.
    if command
        .program
        .parent()
        .is_some_and(|dir| dir.as_os_str().is_empty())
    {
        let found = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(&command.program))
                .find(|candidate| candidate.is_file())
        });
        match found {
            Some(found) => command.program = found,
            None => return missing(&command.program),
        }
    }
    if is_missing(&command.program) {
        return missing(&command.program);
    }
    Ok(Ok(Some(command)))
}

/// Whether `program` is certainly not there: nothing at that path, or
/// something other than a file. A path this user may not look at (a
/// folder it cannot read, which exec may still pass through) is left for
/// starting it to judge.
fn is_missing(program: &std::path::Path) -> bool {
    match std::fs::metadata(program) {
        Ok(meta) => !meta.is_file(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Runs `task` (its randomness seeded with `seed`) in a runner from
/// `pool`, paced by `run`, and reports it as the in-process sandbox would.
pub(super) fn run_in_runner(
    pool: &Pool,
    task: &Task,
    seed: u64,
    module: &[u8],
    checkpoint: Option<Checkpoint>,
    run: Arc<TaskRun>,
) -> TaskReport {
    let started = Instant::now();
    let report = |outcome: Outcome, fuel_used: u64, engine: String, resumed: bool| TaskReport {
        unit: task.unit,
        outcome,
        fuel_used,
        elapsed_ms: started.elapsed().as_millis() as u64,
        engine,
        resumed,
    };
    let mut runner = match pool.take() {
        Ok(runner) => runner,
        Err(e) => return report(Outcome::Error(e.to_string()), 0, String::new(), false),
    };
    let request = RunTask {
        module: task.module,
        module_bytes: None,
        input: task.input.clone(),
        args: task.args.clone(),
        seed,
        limits: task.limits,
        canonical_nan: task.canonical_nan,
        resume: checkpoint.map(|c| (c.state, c.fuel_used)),
        checkpoint_every_ms: run.checkpoint_interval().as_millis() as u64,
    };
    let pacer = Pacer {
        pid: runner.pid(),
        run: run.clone(),
        wall: Duration::from_millis(task.limits.wall_ms),
        started: Mutex::new(None),
        done: AtomicBool::new(false),
        killed: AtomicBool::new(false),
        over_time: AtomicBool::new(false),
    };
    let result = std::thread::scope(|scope| {
        let pacing = scope.spawn(|| pacer.pace());
        let result = runner.run(request, module, |event| match event {
            FromRunner::Started => *lock(&pacer.started) = Some(Instant::now()),
            FromRunner::UsesCheckpoints => run.uses_checkpoints(),
            FromRunner::Checkpoint { state, .. } if state.len() > MAX_CHECKPOINT => {
                tracing::warn!(
                    unit = task.unit,
                    bytes = state.len(),
                    "a runner sent a checkpoint over the limit; not kept"
                );
            }
            FromRunner::Checkpoint { state, fuel_used } => {
                run.checkpoint_from_runner(Checkpoint { state, fuel_used });
            }
            FromRunner::Progress(fraction) => {
                crate::sandbox::TaskHooks::progress(run.as_ref(), fraction)
            }
            _ => {}
        });
        pacer.done.store(true, Ordering::Relaxed);
        // Wakes it from its tick's wait: a tiny task's end must not wait
        // for the pacer's next look (up to 10 ms, most of such a task).
        pacing.thread().unpark();
        let _ = pacing.join();
        result
    });
    // A runner the pacer killed (a stop or the deadline racing the end of
    // the task) is not used again, whatever the task's end.
    let reusable = !pacer.killed.load(Ordering::Relaxed);
    match result {
        Ok(done) => {
            // The pacer may have paused it last: let it run its next task.
            let _ = signal(runner.pid(), Signal::Continue);
            let outcome = match done.outcome {
                RunnerOutcome::Success(out) => Outcome::Success(out),
                RunnerOutcome::Error(e) => Outcome::Error(error_with_stderr(
                    e,
                    &stderr_tail(&done.stderr, MAX_STDERR_TAIL),
                )),
            };
            let engine = done.engine.clone();
            if reusable {
                pool.give_back(runner);
            }
            report(outcome, done.fuel_used, engine, done.resumed)
        }
        Err(e) => {
            let message = if pacer.over_time.load(Ordering::Relaxed) {
                format!("wall-clock limit of {} ms exceeded", task.limits.wall_ms)
            } else {
                e.to_string()
            };
            report(Outcome::Error(message), 0, String::new(), false)
        }
    }
}

/// The pacer's wait between looks: one tick, or less when the run ends
/// (`run_in_runner` unparks it; a spurious wake only means an early look).
fn wait_tick() {
    std::thread::park_timeout(PACE_TICK);
}

/// Acts on a running task's decisions with signals to its runner.
struct Pacer {
    pid: u32,
    run: Arc<TaskRun>,
    /// The task's wall-clock budget, pauses excluded, counted from the
    /// runner's `Started` (compilation excluded, as in process).
    wall: Duration,
    /// When the runner said `Started`.
    started: Mutex<Option<Instant>>,
    /// The run ended: stop pacing.
    done: AtomicBool,
    /// The pacer killed the runner (a stop, or the deadline).
    killed: AtomicBool,
    /// The pacer killed the runner at the deadline.
    over_time: AtomicBool,
}

impl Pacer {
    fn pace(&self) {
        // Paused time since the task started running.
        let mut paused = Duration::ZERO;
        let mut asked_checkpoint: Option<Instant> = None;
        while !self.done.load(Ordering::Relaxed) {
            let pause = match self.run.decide() {
                Decision::Stop(_) => {
                    self.kill();
                    return;
                }
                Decision::Step(Step::Nap(pause)) => self.paused_while(|at| at.elapsed() < pause),
                Decision::Step(Step::AwaitResume) => self.paused_while(|_| self.run.suspended()),
                Decision::Step(_) => {
                    // Shutting down and waiting for a last checkpoint: ask
                    // the runner for one now (again every 250 ms, in case
                    // a request raced the task's start).
                    if self.run.shutting_down()
                        && asked_checkpoint.is_none_or(|at| at.elapsed() >= CHECKPOINT_ASK_EVERY)
                    {
                        let _ = signal(self.pid, Signal::CheckpointNow);
                        asked_checkpoint = Some(Instant::now());
                    }
                    wait_tick();
                    Duration::ZERO
                }
            };
            let Some(started) = *lock(&self.started) else {
                continue;
            };
            paused += pause.min(started.elapsed());
            if started.elapsed().saturating_sub(paused) > self.wall + PACE_TICK {
                self.over_time.store(true, Ordering::Relaxed);
                self.kill();
                return;
            }
        }
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        let _ = signal(self.pid, Signal::Kill);
    }

    /// Keeps the runner stopped while `go_on(since)` holds (and the task is
    /// neither done nor interrupted); returns how long it was stopped.
    fn paused_while(&self, go_on: impl Fn(Instant) -> bool) -> Duration {
        let since = Instant::now();
        if signal(self.pid, Signal::Stop).is_err() {
            return Duration::ZERO;
        }
        while go_on(since) && !self.done.load(Ordering::Relaxed) && !self.run.stopping() {
            wait_tick();
        }
        let _ = signal(self.pid, Signal::Continue);
        self.run.paused();
        since.elapsed()
    }
}
