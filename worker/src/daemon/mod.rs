//! The worker daemon: keeps every allowed task slot busy with tasks held
//! in the local state ([`LocalState`]), and, independently, keeps that
//! state in step with the coordinator.
//!
//! Two loops share the state database:
//!
//! - the **core** ([`Worker::run`]) starts held tasks on the sandbox's
//!   blocking threads while the [`ResourceGovernor`] allows computing,
//!   paces each task ([`TaskRun`]: duty cycle, suspension, checkpoints,
//!   progress) and stores each finished task's report with the task's
//!   removal in one transaction;
//! - the **uplink** (`Uplink`) connects (with backoff), reports stored
//!   results until the coordinator acknowledges them, and fetches work
//!   (and its modules) until `slots + work_buffer` tasks are held.
//!
//! So the CPU keeps working through an outage of the coordinator, results
//! drain when it returns, and `kill -9` loses nothing the state committed:
//! a restarted worker resumes held tasks (from their last checkpoint) and
//! resends held reports.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use peergrid_proto::limits::{
    MAX_FRAME, MAX_HELD, MAX_MODULE, MAX_OUTPUT, MAX_TASK_MEMORY, MAX_TASKS_PER_EXCHANGE,
};
use peergrid_proto::wire::{
    Attachment, ErrorCode, Exchange, Outcome, Reply, Request, Task, TaskReport, UnitId,
};
use peergrid_proto::{Hash, JoinString, deadline, signing};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::control::{self, ControlRequest, RunningTask, Status};
use crate::governor::{DutyCycle, Monitor, ResourceGovernor, Sample, Suspension};
use crate::identity::host_facts;
use crate::net::{self, Session};
use crate::prefs::Preferences;
use crate::sandbox::{
    Checkpoint, NanMode, Pace, RunOutcome, Sandbox, SandboxTask, TaskHooks, unit_seed,
};
use crate::state::{LocalState, StoredTask};

/// Longest wall-clock budget a worker grants one task (the spec's longest
/// deadline, 30 days).
const MAX_WALL_MS: u64 = 30 * 86_400 * 1000;
/// After SIGTERM, how long a task that uses the guest SDK may run on to
/// reach its next `checkpoint` call before it is stopped.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long a paused task sleeps between looks at the gate.
const PAUSE_STEP: Duration = Duration::from_millis(50);
/// Longest wait of one exchange with the coordinator.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest backoff between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// On shutdown, how long the uplink may try to deliver held results.
const FAREWELL: Duration = Duration::from_secs(3);
/// Unsettled reports allowed per task the worker holds (slots plus work
/// buffer): past `UNSETTLED_PER_HELD × target` the worker asks for no new
/// work until the coordinator settles some, so a coordinator that never
/// acknowledges cannot make results pile up without bound.
const UNSETTLED_PER_HELD: usize = 2;

/// Simulated misbehaviour, for tests of the coordinator's validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Report a plausible but wrong output for every successful task.
    WrongOutput,
    /// Behave like an honest host on another CPU architecture whose NaN
    /// bit patterns differ: a different engine id and, unless NaNs are
    /// canonicalized, a different output.
    ForeignArch,
}

pub struct WorkerConfig {
    pub data: PathBuf,
    pub join: JoinString,
    /// The volunteer's preferences, flags applied.
    pub prefs: Preferences,
    /// Concurrent tasks (from the preferences and the host's cores).
    pub slots: usize,
    pub fault: Option<Fault>,
    /// Draw live progress bars here (a terminal is attached).
    pub progress_bars: Option<crate::display::MultiProgress>,
    /// Local address to connect from (`--bind`).
    pub bind: Option<std::net::IpAddr>,
}

pub struct Worker {
    config: WorkerConfig,
    key: SigningKey,
    sandbox: Arc<Sandbox>,
    state: Arc<LocalState>,
    shared: Arc<Shared>,
}

/// What the core, the uplink, the governor, the control socket and the
/// running tasks share.
pub struct Shared {
    /// Set by `peergrid-worker pause`, cleared by `resume`.
    user_paused: AtomicBool,
    /// Why computing is suspended, as the governor last decided.
    suspension: Mutex<Option<Suspension>>,
    /// SIGTERM arrived: tasks checkpoint and stop.
    stopping: AtomicBool,
    /// The connection to the coordinator, as `status` shows it.
    connection: Mutex<String>,
    /// Tasks running now, by unit.
    running: Mutex<BTreeMap<UnitId, Arc<TaskRun>>>,
    /// Tasks held but not running.
    queued: AtomicUsize,
    /// Bytes of RAM the grid may reserve (the governor's memory budget).
    memory_budget: AtomicU64,
    /// Wakes the core: tasks arrived, a suspension ended.
    wake_core: Notify,
    /// Wakes the uplink: a result is ready to report, a slot freed.
    wake_uplink: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new() -> Shared {
        Shared {
            user_paused: AtomicBool::new(false),
            suspension: Mutex::new(None),
            stopping: AtomicBool::new(false),
            connection: Mutex::new("connecting".into()),
            running: Mutex::new(BTreeMap::new()),
            queued: AtomicUsize::new(0),
            memory_budget: AtomicU64::new(u64::MAX),
            wake_core: Notify::new(),
            wake_uplink: Notify::new(),
        }
    }

