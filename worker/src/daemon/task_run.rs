//! [`TaskRun`]: one running task's side of the sandbox. Checkpoints go to
//! the state database, progress to `status`, and the task is paced on its
//! own blocking thread: the duty cycle and suspensions are sleeps there,
//! and on SIGTERM it keeps a last checkpoint (within
//! [`STOP_GRACE`](super::run_rules::STOP_GRACE)) and stops. The decisions
//! are made in [`run_rules`]; this file measures times, sleeps and
//! records.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peergrid_os::{lock, now_ms};
use peergrid_proto::wire::{Task, UnitId};

use super::Shared;
use super::run_rules::{self, Step, Tick};
use crate::governor::DutyCycle;
use crate::sandbox::{Checkpoint, Pace, TaskHooks};
use crate::state::LocalState;

/// How long a paused task sleeps between looks at the gate.
const PAUSE_STEP: Duration = Duration::from_millis(50);

/// One running task's side of the sandbox: checkpoints go to the state
/// database, progress to `status`, and the task is paced by the duty cycle
/// and paused while computing is suspended.
pub struct TaskRun {
    pub(super) unit: UnitId,
    pub(super) job: u64,
    pub(super) started: Instant,
    state: Arc<LocalState>,
    shared: Arc<Shared>,
    /// The checkpoint to resume from, handed over once.
    resume: Mutex<Option<Checkpoint>>,
    pub(super) resumed: bool,
    /// When the last checkpoint was kept (or the task started).
    last_checkpoint: Mutex<Instant>,
    /// The module called `checkpoint` at least once: it uses the SDK, so
    /// on shutdown it is worth waiting for its next checkpoint.
    uses_sdk: AtomicBool,
    /// A checkpoint was kept after shutdown began: stop now.
    saved_for_stop: AtomicBool,
    /// When shutdown was first seen by this task.
    stop_seen: Mutex<Option<Instant>>,
    /// The run was stopped by the worker: its report means nothing.
    stopped: AtomicBool,
    /// The coordinator no longer wants it (its job was cancelled): stop at
    /// the next tick, keeping nothing.
    cancelled: AtomicBool,
    /// The volunteer aborted the task: stop, and give it back.
    aborted: AtomicBool,
    /// `progress` as f64 bits; `u64::MAX`: never reported.
    progress: AtomicU64,
    /// Where the pace is measured from: progress 0 at the start of a
    /// fresh task; for a resumed one, its first report in this run (the
    /// fraction done before the restart took no time of this run).
    pace_from: Mutex<Option<(f64, Instant)>>,
    /// Running time since the last duty-cycle pause.
    since_pause: Mutex<Instant>,
    /// The task's memory limit, in bytes.
    reserved: AtomicU64,
}

impl TaskRun {
    /// `task` (its limits already bounded) starting now, resuming from
    /// `checkpoint` if any, paced by the volunteer's preferences in force
    /// at each tick; its memory limit counts against the budget.
    pub(super) fn new(
        task: &Task,
        checkpoint: Option<Checkpoint>,
        resumed_elsewhere: bool,
        state: Arc<LocalState>,
        shared: Arc<Shared>,
    ) -> TaskRun {
        let now = Instant::now();
        let resumed = checkpoint.is_some() || resumed_elsewhere;
        TaskRun {
            unit: task.unit,
            job: task.job,
            started: now,
            state,
            shared,
            pace_from: Mutex::new((!resumed).then_some((0.0, now))),
            resumed,
            resume: Mutex::new(checkpoint),
            last_checkpoint: Mutex::new(now),
            uses_sdk: AtomicBool::new(false),
            saved_for_stop: AtomicBool::new(false),
            stop_seen: Mutex::new(None),
            stopped: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            progress: AtomicU64::new(u64::MAX),
            since_pause: Mutex::new(now),
            reserved: AtomicU64::new(task.limits.memory_bytes),
        }
    }

    /// The last fraction the task reported, if any.
    pub(super) fn progress(&self) -> Option<f64> {
        let bits = self.progress.load(Ordering::Relaxed);
        (bits != u64::MAX).then(|| f64::from_bits(bits))
    }

    /// Seconds left at this run's pace so far (see [`run_rules::eta_secs`]).
    pub(super) fn eta_secs(&self) -> Option<u64> {
        let (from, since) = (*lock(&self.pace_from))?;
        run_rules::eta_secs(from, self.progress(), since.elapsed())
    }

    /// The memory limit this task runs with, counted against the budget.
    pub(super) fn reserved_memory(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// The worker stopped the run (shutdown): its report means nothing.
    pub(super) fn was_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Stops the task at its next epoch tick; the core gives it back.
    pub(super) fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
    }

