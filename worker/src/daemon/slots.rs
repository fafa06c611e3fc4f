//! The core's task slots: which held tasks start (slots, the memory budget
//! and the governor allowing), which are given back because they can no
//! longer start in time, running each on tokio's blocking pool with its
//! [`TaskRun`], and storing each finished task's report with the task's
//! removal. The decisions are made in [`run_rules`].

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use peergrid_os::{lock, now_ms};
use peergrid_proto::limits::MAX_STDERR_TAIL;
use peergrid_proto::spec::Metering;
use peergrid_proto::text::stderr_tail;
use peergrid_proto::wire::{Outcome, Task, TaskReport, UnitId, error_with_stderr, split_stderr};
use tokio::task::JoinSet;

use super::modules::{read_module, refusal};
use super::process_run::run_in_runner;
use super::run_rules;
use super::task_run::TaskRun;
use super::{Worker, note, printable};
use crate::sandbox::{NanMode, RunOutcome, Sandbox, SandboxTask, unit_seed};
use crate::state::StoredTask;

/// The running tasks: each ends with its unit and its report, or `None`
/// when the worker stopped it.
pub(super) type Running = JoinSet<(UnitId, Option<TaskReport>)>;

impl Worker {
    /// Starts held tasks while slots, memory and the governor allow.
    pub(super) fn start_tasks(&self, running: &mut Running) -> Result<()> {
        let now = now_ms();
        self.abort_tasks(now)?;
        let held = self.state.tasks()?;
        let busy: HashSet<UnitId> = lock(&self.shared.running).keys().copied().collect();
        // A task that can no longer start and report in time is given back
        // (the coordinator voids its copy without charging this host and
        // hands the unit to another), whether slots are free or not.
        let mut given_back = false;
        let mut startable = Vec::with_capacity(held.len());
        for stored in held {
            let task = &stored.task;
            let running = busy.contains(&task.unit);
            if !run_rules::must_give_back(now, stored.due_ms, task.limits.wall_ms, running) {
                startable.push(stored);
                continue;
            }
            tracing::warn!(
                unit = task.unit,
                "giving back a task that can no longer start in time (due in {} s, may run {} s)",
                stored.due_ms.saturating_sub(now) / 1000,
                task.limits.wall_ms.min(run_rules::MAX_WALL_MS) / 1000
            );
            self.state.give_back(task.unit, now)?;
            note(
                &self.state,
                "given back",
                format!(
                    "unit {}: it can no longer start and report in time",
                    task.unit
                ),
            );
            given_back = true;
        }
        if given_back {
            self.shared.wake_uplink.notify_one();
        }
        let held = startable;
        let starting = !self.shared.suspended()
            && !self.shared.stopping.load(Ordering::Relaxed)
            && !self.shared.winding().gives_back();
        if starting {
            let slots = self.shared.live().slots;
            for stored in held {
                if running.len() >= slots {
                    break;
                }
                if busy.contains(&stored.task.unit) {
                    continue;
                }
                if !self.memory_allows(&stored.task) {
                    break;
                }
                self.start(stored, running)?;
            }
        }
        Ok(())
    }

    /// Stops or gives back what the volunteer aborted, and under `detach`
    /// everything held: a running task stops at its next epoch tick and is
    /// given back when it ends ([`Worker::finished`]); a held one is given
    /// back now. The coordinator voids a given-back copy and reissues the
    /// unit at once.
    fn abort_tasks(&self, now: u64) -> Result<()> {
        let mut units: Vec<UnitId> = std::mem::take(&mut *lock(&self.shared.aborts));
        if self.shared.winding().gives_back() {
            units.extend(self.state.tasks()?.iter().map(|t| t.task.unit));
        }
        if units.is_empty() {
            return Ok(());
        }
        for unit in units {
            if let Some(run) = lock(&self.shared.running).get(&unit) {
                run.abort();
            } else if self.state.has_task(unit)? {
                tracing::info!(unit, "giving back a held task");
                self.state.give_back(unit, now)?;
                note(
                    &self.state,
                    "given back",
                    format!("unit {unit}: aborted before it ran"),
                );
            }
        }
        self.shared.wake_uplink.notify_one();
        Ok(())
    }