    /// The volunteer's `pause` or `resume`, applied at once rather than at
    /// the governor's next sample.
    fn set_user_paused(&self, pause: bool) {
        self.user_paused.store(pause, Ordering::Relaxed);
        let mut s = lock(&self.suspension);
        if pause {
            *s = Some(Suspension::UserRequest);
        } else if *s == Some(Suspension::UserRequest) {
            *s = None;
        }
    }

    fn suspended(&self) -> bool {
        lock(&self.suspension).is_some()
    }

    /// What `status` shows; the text may quote the coordinator.
    fn set_connection(&self, text: impl AsRef<str>) {
        *lock(&self.connection) = printable(text.as_ref());
    }
}

/// One running task's side of the sandbox: checkpoints go to the state
/// database, progress to `status`, and the task is paced by the duty cycle
/// and paused while computing is suspended.
pub struct TaskRun {
    unit: UnitId,
    job: u64,
    started: Instant,
    state: Arc<LocalState>,
    shared: Arc<Shared>,
    duty: DutyCycle,
    checkpoint_interval: Duration,
    /// The checkpoint to resume from, handed over once.
    resume: Mutex<Option<Checkpoint>>,
    resumed: bool,
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
    /// `progress` as f64 bits; `u64::MAX`: never reported.
    progress: AtomicU64,
    /// Running time since the last duty-cycle pause.
    since_pause: Mutex<Instant>,
    /// The task's memory limit, in bytes.
    reserved: AtomicU64,
}

impl TaskRun {
    fn progress(&self) -> Option<f64> {
        let bits = self.progress.load(Ordering::Relaxed);
        (bits != u64::MAX).then(|| f64::from_bits(bits))
    }

    /// Sleeps `d` in short steps, returning early on shutdown.
    fn nap(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.shared.stopping.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(PAUSE_STEP));
        }
    }
}

impl TaskHooks for TaskRun {
    fn resume_from(&self) -> Option<Checkpoint> {
        lock(&self.resume).take()
    }

    fn wants_checkpoint(&self) -> bool {
        self.uses_sdk.store(true, Ordering::Relaxed);
        self.shared.stopping.load(Ordering::Relaxed)
            || lock(&self.last_checkpoint).elapsed() >= self.checkpoint_interval
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
                if self.shared.stopping.load(Ordering::Relaxed) {
                    self.saved_for_stop.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(unit = self.unit, "cannot keep a checkpoint: {e:#}"),
        }
    }

    fn progress(&self, fraction: f64) {
        self.progress.store(fraction.to_bits(), Ordering::Relaxed);
    }

    fn pace(&self) -> Pace {
        if self.shared.stopping.load(Ordering::Relaxed) {
            let seen = *lock(&self.stop_seen).get_or_insert_with(Instant::now);
            let wait_for_checkpoint = self.uses_sdk.load(Ordering::Relaxed)
                && !self.saved_for_stop.load(Ordering::Relaxed)
                && seen.elapsed() < STOP_GRACE;
            if wait_for_checkpoint {
                return Pace::Continue;
            }
            self.stopped.store(true, Ordering::Relaxed);
            return Pace::Stop("the worker is shutting down".into());
        }
        if self.shared.suspended() {
            while self.shared.suspended() && !self.shared.stopping.load(Ordering::Relaxed) {
                std::thread::sleep(PAUSE_STEP);
            }
            *lock(&self.since_pause) = Instant::now();
            return Pace::Continue;
        }
        let ran = lock(&self.since_pause).elapsed();
        if let Some(pause) = self.duty.pause_after(ran) {
            self.nap(pause);
            *lock(&self.since_pause) = Instant::now();
        }
        Pace::Continue
    }
}

impl Worker {
    pub fn new(config: WorkerConfig, key: SigningKey) -> Result<Worker> {
        std::fs::create_dir_all(config.data.join("modules"))
            .with_context(|| format!("creating {}", config.data.display()))?;
        pin_project_key(&config.data, &config.join.project_key)?;
        let sandbox = Arc::new(
            Sandbox::new(Some(&config.data.join("compiled")))
                .context("starting the wasm sandbox")?,
        );
        let state = Arc::new(LocalState::open(&config.data)?);
        let shared = Shared::new();
        if state.paused()? {
            // The volunteer's pause outlives restarts, until `resume`.
            tracing::info!("paused by the volunteer; `peergrid-worker resume` to compute again");
            shared.set_user_paused(true);
        }
        Ok(Worker {
            config,
            key,
            sandbox,
            state,
            shared: Arc::new(shared),
        })
    }

