//! The core's decisions about tasks, sans-IO: which held task is given
//! back because it can no longer start in time, what memory a task runs
//! with and whether it fits next to the running ones, what a running task
//! does at each epoch tick (run on, nap for the duty cycle, wait out a
//! suspension, or stop for shutdown), when it is due a checkpoint, and
//! when the governor's decision is worth a log line.
//!
//! No clock, no thread, no database: times are arguments (durations
//! measured by the caller) and decisions are return values. The core
//! (`slots`) and `TaskRun` read the shared state, ask here, and act.

use std::time::Duration;

use peergrid_proto::deadline;
use peergrid_proto::limits::{MAX_OUTPUT, MAX_TASK_MEMORY};
use peergrid_proto::wire::TaskLimits;

use crate::governor::{DutyCycle, Suspension};

/// Longest wall-clock budget a worker grants one task (the spec's longest
/// deadline, 30 days).
pub const MAX_WALL_MS: u64 = 30 * 86_400 * 1000;
/// After SIGTERM, how long a task that uses the guest SDK may run on to
/// reach its next `checkpoint` call before it is stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Whether a held task is given back: it is not running and can no longer
/// start at `now_ms` and report by `due_ms` within its wall-clock budget
/// (capped at [`MAX_WALL_MS`]). The coordinator voids the copy without
/// charging this host and hands the unit to another.
pub fn must_give_back(now_ms: u64, due_ms: u64, wall_ms: u64, running: bool) -> bool {
    !running && !deadline::can_start(now_ms, due_ms, wall_ms.min(MAX_WALL_MS))
}

/// The memory limit a task runs with: the job's `limit`, capped by the
/// protocol bound, the volunteer's per-task cap (`cap_mb`) and the
/// governor's `budget`.
pub fn task_memory(limit: u64, cap_mb: Option<u64>, budget: u64) -> u64 {
    let mut memory = limit.min(MAX_TASK_MEMORY);
    if let Some(cap) = cap_mb {
        memory = memory.min(cap.saturating_mul(1024 * 1024));
    }
    memory.min(budget)
}

/// Whether a task needing `memory` bytes fits the `budget` next to running
/// tasks that reserved `reserved` bytes. A task always runs alone (its
/// memory is capped by the budget anyway).
pub fn memory_fits(reserved: u64, memory: u64, budget: u64) -> bool {
    reserved == 0 || reserved.saturating_add(memory) <= budget
}

/// The coordinator's limits, trusted only within protocol bounds: memory
/// as [`task_memory`] decided, output and wall-clock time capped.
pub fn bounded_limits(limits: TaskLimits, memory: u64) -> TaskLimits {
    TaskLimits {
        memory_bytes: memory,
        max_output_bytes: limits.max_output_bytes.min(MAX_OUTPUT as u64),
        wall_ms: limits.wall_ms.min(MAX_WALL_MS),
        ..limits
    }
}

/// What a running task's pacing hook knows at an epoch tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tick {
    /// The volunteer aborted this task (`peergrid-worker abort`, `detach`).
    pub aborted: bool,
    /// Shutdown began this long ago (since this task first saw it), or
    /// `None` while the worker runs on.
    pub stopping_for: Option<Duration>,
    /// The module called `checkpoint`: it uses the guest SDK.
    pub uses_sdk: bool,
    /// A checkpoint was kept since shutdown began.
    pub saved_for_stop: bool,
    /// The governor suspends computing.
    pub suspended: bool,
    /// Running time since the last pause.
    pub ran: Duration,
}

/// What a running task does at an epoch tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run on.
    Run,
    /// Sleep this long (the duty cycle), then run on.
    Nap(Duration),
    /// Sleep until computing resumes (or shutdown), then run on.
    AwaitResume,
    /// The worker is shutting down: end the run; it resumes at the next
    /// start from its last checkpoint.
    Stop,
}

/// The pacing decision. An aborted task stops at once. On shutdown a task that uses the SDK runs on (no
/// pause, no nap) until it keeps a checkpoint or [`STOP_GRACE`] passes;
/// any other task stops at once. Otherwise a suspension holds the task,
/// and the duty cycle naps it after its share of running.
pub fn step(tick: Tick, duty: DutyCycle) -> Step {
    if tick.aborted {
        // Given back: no checkpoint is worth waiting for.
        return Step::Stop;
    }
    if let Some(since) = tick.stopping_for {
        let wait_for_checkpoint = tick.uses_sdk && !tick.saved_for_stop && since < STOP_GRACE;
        return if wait_for_checkpoint {
            Step::Run
        } else {
            Step::Stop
        };
    }
    if tick.suspended {
        return Step::AwaitResume;
    }
    duty.pause_after(tick.ran).map_or(Step::Run, Step::Nap)
}

/// Whether a task is due a checkpoint: on shutdown always, otherwise once
/// `interval` passed since the last one was kept (or the task started).
pub fn checkpoint_due(stopping: bool, since_last: Duration, interval: Duration) -> bool {
    stopping || since_last >= interval
}

/// Seconds left for a task whose progress went from `from` to `progress`
/// in `elapsed` (naps and suspensions included), assuming it goes on at
/// the same pace: `None` without progress (the module does not use the
/// SDK), before any since `from`, or before any time has passed. A fresh
/// task measures from 0 at its start; a resumed one from its first report
/// after the restart, so the work done before it does not read as speed.
pub fn eta_secs(from: f64, progress: Option<f64>, elapsed: Duration) -> Option<u64> {
    let p = progress.filter(|p| p.is_finite())?.min(1.0);
    let done = p - from;
    if done <= 0.0 || elapsed.is_zero() {
        return None;
    }
    Some((elapsed.as_secs_f64() * (1.0 - p) / done).round() as u64)
}

/// Whether the volunteer's pause is over by itself at `now_ms`: it was a
/// `pause --for` ending at `until_ms`.
pub fn pause_over(user_paused: bool, until_ms: Option<u64>, now_ms: u64) -> bool {
    user_paused && until_ms.is_some_and(|until| now_ms >= until)
}

/// Whether the governor's new decision is worth a log line and a wake-up
/// of the core: computing goes from allowed to suspended or back. A change
/// of reason while suspended is not.
pub fn suspension_changed(before: &Option<Suspension>, after: &Option<Suspension>) -> bool {
    before.is_some() != after.is_some()
}

#[cfg(test)]
mod tests;