    /// Whether the volunteer aborted the task.
    pub(super) fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    /// Shutdown, or the task was aborted or cancelled: naps and pauses
    /// end early (in this thread, or the pacer's for a runner process).
    pub(super) fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
            || self.aborted()
            || self.cancelled.load(Ordering::Relaxed)
    }

    /// Stops the run at its next tick (within one epoch tick, or one pause
    /// step while it naps or waits out a suspension); its report is
    /// dropped.
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Sleeps `d` in short steps, returning early on shutdown.
    fn nap(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(PAUSE_STEP));
        }
    }

    /// Sleeps while computing is suspended, returning early on shutdown.
    fn await_resume(&self) {
        while self.shared.suspended() && !self.stopping() {
            std::thread::sleep(PAUSE_STEP);
        }
    }

    /// What the task knows at this tick, measured at `now`.
    fn tick(&self, now: Instant) -> Tick {
        let stopping_for = self.shared.stopping.load(Ordering::Relaxed).then(|| {
            let seen = *lock(&self.stop_seen).get_or_insert(now);
            now.saturating_duration_since(seen)
        });
        Tick {
            aborted: self.aborted(),
            stopping_for,
            uses_sdk: self.uses_sdk.load(Ordering::Relaxed),
            saved_for_stop: self.saved_for_stop.load(Ordering::Relaxed),
            suspended: self.shared.suspended(),
            ran: now.saturating_duration_since(*lock(&self.since_pause)),
        }
    }
}

impl TaskHooks for TaskRun {
    fn resume_from(&self) -> Option<Checkpoint> {
        lock(&self.resume).take()
    }

    fn wants_checkpoint(&self) -> bool {
        self.uses_sdk.store(true, Ordering::Relaxed);
        run_rules::checkpoint_due(
            self.shared.stopping.load(Ordering::Relaxed),
            lock(&self.last_checkpoint).elapsed(),
            self.shared.live().prefs.checkpoint_interval(),
        )
    }

    fn checkpoint(&self, checkpoint: Checkpoint) {
        match self.state.save_checkpoint(self.unit, &checkpoint, now_ms()) {
            Ok(()) => {
                tracing::debug!(
                    unit = self.unit,
                    bytes = checkpoint.state.len(),
                    fuel = checkpoint.fuel_used,
                    "checkpoint kept"
                );
                *lock(&self.last_checkpoint) = Instant::now();
                if self.stopping() {
                    self.saved_for_stop.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(unit = self.unit, "cannot keep a checkpoint: {e:#}"),
        }
    }

    fn progress(&self, fraction: f64) {
        self.progress.store(fraction.to_bits(), Ordering::Relaxed);
        lock(&self.pace_from).get_or_insert((fraction, Instant::now()));
    }

    fn pace(&self) -> Pace {
        match self.decide() {
            Decision::Stop(why) => return Pace::Stop(why),
            Decision::Step(Step::AwaitResume) => {
                self.await_resume();
                self.paused();
            }
            Decision::Step(Step::Nap(pause)) => {
                self.nap(pause);
                self.paused();
            }
            Decision::Step(_) => {}
        }
        Pace::Continue
    }
}

/// What a running task does now ([`TaskRun::decide`]).
#[derive(Debug, PartialEq)]
pub(super) enum Decision {
    /// Stop the run (the worker asked for it: its report means nothing).
    Stop(String),
    /// Run on ([`Step::Run`]), nap, or wait out a suspension.
    Step(Step),
}

impl TaskRun {
    /// What the task does now, as [`run_rules::step`] decides from what the
    /// worker knows. A stop is recorded ([`TaskRun::was_stopped`]); the
    /// caller pauses or stops the run (in this thread for the in-process
    /// sandbox, by signals for a runner process).
    pub(super) fn decide(&self) -> Decision {
        if self.cancelled.load(Ordering::Relaxed) {
            self.stopped.store(true, Ordering::Relaxed);
            return Decision::Stop("the coordinator cancelled the task".into());
        }
        let duty = DutyCycle {
            percent: self.shared.live().prefs.cpu_time_percent,
        };
        match run_rules::step(self.tick(Instant::now()), duty) {
            Step::Stop => {
                self.stopped.store(true, Ordering::Relaxed);
                Decision::Stop(if self.aborted() {
                    "aborted by the volunteer".into()
                } else {
                    "the worker is shutting down".into()
                })
            }
            step => Decision::Step(step),
        }
    }

    /// A pause (nap or suspension) just ended: the duty cycle counts
    /// running time from now.
    pub(super) fn paused(&self) {
        *lock(&self.since_pause) = Instant::now();
    }

    /// Whether computing is suspended now.
    pub(super) fn suspended(&self) -> bool {
        self.shared.suspended()
    }

    /// A runner process forwarded a checkpoint: the module uses the SDK.
    pub(super) fn checkpoint_from_runner(&self, checkpoint: Checkpoint) {
        self.uses_checkpoints();
        TaskHooks::checkpoint(self, checkpoint);
    }

    /// The module asked about checkpoints (in a runner process): on
    /// shutdown it is worth waiting for its next one.
    pub(super) fn uses_checkpoints(&self) {
        self.uses_sdk.store(true, Ordering::Relaxed);
    }

    /// Whether the worker is shutting down.
    pub(super) fn shutting_down(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }

    /// The volunteer's checkpoint interval in force.
    pub(super) fn checkpoint_interval(&self) -> Duration {
        self.shared.live().prefs.checkpoint_interval()
    }
}