    /// Runs until `shutdown` resolves (then checkpoints and stops running
    /// tasks, and tries briefly to deliver held results).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let control = control::serve(&self.config.data, self.control_handler()).await?;
        let governor = tokio::spawn(govern(self.config.prefs.clone(), self.shared.clone()));
        let display = self
            .config
            .progress_bars
            .clone()
            .map(|multi| crate::display::spawn(multi, self.status_fn()));
        let (drain_tx, drain_rx) = watch::channel(false);
        let uplink = Uplink {
            join: self.config.join.clone(),
            key: self.key.clone(),
            account: crate::identity::account_attachment(
                &self.config.data,
                &self.config.prefs,
                &self.key,
            )?,
            bind: self.config.bind,
            data: self.config.data.clone(),
            state: self.state.clone(),
            shared: self.shared.clone(),
            target: self.config.slots + self.config.prefs.buffer(self.config.slots),
            disk_cap: self.config.prefs.disk_cache_mb.saturating_mul(1024 * 1024),
        };
        let mut uplink = tokio::spawn(uplink.run(drain_rx));
        let held = self.state.tasks()?;
        if !held.is_empty() {
            let resumable = held.iter().filter(|t| t.checkpoint.is_some()).count();
            tracing::info!(tasks = held.len(), resumable, "resuming held tasks");
        }