    /// Whether `task` fits the memory budget next to the running tasks.
    fn memory_allows(&self, task: &Task) -> bool {
        let budget = self.shared.memory_budget.load(Ordering::Relaxed);
        let reserved: u64 = lock(&self.shared.running)
            .values()
            .map(|r| r.reserved_memory())
            .sum();
        run_rules::memory_fits(reserved, self.task_memory(task), budget)
    }

    /// The memory limit `task` runs with (see [`run_rules::task_memory`]).
    fn task_memory(&self, task: &Task) -> u64 {
        run_rules::task_memory(
            task.limits.memory_bytes,
            self.shared.live().prefs.max_task_memory_mb,
            self.shared.memory_budget.load(Ordering::Relaxed),
        )
    }

    fn start(&self, stored: StoredTask, running: &mut Running) -> Result<()> {
        let StoredTask {
            mut task,
            checkpoint,
            ..
        } = stored;
        // The coordinator's limits are trusted only within protocol bounds.
        task.limits = run_rules::bounded_limits(task.limits, self.task_memory(&task));
        // Nothing runs unless the project key this host pinned endorsed the
        // researcher who signed this module and these arguments. The uplink
        // checked this before fetching the module; checked again here for
        // tasks held by an older worker.
        if let Some(report) = refusal(&self.config.join.project_key, &task) {
            self.state.finish(&report, now_ms())?;
            self.shared.wake_uplink.notify_one();
            return Ok(());
        }
        let Some(module) = read_module(&self.config.data, &self.shared.modules, &task.module)
        else {
            // Not the module's fault: no error result; the task is given
            // back and reissued.
            tracing::warn!(
                unit = task.unit,
                "module {} is missing from the cache; giving the task back",
                task.module
            );
            self.state.give_back(task.unit, now_ms())?;
            self.shared.wake_uplink.notify_one();
            return Ok(());
        };
        if checkpoint.is_some() {
            tracing::info!(unit = task.unit, "resuming a task from its checkpoint");
        }
        let runners = self.runners.clone();
        // In a runner process the checkpoint goes with the task; in process
        // the sandbox asks the hooks for it.
        let (in_hooks, for_runner) = match runners {
            Some(_) => (None, checkpoint),
            None => (checkpoint, None),
        };
        let run = Arc::new(TaskRun::new(
            &task,
            in_hooks,
            for_runner.is_some(),
            self.state.clone(),
            self.shared.clone(),
        ));
        lock(&self.shared.running).insert(task.unit, run.clone());
        let sandbox = self.sandbox.clone();
        #[cfg(feature = "simulate-fault")]
        let fault = self.config.fault;
        running.spawn_blocking(move || {
            let report = match &runners {
                Some(pool) => run_in_runner(
                    pool,
                    &task,
                    task_seed(&task),
                    &module,
                    for_runner,
                    run.clone(),
                ),
                None => match sandbox.for_task(&task) {
                    Ok(sandbox) => run_task(&sandbox, &task, &module, run.clone()),
                    Err(e) => TaskReport {
                        unit: task.unit,
                        outcome: Outcome::Error(format!("{e:#}")),
                        fuel_used: 0,
                        elapsed_ms: 0,
                        engine: String::new(),
                        resumed: false,
                    },
                },
            };
            #[cfg(feature = "simulate-fault")]
            let report = match fault {
                Some(fault) => fault.tamper(&task, report),
                None => report,
            };
            (task.unit, (!run.was_stopped()).then_some(report))
        });
        Ok(())
    }

