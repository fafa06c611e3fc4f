//! Warm runners for whoever runs many tasks: the worker's slots and the
//! coordinator's custom validators. [`Pool`] keeps the runners that
//! finished cleanly and starts new ones from one long-lived thread, since a
//! runner dies with the *thread* that started it (`PR_SET_PDEATHSIG`).
//! [`Pool::run_within`] runs one task with nothing but a wall-clock
//! deadline, enforced from outside by killing the runner, in a runner that
//! has run no other module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use peergrid_os::lock;
use peergrid_os::process::{Signal, signal};
use peergrid_proto::Hash;
use peergrid_proto::runner::{FromRunner, RunTask, RunnerReport};

use crate::{Runner, RunnerCommand, RunnerError};

/// How often a deadline watch looks at the clock.
const WATCH_TICK: Duration = Duration::from_millis(10);
/// How long a task in [`Pool::run_within`] may take to say `Started` (its
/// module compiled and linked) before its runner is killed.
const START_ALLOWANCE: Duration = Duration::from_secs(60);

/// Warm runners, and the thread that starts new ones.
pub struct Pool {
    /// Idle runners, each with the module it last ran (for
    /// [`Pool::run_within`], which reuses a runner only for the same
    /// module), oldest first.
    idle: Mutex<Vec<(Option<Hash>, Runner)>>,
    /// At most this many idle runners are kept.
    keep: usize,
    starter: Mutex<mpsc::Sender<mpsc::Sender<Result<Runner, RunnerError>>>>,
}

/// Why [`Pool::run_within`] has no report.
#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    /// No runner could be had: nothing ran (worth trying again later).
    #[error("no task runner: {0}")]
    NoRunner(RunnerError),
    #[error("wall-clock limit of {0} ms exceeded")]
    OverTime(u64),
    #[error("the module did not start within {} s", START_ALLOWANCE.as_secs())]
    NeverStarted,
    /// The runner failed during the task.
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

impl Pool {
    /// A pool of runners started with `command`, from a thread that lives
    /// as long as the process, keeping at most `keep` idle ones.
    pub fn new(command: RunnerCommand, keep: usize) -> std::io::Result<Pool> {
        let (starter, requests) = mpsc::channel::<mpsc::Sender<Result<Runner, RunnerError>>>();
        std::thread::Builder::new()
            .name("peergrid-runner-starter".into())
            .spawn(move || {
                for reply in requests {
                    let _ = reply.send(Runner::start(&command));
                }
                // The pool is gone; parking keeps this thread (the runners'
                // parent for PR_SET_PDEATHSIG) alive until the process ends.
                loop {
                    std::thread::park();
                }
            })?;
        Ok(Pool {
            idle: Mutex::new(Vec::new()),
            keep,
            starter: Mutex::new(starter),
        })
    }

    /// A warm runner (one that ended while idle is dropped), or a fresh
    /// one.
    pub fn take(&self) -> Result<Runner, RunnerError> {
        self.take_for(None)
    }

    /// A warm runner that last ran `module` (any, for `None`), or a fresh
    /// one.
    fn take_for(&self, module: Option<Hash>) -> Result<Runner, RunnerError> {
        loop {
            let found = {
                let mut idle = lock(&self.idle);
                let at = idle
                    .iter()
                    .rposition(|(last, _)| module.is_none() || *last == module);
                at.map(|at| idle.remove(at).1)
            };
            // Checked and dropped (killed and reaped) without the lock.
            let Some(mut runner) = found else { break };
            if runner.is_alive() {
                return Ok(runner);
            }
            tracing::warn!("a warm task runner had ended; starting another");
        }
        let (reply, answer) = mpsc::channel();
        let gone = || RunnerError::Died("the runner starter thread is gone".into());
        lock(&self.starter).send(reply).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// Keeps a runner that finished its task cleanly for the next one (or
    /// ends it, when enough are idle).
    pub fn give_back(&self, runner: Runner) {
        self.give_back_after(None, runner);
    }

    /// [`Pool::give_back`] of a runner that last ran `module`; the oldest
    /// idle runner makes room when `keep` are idle.
    fn give_back_after(&self, module: Option<Hash>, runner: Runner) {
        let surplus = {
            let mut idle = lock(&self.idle);
            idle.push((module, runner));
            (idle.len() > self.keep).then(|| idle.remove(0))
        };
        // Killed and reaped without the lock.
        drop(surplus);
    }

    /// Runs `task` in a runner of the pool that has run nothing but
    /// `task.module` (a runner is never handed from one module to another:
    /// a module that escaped the sandbox in it cannot answer for the next
    /// one), and kills the runner once it has run `wall` past its `Started`
    /// (compilation excluded), or when it has not started within
    /// [`START_ALLOWANCE`]. A runner that finished cleanly goes back to the
    /// pool; one that died or was killed is reaped, and the next task gets
    /// a fresh one.
    pub fn run_within(
        &self,
        task: RunTask,
        module_bytes: &[u8],
        wall: Duration,
    ) -> Result<RunnerReport, BoundedError> {
        let module = task.module;
        let mut runner = self
            .take_for(Some(module))
            .map_err(BoundedError::NoRunner)?;
        let pid = runner.pid();
        let begun = Instant::now();
        let started: Mutex<Option<Instant>> = Mutex::new(None);
        let (done, over_time, never_started) = (
            AtomicBool::new(false),
            AtomicBool::new(false),
            AtomicBool::new(false),
        );
        let result = std::thread::scope(|scope| {
            // Joined before the runner can be reaped: it never signals a
            // pid another process may have taken.
            let watch = scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let late = match *lock(&started) {
                        Some(at) => (at.elapsed() > wall).then_some(&over_time),
                        None => (begun.elapsed() > START_ALLOWANCE).then_some(&never_started),
                    };
                    if let Some(flag) = late {
                        flag.store(true, Ordering::Relaxed);
                        let _ = signal(pid, Signal::Kill);
                        return;
                    }
                    std::thread::sleep(WATCH_TICK);
                }
            });
            let result = runner.run(task, module_bytes, |event| {
                if let FromRunner::Started = event {
                    *lock(&started) = Some(Instant::now());
                }
            });
            done.store(true, Ordering::Relaxed);
            let _ = watch.join();
            result
        });
        if over_time.load(Ordering::Relaxed) {
            return Err(BoundedError::OverTime(wall.as_millis() as u64));
        }
        if never_started.load(Ordering::Relaxed) {
            return Err(BoundedError::NeverStarted);
        }
        let report = result?;
        self.give_back_after(Some(module), runner);
        Ok(report)
    }
}