        let mut running: JoinSet<(UnitId, Option<TaskReport>)> = JoinSet::new();
        let mut completed = 0u64;
        let outcome: Result<()> = loop {
            if let Err(e) = self.start_tasks(&mut running) {
                break Err(e);
            }
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                r = &mut uplink => break match r {
                    Ok(Err(e)) => Err(e),
                    _ => Ok(()),
                },
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if self.finished(done)? {
                        completed += 1;
                    }
                }
                _ = self.shared.wake_core.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };

        // Stop: tasks that use the SDK checkpoint first; finished ones are kept.
        self.shared.stopping.store(true, Ordering::Relaxed);
        while let Some(done) = running.join_next().await {
            if self.finished(done)? {
                completed += 1;
            }
        }
        let _ = drain_tx.send(true);
        if !uplink.is_finished() && tokio::time::timeout(FAREWELL, &mut uplink).await.is_err() {
            uplink.abort();
        }
        control.abort();
        governor.abort();
        if let Some(d) = display {
            d.abort();
        }
        let _ = std::fs::remove_file(control::socket_path(&self.config.data));
        tracing::info!(completed, "worker stopped");
        outcome
    }

    /// Starts held tasks while slots, memory and the governor allow.
    fn start_tasks(&self, running: &mut JoinSet<(UnitId, Option<TaskReport>)>) -> Result<()> {
        let held = self.state.tasks()?;
        let busy: HashSet<UnitId> = lock(&self.shared.running).keys().copied().collect();
        let now = now_ms();
        // A task that can no longer start and report in time is given back
        // (the coordinator voids its copy without charging this host and
        // hands the unit to another), whether slots are free or not.
        let mut given_back = false;
        let mut startable = Vec::with_capacity(held.len());
        for stored in held {
            let task = &stored.task;
            let wall_ms = task.limits.wall_ms.min(MAX_WALL_MS);
            if busy.contains(&task.unit) || deadline::can_start(now, stored.due_ms, wall_ms) {
                startable.push(stored);
                continue;
            }
            tracing::warn!(
                unit = task.unit,
                "giving back a task that can no longer start in time (due in {} s, may run {} s)",
                stored.due_ms.saturating_sub(now) / 1000,
                wall_ms / 1000
            );
            self.state.give_back(task.unit, now)?;
            given_back = true;
        }
        if given_back {
            self.shared.wake_uplink.notify_one();
        }
        let held = startable;
        let mut waiting = held.len().saturating_sub(busy.len());
        if !self.shared.suspended() && !self.shared.stopping.load(Ordering::Relaxed) {
            for stored in held {
                if running.len() >= self.config.slots {
                    break;
                }
                if busy.contains(&stored.task.unit) {
                    continue;
                }
                waiting = waiting.saturating_sub(1);
                if !self.memory_allows(&stored.task) {
                    waiting += 1;
                    break;
                }
                self.start(stored, running)?;
            }
        }
        self.shared.queued.store(waiting, Ordering::Relaxed);
        Ok(())
    }

    /// Whether `task` fits the memory budget next to the running tasks (a
    /// task always runs alone; its memory limit is capped by the budget).
    fn memory_allows(&self, task: &Task) -> bool {
        let budget = self.shared.memory_budget.load(Ordering::Relaxed);
        let reserved: u64 = lock(&self.shared.running)
            .values()
            .map(|r| r.reserved_memory())
            .sum();
        reserved == 0 || reserved.saturating_add(self.task_memory(task)) <= budget
    }

    /// The memory limit `task` runs with: the job's, capped by the
    /// volunteer's per-task cap, the protocol bound and the budget.
    fn task_memory(&self, task: &Task) -> u64 {
        let mut memory = task.limits.memory_bytes.min(MAX_TASK_MEMORY);
        if let Some(cap) = self.config.prefs.max_task_memory_mb {
            memory = memory.min(cap.saturating_mul(1024 * 1024));
        }
        memory.min(self.shared.memory_budget.load(Ordering::Relaxed))
    }

    fn start(
        &self,
        stored: StoredTask,
        running: &mut JoinSet<(UnitId, Option<TaskReport>)>,
    ) -> Result<()> {
        let StoredTask {
            mut task,
            checkpoint,
            ..
        } = stored;
        // The coordinator's limits are trusted only within protocol bounds.
        task.limits.memory_bytes = self.task_memory(&task);
        task.limits.max_output_bytes = task.limits.max_output_bytes.min(MAX_OUTPUT as u64);
        task.limits.wall_ms = task.limits.wall_ms.min(MAX_WALL_MS);
        // Nothing runs unless the project key this host pinned endorsed the
        // researcher who signed this module and these arguments. The uplink
        // checked this before fetching the module; checked again here for
        // tasks held by an older worker.
        if let Some(report) = refusal(&self.config.join.project_key, &task) {
            self.state.finish(&report, now_ms())?;
            self.shared.wake_uplink.notify_one();
            return Ok(());
        }
        let Some(module) = read_module(&self.config.data, &task.module) else {
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
        let run = Arc::new(TaskRun {
            unit: task.unit,
            job: task.job,
            started: Instant::now(),
            state: self.state.clone(),
            shared: self.shared.clone(),
            duty: DutyCycle {
                percent: self.config.prefs.cpu_time_percent,
            },
            checkpoint_interval: self.config.prefs.checkpoint_interval(),
            resumed: checkpoint.is_some(),
            resume: Mutex::new(checkpoint),
            last_checkpoint: Mutex::new(Instant::now()),
            uses_sdk: AtomicBool::new(false),
            saved_for_stop: AtomicBool::new(false),
            stop_seen: Mutex::new(None),
            stopped: AtomicBool::new(false),
            progress: AtomicU64::new(u64::MAX),
            since_pause: Mutex::new(Instant::now()),
            reserved: AtomicU64::new(0),
        });
        run.set_reserved_memory(task.limits.memory_bytes);
        lock(&self.shared.running).insert(task.unit, run.clone());
        let sandbox = self.sandbox.clone();
        let fault = self.config.fault;
        running.spawn_blocking(move || {
            let report = run_task(&sandbox, &task, &module, fault, run.clone());
            let stopped = run.stopped.load(Ordering::Relaxed);
            (task.unit, (!stopped).then_some(report))
        });
        Ok(())
    }

    /// Handles a task that ended; true when it finished (not stopped).
    fn finished(
        &self,
        done: std::result::Result<(UnitId, Option<TaskReport>), tokio::task::JoinError>,
    ) -> Result<bool> {
        let (unit, report) = done.context("a task thread panicked")?;
        lock(&self.shared.running).remove(&unit);
        self.shared.wake_core.notify_one();
        let Some(report) = report else {
            tracing::info!(unit, "task stopped; it resumes at the next start");
            return Ok(false);
        };
        match &report.outcome {
            Outcome::Success(out) => tracing::info!(
                unit = report.unit,
                bytes = out.len(),
                fuel = report.fuel_used,
                ms = report.elapsed_ms,
                resumed = report.resumed,
                "task done"
            ),
            Outcome::Error(e) => {
                tracing::info!(unit = report.unit, "task failed: {}", printable(e))
            }
        }
        self.state.finish(&report, now_ms())?;
        self.shared.wake_uplink.notify_one();
        Ok(true)
    }

    fn status_fn(&self) -> Arc<dyn Fn() -> Result<Status> + Send + Sync> {
        let shared = self.shared.clone();
        let state = self.state.clone();
        let coordinator = self.config.join.address.clone();
        let slots = self.config.slots;
        let cpu = self.config.prefs.cpu_time_percent;
        Arc::new(move || {
            let totals = state.totals(local_midnight_ms())?;
            let running = lock(&shared.running)
                .values()
                .map(|r| RunningTask {
                    unit: r.unit,
                    job: r.job,
                    progress: r.progress(),
                    running_secs: r.started.elapsed().as_secs(),
                    resumed: r.resumed,
                })
                .collect();
            Ok(Status {
                coordinator: coordinator.clone(),
                connection: lock(&shared.connection).clone(),
                suspended: lock(&shared.suspension).as_ref().map(|s| s.to_string()),
                paused_by_user: shared.user_paused.load(Ordering::Relaxed),
                slots,
                cpu_time_percent: cpu,
                running,
                queued: shared.queued.load(Ordering::Relaxed),
                pending_uploads: totals.pending_reports,
                results_today: totals.finished_since,
                claimed_credit_fuel: totals.claimed_fuel,
            })
        })
    }

    fn control_handler(&self) -> Arc<dyn Fn(ControlRequest) -> Result<Status> + Send + Sync> {
        let status = self.status_fn();
        let shared = self.shared.clone();
        let state = self.state.clone();
        Arc::new(move |req| {
            match req {
                ControlRequest::Status => {}
                ControlRequest::Pause | ControlRequest::Resume => {
                    let pause = req == ControlRequest::Pause;
                    state
                        .set_paused(pause)
                        .context("recording the pause in the worker's state")?;
                    shared.set_user_paused(pause);
                    tracing::info!(
                        "{} by the volunteer",
                        if pause { "paused" } else { "resumed" }
                    );
                    shared.wake_core.notify_one();
                }
            }
            status()
        })
    }
}

