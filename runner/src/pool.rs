//! Warm runners for whoever runs many tasks: the worker's slots and the
//! coordinator's custom validators. [`Pool`] keeps the runners that
//! finished cleanly and starts new ones from one long-lived thread, since a
//! runner dies with the *thread* that started it (`PR_SET_PDEATHSIG`).
//! [`Pool::run_within`] runs one task with nothing but a wall-clock
//! deadline, enforced from outside by killing the runner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use peergrid_os::lock;
use peergrid_os::process::{Signal, signal};
use peergrid_proto::runner::{FromRunner, RunTask, RunnerReport};

use crate::{Runner, RunnerCommand, RunnerError};

/// How often a deadline watch looks at the clock.
const WATCH_TICK: Duration = Duration::from_millis(10);

/// Warm runners, and the thread that starts new ones.
pub struct Pool {
    idle: Mutex<Vec<Runner>>,
    /// At most this many idle runners are kept.
    keep: usize,
    starter: Mutex<mpsc::Sender<mpsc::Sender<Result<Runner, RunnerError>>>>,
}

/// Why [`Pool::run_within`] has no report.
#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    #[error("wall-clock limit of {0} ms exceeded")]
    OverTime(u64),
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
        while let Some(mut runner) = lock(&self.idle).pop() {
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
        let mut idle = lock(&self.idle);
        if idle.len() < self.keep {
            idle.push(runner);
        }
    }

    /// Runs `task` in a runner of the pool and kills the runner once it has
    /// run `wall` past its `Started` (compilation excluded). A runner that
    /// finished cleanly goes back to the pool; one that died or was killed
    /// is reaped, and the next task gets a fresh one.
    pub fn run_within(
        &self,
        task: RunTask,
        module_bytes: &[u8],
        wall: Duration,
    ) -> Result<RunnerReport, BoundedError> {
        let mut runner = self.take()?;
        let pid = runner.pid();
        let started: Mutex<Option<Instant>> = Mutex::new(None);
        let (done, over_time) = (AtomicBool::new(false), AtomicBool::new(false));
        let result = std::thread::scope(|scope| {
            // Joined before the runner can be reaped: it never signals a
            // pid another process may have taken.
            let watch = scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    if lock(&started).is_some_and(|at| at.elapsed() > wall) {
                        over_time.store(true, Ordering::Relaxed);
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
        let report = result?;
        self.give_back(runner);
        Ok(report)
    }
}