    /// Handles a task that ended; true when it finished (not stopped).
    pub(super) fn finished(
        &self,
        done: std::result::Result<(UnitId, Option<TaskReport>), tokio::task::JoinError>,
    ) -> Result<bool> {
        let (unit, report) = done.context("a task thread panicked")?;
        let run = lock(&self.shared.running).remove(&unit);
        self.shared.wake_core.notify_one();
        if report.is_none() && run.is_some_and(|r| r.aborted()) {
            tracing::info!(unit, "aborted task stopped and given back");
            self.state.give_back(unit, now_ms())?;
            note(
                &self.state,
                "given back",
                format!("unit {unit}: aborted while it ran"),
            );
            self.shared.wake_uplink.notify_one();
            return Ok(false);
        }
        let Some(report) = report else {
            tracing::info!(unit, "task stopped; it resumes at the next start");
            return Ok(false);
        };
        let event = match &report.outcome {
            Outcome::Success(out) => {
                tracing::info!(
                    unit = report.unit,
                    bytes = out.len(),
                    fuel = report.fuel_used,
                    ms = report.elapsed_ms,
                    resumed = report.resumed,
                    "task done"
                );
                (
                    "finished",
                    format!(
                        "unit {}: {} bytes of output, {} fuel, {} ms",
                        report.unit,
                        out.len(),
                        report.fuel_used,
                        report.elapsed_ms
                    ),
                )
            }
            Outcome::Error(e) => {
                let (message, _) = split_stderr(e);
                tracing::info!(unit = report.unit, "task failed: {}", printable(message));
                ("failed", format!("unit {}: {message}", report.unit))
            }
        };
        // The report and its line in the event log: one commit.
        let (kind, message) = (event.0, printable(&event.1));
        self.state
            .finish_noting(&report, now_ms(), Some((kind, &message)))?;
        self.shared.wake_uplink.notify_one();
        Ok(true)
    }
}

/// The in-process sandboxes: fuel-metered tasks run in one built at
/// start, `fixed` ones in one built when the first such task comes.
pub(super) struct Sandboxes {
    fuel: Arc<Sandbox>,
    fixed: OnceLock<Arc<Sandbox>>,
    /// Compiled modules' folder (`DATA/compiled`), shared by both.
    compiled: PathBuf,
}

impl Sandboxes {
    pub(super) fn new(compiled: PathBuf) -> Result<Sandboxes> {
        let fuel = Sandbox::new(Some(&compiled)).context("starting the wasm sandbox")?;
        Ok(Sandboxes {
            fuel: Arc::new(fuel),
            fixed: OnceLock::new(),
            compiled,
        })
    }

    /// The sandbox for `task`'s metering.
    fn for_task(&self, task: &Task) -> Result<Arc<Sandbox>> {
        match task.limits.metering {
            Metering::Fuel => Ok(self.fuel.clone()),
            Metering::Fixed => {
                if let Some(fixed) = self.fixed.get() {
                    return Ok(fixed.clone());
                }
                let built = Sandbox::fixed(Some(&self.compiled))
                    .context("starting the wasm sandbox of fixed-metered jobs")?;
                Ok(self.fixed.get_or_init(|| Arc::new(built)).clone())
            }
        }
    }
}

/// Seeds a unit's randomness from (job, unit): the same bytes on every host.
pub fn task_seed(task: &Task) -> u64 {
    unit_seed(task.job, task.number)
}

fn run_task(sandbox: &Sandbox, task: &Task, module: &[u8], hooks: Arc<TaskRun>) -> TaskReport {
    let nan = NanMode::from_canonical(task.canonical_nan);
    let run = SandboxTask {
        module: &task.module,
        module_bytes: module,
        input: &task.input,
        args: &task.args,
        seed: task_seed(task),
        limits: &task.limits,
        nan,
    };
    let report = sandbox.run_with_hooks(&run, hooks);
    let outcome = match report.outcome {
        RunOutcome::Success(out) => Outcome::Success(out),
        // The end of stderr goes with the error (a panic message is there):
        // the researcher's only clue to why the unit failed.
        RunOutcome::Error(e) => Outcome::Error(error_with_stderr(
            e,
            &stderr_tail(&report.stderr, MAX_STDERR_TAIL),
        )),
    };
    TaskReport {
        unit: task.unit,
        outcome,
        fuel_used: report.fuel_used,
        elapsed_ms: report.elapsed.as_millis() as u64,
        engine: sandbox.engine_id(nan).to_string(),
        resumed: report.resumed,
    }
}