impl TaskRun {
    /// The memory limit this task runs with, counted against the budget.
    fn reserved_memory(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    fn set_reserved_memory(&self, bytes: u64) {
        self.reserved.store(bytes, Ordering::Relaxed);
    }
}

/// Samples the machine every second and publishes the governor's decision.
async fn govern(prefs: Preferences, shared: Arc<Shared>) {
    let mut governor = ResourceGovernor::new(&prefs);
    let mut monitor = Monitor::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let sample = Sample {
            non_grid_cpu_percent: monitor.non_grid_cpu_percent(),
            on_battery: monitor.on_battery(),
            local_time: chrono::Local::now().time(),
        };
        let decision = governor.update(
            sample,
            shared.user_paused.load(Ordering::Relaxed),
            Instant::now(),
        );
        shared.memory_budget.store(
            governor.memory_budget(monitor.total_memory()).max(1),
            Ordering::Relaxed,
        );
        let mut current = lock(&shared.suspension);
        let changed = current.is_some() != decision.is_some()
            || std::mem::discriminant(&*current) != std::mem::discriminant(&decision);
        if changed {
            match &decision {
                Some(why) => tracing::info!("suspending: {why}"),
                None => tracing::info!("resuming computing"),
            }
        }
        *current = decision;
        drop(current);
        if changed {
            shared.wake_core.notify_one();
        }
    }
}

/// The coordinator side of the worker: reports and work fetch.
struct Uplink {
    join: JoinString,
    key: SigningKey,
    /// The host's attachment to the volunteer's account, if any.
    account: Option<Attachment>,
    bind: Option<std::net::IpAddr>,
    data: PathBuf,
    state: Arc<LocalState>,
    shared: Arc<Shared>,
    /// Tasks to hold: running slots plus the work buffer.
    target: usize,
    /// Bytes the module caches may use.
    disk_cap: u64,
}

impl Uplink {
    /// Connects and exchanges until `drain` turns true, then delivers what
    /// it can and returns. Errors only when the coordinator refuses this
    /// host for good.
    async fn run(self, mut drain: watch::Receiver<bool>) -> Result<()> {
        let mut backoff = Duration::from_millis(250);
        loop {
            if *drain.borrow() {
                return Ok(());
            }
            self.shared.set_connection("connecting");
            let connect = tokio::time::timeout(
                EXCHANGE_TIMEOUT,
                net::connect_attached(
                    &self.join,
                    &self.key,
                    host_facts(),
                    self.account.as_ref(),
                    self.bind,
                ),
            );
            let session = tokio::select! {
                _ = drain.changed() => return Ok(()),
                s = connect => s,
            };
            let error = match session {
                Ok(Ok(session)) => {
                    tracing::info!(
                        host_id = session.welcome.host_id,
                        coordinator = %self.join.address,
                        "connected"
                    );
                    self.shared.set_connection("connected");
                    backoff = Duration::from_millis(250);
                    match self.serve(&session, &mut drain).await {
                        Ok(()) => return Ok(()),
                        Err(e) => format!("lost the coordinator: {e:#}"),
                    }
                }
                Ok(Err(e)) => {
                    if let net::NetError::Refused(w) = &e
                        && matches!(w.code, ErrorCode::Unauthenticated | ErrorCode::Banned)
                    {
                        let e = printable(&e.to_string());
                        self.shared.set_connection(format!("refused: {e}"));
                        bail!("{e}");
                    }
                    e.to_string()
                }
                Err(_) => "connecting timed out".to_string(),
            };
            // The error may quote the coordinator.
            let error = printable(&error);
            tracing::warn!("{error}; retrying in {backoff:?} (computing goes on)");
            self.shared.set_connection(format!("offline: {error}"));
            tokio::select! {
                _ = drain.changed() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn serve(&self, session: &Session, drain: &mut watch::Receiver<bool>) -> Result<()> {
        loop {
            let draining = *drain.borrow();
            // Held tasks first: a task that finishes or is given back
            // meanwhile is then in `held` and in the reports or returns
            // too, never in neither (which would read as lost on the way).
            let held_units = self.state.held_units(MAX_HELD)?;
            let reports = self.reports_to_send()?;
            let held = self.state.task_count()?;
            let unsettled = self.state.totals(u64::MAX)?.pending_reports;
            let want = work_wanted(self.target, held, unsettled, draining);
            let returned = self
                .state
                .pending_returns(MAX_TASKS_PER_EXCHANGE as usize)?;
            if want == 0 && !draining && held < self.target {
                tracing::debug!(
                    unsettled,
                    "asking for no work until the coordinator settles results"
                );
            }
            if reports.is_empty() && returned.is_empty() && want == 0 {
                if draining {
                    return Ok(());
                }
                self.idle(drain, Duration::from_secs(5)).await;
                continue;
            }
            let sent = reports.len();
            let req = Request::Exchange(Exchange {
                reports,
                want,
                returned: returned.clone(),
                held: held_units,
            });
            let reply =
                tokio::time::timeout(EXCHANGE_TIMEOUT, net::request(&session.connection, &req))
                    .await
                    .context("the coordinator did not answer in time")??;
            // Tasks are due by this machine's clock from now on.
            let received_ms = now_ms();
            let reply = match reply {
                Reply::Exchange(reply) => reply,
                Reply::Error(e) => bail!("coordinator error: {}", printable(&e.to_string())),
                _ => bail!("unexpected reply to an exchange"),
            };
            if !reply.accepted.is_empty() {
                tracing::debug!(units = ?reply.accepted, "results acknowledged");
            }
            for (unit, why) in &reply.rejected {
                tracing::warn!(unit, "coordinator refused a result: {}", printable(why));
            }
            let rejected: Vec<UnitId> = reply.rejected.iter().map(|(u, _)| *u).collect();
            self.state.settle(&reply.accepted, &rejected)?;
            self.state.returns_told(&returned)?;
            let mut tasks = reply.tasks;
            if tasks.len() > want as usize {
                // More than asked: never hold past the volunteer's buffer.
                tracing::warn!(
                    "the coordinator sent {} tasks for {want} wanted; ignoring the rest",
                    tasks.len()
                );
                tasks.truncate(want as usize);
            }
            let got = tasks.len();
            let mut ready = Vec::with_capacity(got);
            for task in tasks {
                // The signature first: a module no endorsed researcher
                // signed is never downloaded, let alone kept or run.
                if let Some(report) = refusal(&self.join.project_key, &task) {
                    self.state.finish(&report, now_ms())?;
                    continue;
                }
                match self.fetch_module(session, &task.module).await {
                    Ok(()) => ready.push(task),
                    // Not the module's fault: no error result; the task is
                    // given back and reissued.
                    Err(e) => {
                        tracing::warn!(
                            unit = task.unit,
                            "cannot fetch module {}, giving the task back: {e:#}",
                            task.module
                        );
                        self.state.give_back(task.unit, now_ms())?;
                    }
                }
            }
            if !ready.is_empty() {
                self.state.add_tasks(&ready, received_ms)?;
                self.shared.wake_core.notify_one();
                self.trim_caches()?;
            }
            // Nothing settled and nothing new (e.g. a restarted coordinator
            // leaves reports on units it has not loaded yet unacknowledged):
            // wait rather than ask again at once.
            let progressed = got > 0 || !reply.accepted.is_empty() || !reply.rejected.is_empty();
            if draining && (sent == 0 || !progressed) {
                return Ok(());
            }
            let more_to_send = self.state.totals(u64::MAX)?.pending_reports > 0;
            if !progressed || (got == 0 && want > 0 && !more_to_send) {
                let wait = Duration::from_millis(reply.retry_after_ms as u64)
                    .max(Duration::from_millis(200));
                self.idle(drain, wait).await;
            }
        }
    }

    /// Waits for a reason to exchange again: a finished task, a freed
    /// slot, shutdown, or `most`.
    async fn idle(&self, drain: &mut watch::Receiver<bool>, most: Duration) {
        tokio::select! {
            _ = self.shared.wake_uplink.notified() => {}
            _ = drain.changed() => {}
            _ = tokio::time::sleep(most) => {}
        }
    }

    /// Held reports for one exchange: at most a quarter frame of outputs
    /// and [`MAX_TASKS_PER_EXCHANGE`]; the rest go in the next ones.
    fn reports_to_send(&self) -> Result<Vec<TaskReport>> {
        let mut budget = MAX_FRAME / 4;
        Ok(self
            .state
            .pending_reports(MAX_TASKS_PER_EXCHANGE as usize)?
            .into_iter()
            .take_while(|r| {
                let size = match &r.outcome {
                    Outcome::Success(out) => out.len(),
                    Outcome::Error(e) => e.len(),
                } + 64;
                let fits = size <= budget;
                budget = budget.saturating_sub(size);
                fits
            })
            .collect())
    }

    /// Makes sure the module is in `DATA/modules`, fetching it if needed.
    async fn fetch_module(&self, session: &Session, hash: &Hash) -> Result<()> {
        let path = module_path(&self.data, hash);
        if let Ok(b) = tokio::fs::read(&path).await
            && Hash::of(&b) == *hash
        {
            return Ok(());
        }
        let bytes = match net::request(&session.connection, &Request::GetBlob(*hash)).await? {
            Reply::Blob(b) => b,
            Reply::Error(e) => bail!("{}", printable(&e.to_string())),
            _ => bail!("unexpected reply to a module fetch"),
        };
        if bytes.len() > MAX_MODULE || Hash::of(&bytes) != *hash {
            bail!("the coordinator sent a module that does not match its hash");
        }
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(())
    }

    /// Keeps the module caches under the disk cap, removing the least
    /// recently written files first, but never a held task's module.
    fn trim_caches(&self) -> Result<()> {
        let keep: HashSet<String> = self
            .state
            .tasks()?
            .iter()
            .map(|t| t.task.module.to_hex())
            .collect();
        trim_caches(&self.data, self.disk_cap, &keep);
        Ok(())
    }
}

/// Removes the oldest files of `DATA/modules` and `DATA/compiled/*` until
/// they add up to at most `cap` bytes; files named after a hash in `keep`
/// stay.
pub fn trim_caches(data: &Path, cap: u64, keep: &HashSet<String>) {
    let mut files = Vec::new();
    let mut dirs = vec![data.join("modules")];
    if let Ok(entries) = std::fs::read_dir(data.join("compiled")) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(UNIX_EPOCH);
            files.push((modified, meta.len(), e.path()));
        }
    }
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= cap {
            break;
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        if stem.is_some_and(|s| keep.contains(&s)) {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::debug!(path = %path.display(), "removed from the cache (disk cap)");
            total = total.saturating_sub(len);
        }
    }
}

/// How many tasks to ask for: enough to hold `target` (slots plus work
/// buffer), at most [`MAX_TASKS_PER_EXCHANGE`]; none while draining, or
/// while `unsettled` reports (finished, not yet acknowledged or rejected)
/// reach `UNSETTLED_PER_HELD × target`. Reports are still sent then.
pub fn work_wanted(target: usize, held: usize, unsettled: u64, draining: bool) -> u32 {
    let cap = target.saturating_mul(UNSETTLED_PER_HELD) as u64;
    if draining || unsettled >= cap {
        return 0;
    }
    target
        .saturating_sub(held)
        .min(MAX_TASKS_PER_EXCHANGE as usize) as u32
}

/// The error report for a task whose signature chain fails under the
/// pinned project key, or `None` if the task may run.
fn refusal(project_key: &[u8; 32], task: &Task) -> Option<TaskReport> {
    let e = signing::verify(project_key, &task.signature, &task.module, &task.args).err()?;
    let why = printable(&e.to_string());
    tracing::warn!(unit = task.unit, "refusing a task: {why}");
    Some(TaskReport {
        unit: task.unit,
        outcome: Outcome::Error(format!("refused by the worker: {why}")),
        fuel_used: 0,
        elapsed_ms: 0,
        engine: String::new(),
        resumed: false,
    })
}

/// `text` without control characters (line breaks, escape sequences,
/// bells): text from the coordinator or a task is printed to the
/// volunteer's terminal and logs, where those would forge lines or drive
/// the terminal.
pub fn printable(text: &str) -> String {
    let mut text = text.to_string();
    peergrid_proto::text::strip_controls(&mut text, false);
    text
}

fn module_path(data: &Path, hash: &Hash) -> PathBuf {
    data.join("modules").join(format!("{hash}.wasm"))
}

/// A cached module's bytes, if present and intact.
fn read_module(data: &Path, hash: &Hash) -> Option<Vec<u8>> {
    let bytes = std::fs::read(module_path(data, hash)).ok()?;
    (Hash::of(&bytes) == *hash).then_some(bytes)
}

/// Remembers the project key of the first join in `DIR/project.pub` and
/// refuses a later join string naming another project's key: a host's
/// trust is not silently moved.
fn pin_project_key(data: &Path, key: &[u8; 32]) -> Result<()> {
    let path = data.join("project.pub");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let pinned = signing::parse_public_key(&text)
                .with_context(|| format!("{} is corrupt", path.display()))?;
            if &pinned != key {
                bail!(
                    "this host joined the project with key {}; the join string names key {}. \
                     Use another --data folder to join another project",
                    hex::encode(pinned),
                    hex::encode(key)
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, hex::encode(key))
                .with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Seeds a unit's randomness from (job, unit): the same bytes on every host.
pub fn task_seed(task: &Task) -> u64 {
    unit_seed(task.job, task.unit)
}

fn run_task(
    sandbox: &Sandbox,
    task: &Task,
    module: &[u8],
    fault: Option<Fault>,
    hooks: Arc<TaskRun>,
) -> TaskReport {
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
    let mut engine = sandbox.engine_id(nan).to_string();
    let outcome = match report.outcome {
        RunOutcome::Success(mut out) => {
            match fault {
                Some(Fault::WrongOutput) => out.extend_from_slice(b" (tampered)"),
                Some(Fault::ForeignArch) if !task.canonical_nan => {
                    engine = format!("{engine}/simulated-foreign-arch");
                    out.extend_from_slice(b" (foreign NaN bits)");
                }
                _ => {}
            }
            Outcome::Success(out)
        }
        RunOutcome::Error(e) => Outcome::Error(e),
    };
    TaskReport {
        unit: task.unit,
        outcome,
        fuel_used: report.fuel_used,
        elapsed_ms: report.elapsed.as_millis() as u64,
        engine,
        resumed: report.resumed,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The start of today in local time, in ms since the Unix epoch.
fn local_midnight_ms() -> u64 {
    let now = chrono::Local::now();
    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|m| m.and_local_timezone(chrono::Local).earliest());
    midnight.map_or(0, |m| m.timestamp_millis().max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_new_work_while_unsettled_reports_reach_twice_the_target() {
        // 2 slots + 2 buffered: target 4, cap 8 unsettled reports.
        assert_eq!(work_wanted(4, 1, 0, false), 3);
        assert_eq!(work_wanted(4, 1, 7, false), 3);
        // A coordinator that never acknowledges: reports pile up to the
        // cap, then the worker stops asking (and keeps reporting).
        assert_eq!(work_wanted(4, 0, 8, false), 0);
        assert_eq!(work_wanted(4, 0, 5000, false), 0);
        assert_eq!(work_wanted(4, 4, 0, false), 0);
        assert_eq!(work_wanted(4, 0, 0, true), 0);
        assert_eq!(work_wanted(10_000, 0, 0, false), MAX_TASKS_PER_EXCHANGE);
    }

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(
            printable("bad key\n2026-01-01 INFO forged\u{1b}]0;title\u{7}\u{1b}[2J\r\t!\u{9b}"),
            "bad key2026-01-01 INFO forged]0;title[2J!"
        );
        assert_eq!(printable("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn trimming_removes_the_oldest_files_but_never_a_held_module() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("modules");
        let compiled = dir.path().join("compiled/0123456789abcdef");
        std::fs::create_dir_all(&modules).unwrap();
        std::fs::create_dir_all(&compiled).unwrap();
        let files = [
            modules.join("aa.wasm"),
            modules.join("bb.wasm"),
            compiled.join("cc.cwasm"),
            compiled.join("dd.cwasm"),
        ];
        let base = SystemTime::now() - Duration::from_secs(1000);
        for (i, f) in files.iter().enumerate() {
            std::fs::write(f, [0u8; 100]).unwrap();
            let file = std::fs::File::options().write(true).open(f).unwrap();
            file.set_modified(base + Duration::from_secs(i as u64 * 10))
                .unwrap();
        }
        // 400 bytes, cap 250: the two oldest go, except the held "bb".
        let keep: HashSet<String> = ["bb".to_string()].into();
        trim_caches(dir.path(), 250, &keep);
        let left: Vec<bool> = files.iter().map(|f| f.exists()).collect();
        assert_eq!(left, [false, true, false, true]);
        // Under the cap: nothing more goes.
        trim_caches(dir.path(), 250, &HashSet::new());
        assert!(files[3].exists());
    }
}
