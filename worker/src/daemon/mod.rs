//! The worker daemon: keeps every allowed task slot busy with tasks held
//! in the local state ([`LocalState`]), and, independently, keeps that
//! state in step with the coordinator.
//!
//! Two loops share the state database:
//!
//! - the **core** ([`Worker::run`], slots in `slots`) starts held tasks on
//!   the sandbox's blocking threads while the [`ResourceGovernor`] allows
//!   computing, paces each task ([`TaskRun`]: duty cycle, suspension,
//!   checkpoints, progress) and stores each finished task's report with
//!   the task's removal in one transaction;
//! - the **uplink** (`uplink`) connects (with backoff), reports stored
//!   results until the coordinator acknowledges them, and fetches work
//!   (and its modules, `modules`) until `slots + work_buffer` tasks are
//!   held.
//!
//! What they decide (how much work to ask for, when to idle, back off or
//! finish draining; which task starts, is given back, naps or stops) is
//! pure code in `exchange_rules` and `run_rules`, tested without a clock
//! or a socket; `steering` holds the status view, pause and resume, and
//! the governor loop. The submodules share [`Shared`] and the helpers
//! here.
//!
//! So the CPU keeps working through an outage of the coordinator, results
//! drain when it returns, and `kill -9` loses nothing the state committed:
//! a restarted worker resumes held tasks (from their last checkpoint) and
//! resends held reports.
//!
//! [`ResourceGovernor`]: crate::governor::ResourceGovernor

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use peergrid_os::lock;
use peergrid_proto::wire::UnitId;
use peergrid_proto::{JoinString, signing};
use tokio::sync::{Notify, watch};

use crate::control;
use crate::governor::Suspension;
use crate::prefs::Preferences;
use crate::state::LocalState;
pub use process_run::runner_command;
use slots::Sandboxes;

mod blobs;
mod exchange_rules;
#[cfg(feature = "simulate-fault")]
mod fault;
mod modules;
mod preferences;
mod process_run;
mod run_rules;
mod slots;
mod steering;
mod task_run;
mod uplink;

pub use exchange_rules::{FatalStop, Permanent, Winding, work_wanted};
#[cfg(feature = "simulate-fault")]
pub use fault::Fault;
pub use modules::trim_caches;
pub use preferences::PrefsSource;
pub use slots::task_seed;
pub use task_run::TaskRun;

/// On shutdown, how long the uplink may try to deliver held results.
const FAREWELL: Duration = Duration::from_secs(3);

pub struct WorkerConfig {
    pub data: PathBuf,
    pub join: JoinString,
    /// The volunteer's preferences, flags applied, at start.
    pub prefs: Preferences,
    /// Concurrent tasks (from the preferences and the host's cores).
    pub slots: usize,
    /// Where the preferences came from, to apply changes to the file
    /// while running (`None`: there is no config folder).
    pub prefs_source: Option<PrefsSource>,
    /// Misbehave on purpose (`--simulate-fault`; tests only).
    #[cfg(feature = "simulate-fault")]
    pub fault: Option<Fault>,
    /// Draw live progress bars here (a terminal is attached).
    pub progress_bars: Option<crate::display::MultiProgress>,
    /// Local address to connect from (`--bind`).
    pub bind: Option<std::net::IpAddr>,
    /// `run --no-more-work`: finish the held tasks, then exit.
    pub no_more_work: bool,
    /// Run tasks in runner processes started this way (the default on
    /// Linux); `None`: in the worker's own threads (`run --in-process`).
    pub runner: Option<peergrid_runner::RunnerCommand>,
}

pub struct Worker {
    config: WorkerConfig,
    key: SigningKey,
    sandbox: Arc<Sandboxes>,
    /// Warm runner processes, unless tasks run in the worker's threads.
    runners: Option<Arc<peergrid_runner::Pool>>,
    state: Arc<LocalState>,
    shared: Arc<Shared>,
}

/// What the core, the uplink, the governor, the control socket and the
/// running tasks share.
pub struct Shared {
    /// The preferences in force, replaced whole when the volunteer
    /// changes them (`config set`, an edit of the file).
    live: Mutex<Arc<Live>>,
    /// Bumped with each change of `live`, for the loops that derive state
    /// from it (the governor).
    live_version: AtomicU64,
    /// Set by `peergrid-worker pause`, cleared by `resume`.
    user_paused: AtomicBool,
    /// When a `pause --for` ends (ms since the Unix epoch); 0: no end.
    paused_until_ms: AtomicU64,
    /// Why computing is suspended, as the governor last decided.
    suspension: Mutex<Option<Suspension>>,
    /// SIGTERM arrived: tasks checkpoint and stop.
    stopping: AtomicBool,
    /// The connection to the coordinator, as `status` shows it.
    connection: Mutex<String>,
    /// The last permanent failure (wrong certificate, ban) and what to
    /// do, until a connection succeeds.
    permanent_error: Mutex<Option<String>>,
    /// Tasks running now, by unit.
    running: Mutex<BTreeMap<UnitId, Arc<TaskRun>>>,
    /// Bytes of RAM the grid may reserve (the governor's memory budget).
    memory_budget: AtomicU64,
    /// Running on, or winding down (`no-more-work`, `detach`).
    winding: Mutex<Winding>,
    /// Units the volunteer aborted, for the core to stop or give back
    /// (the core alone starts tasks, so it alone gives them back).
    aborts: Mutex<Vec<UnitId>>,
    /// Wakes the core: tasks arrived, a suspension ended.
    wake_core: Notify,
    /// Wakes the uplink: a result is ready to report, a slot freed.
    wake_uplink: Notify,
    /// Modules read and hashed by this process, for the uplink and the
    /// slots.
    modules: modules::VerifiedModules,
    /// The project's blob mirrors, as far as this process has tried them.
    mirrors: blobs::Mirrors,
}

/// The preferences in force and the slots they give on this machine.
#[derive(Clone, Debug)]
pub struct Live {
    pub prefs: Preferences,
    pub slots: usize,
}

impl Live {
    /// Tasks to hold: running slots plus the work buffer.
    fn target(&self) -> usize {
        self.slots + self.prefs.buffer(self.slots)
    }

    /// Bytes the module caches may use.
    fn disk_cap(&self) -> u64 {
        self.prefs.disk_cache_mb.saturating_mul(1024 * 1024)
    }
}

impl Shared {
    fn new(live: Live) -> Shared {
        Shared {
            live: Mutex::new(Arc::new(live)),
            live_version: AtomicU64::new(0),
            user_paused: AtomicBool::new(false),
            paused_until_ms: AtomicU64::new(0),
            suspension: Mutex::new(None),
            stopping: AtomicBool::new(false),
            connection: Mutex::new("connecting".into()),
            permanent_error: Mutex::new(None),
            running: Mutex::new(BTreeMap::new()),
            memory_budget: AtomicU64::new(u64::MAX),
            winding: Mutex::new(Winding::RunOn),
            aborts: Mutex::new(Vec::new()),
            wake_core: Notify::new(),
            wake_uplink: Notify::new(),
            modules: modules::VerifiedModules::default(),
            mirrors: blobs::Mirrors::default(),
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

    /// The preferences in force now.
    fn live(&self) -> Arc<Live> {
        lock(&self.live).clone()
    }

    fn winding(&self) -> Winding {
        *lock(&self.winding)
    }

    /// Winds down (never back: `detach` wins over `no-more-work`).
    fn wind_down(&self, to: Winding) {
        let mut w = lock(&self.winding);
        if *w != Winding::Detach {
            *w = to;
        }
        drop(w);
        self.wake_core.notify_one();
        self.wake_uplink.notify_one();
    }

    fn suspended(&self) -> bool {
        lock(&self.suspension).is_some()
    }

    /// What `status` shows; the text may quote the coordinator.
    fn set_connection(&self, text: impl AsRef<str>) {
        *lock(&self.connection) = printable(text.as_ref());
    }

    /// The permanent failure `status` shows, or none.
    fn set_permanent_error(&self, text: Option<&str>) {
        *lock(&self.permanent_error) = text.map(printable);
    }
}

impl Worker {
    pub fn new(config: WorkerConfig, key: SigningKey) -> Result<Worker> {
        std::fs::create_dir_all(config.data.join("modules"))
            .with_context(|| format!("creating {}", config.data.display()))?;
        pin_project_key(&config.data, &config.join.project_key)?;
        let sandbox = Arc::new(Sandboxes::new(config.data.join("compiled"))?);
        let runners = match &config.runner {
            Some(command) => {
                // No disk cache for runners: a cache a runner writes would
                // let an escape from one runner outlive it, into the next
                // runner or into whatever loads the cache (docs/sandbox.md).
                // Runners keep compiled modules in memory while warm.
                let mut command = command.clone();
                command.cache = None;
                tracing::info!(runner = %command.program.display(), "tasks run in runner processes");
                // As many idle runners as tasks ran at once: one per slot.
                Some(Arc::new(
                    peergrid_runner::Pool::new(command, usize::MAX)
                        .context("starting the runner starter")?,
                ))
            }
            None => None,
        };
        let state = Arc::new(LocalState::open(&config.data)?);
        let shared = Shared::new(Live {
            prefs: config.prefs.clone(),
            slots: config.slots,
        });
        if state.paused()? {
            // The volunteer's pause outlives restarts, until `resume` or
            // the end of a `pause --for` (the governor ends it).
            tracing::info!("paused by the volunteer; `peergrid-worker resume` to compute again");
            shared.set_user_paused(true);
            if let Some(until) = state.paused_until()? {
                shared.paused_until_ms.store(until, Ordering::Relaxed);
            }
        }
        Ok(Worker {
            config,
            key,
            sandbox,
            runners,
            state,
            shared: Arc::new(shared),
        })
    }

    /// Runs until `shutdown` resolves (then checkpoints and stops running
    /// tasks, and tries briefly to deliver held results).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let control = control::serve(&self.config.data, self.control_handler()).await?;
        let governor = tokio::spawn(steering::govern(self.shared.clone(), self.state.clone()));
        let watcher = self.config.prefs_source.clone().map(|source| {
            tokio::spawn(preferences::watch(
                source,
                self.shared.clone(),
                self.state.clone(),
            ))
        });
        let display = self
            .config
            .progress_bars
            .clone()
            .map(|multi| crate::display::spawn(multi, self.status_fn()));
        let (drain_tx, drain_rx) = watch::channel(false);
        let uplink = uplink::Uplink {
            join: self.config.join.clone(),
            key: self.key.clone(),
            account: crate::identity::account_attachment(
                &self.config.data,
                &self.config.prefs,
                &self.key,
            )?,
            name: self.config.prefs.name.trim().to_string(),
            slots: u32::try_from(self.config.slots).unwrap_or(u32::MAX),
            bind: self.config.bind,
            data: self.config.data.clone(),
            state: self.state.clone(),
            shared: self.shared.clone(),
        };
        let mut uplink = tokio::spawn(uplink.run(drain_rx));
        let held = self.state.tasks()?;
        if !held.is_empty() {
            let resumable = held.iter().filter(|t| t.checkpoint.is_some()).count();
            tracing::info!(tasks = held.len(), resumable, "resuming held tasks");
        }

        if self.config.no_more_work {
            tracing::info!("no more work: finishing the held tasks, then stopping");
            note(
                &self.state,
                "no more work",
                "finishing the held tasks, then stopping",
            );
            self.shared.wind_down(Winding::NoMoreWork);
        }
        let mut running = slots::Running::new();
        let mut completed = 0u64;
        let outcome: Result<()> = loop {
            if let Err(e) = self.start_tasks(&mut running) {
                break Err(e);
            }
            match self.wound_down(&running) {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(e),
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
        if let Some(w) = watcher {
            w.abort();
        }
        if let Some(d) = display {
            d.abort();
        }
        // Before the socket goes: `detach` waits for it to go, then
        // checks that the project is forgotten.
        if outcome.is_ok()
            && self.shared.winding() == Winding::Detach
            && self.wound_down(&running)?
        {
            forget_project(&self.config.data)?;
            tracing::info!(
                "detached: the project's key and this host's state are gone; this data folder may join another project"
            );
        }
        let _ = std::fs::remove_file(control::socket_path(&self.config.data));
        tracing::info!(completed, "worker stopped");
        if self.config.data.join(crate::state::STATE_FILE).exists() {
            let why = match &outcome {
                Ok(()) => String::new(),
                Err(e) => format!(": {e:#}"),
            };
            note(
                &self.state,
                "stopped",
                format!("worker stopped after {completed} task(s){why}"),
            );
        }
        outcome
    }

    /// Whether the worker winds down and has nothing left to settle.
    fn wound_down(&self, running: &slots::Running) -> Result<bool> {
        let winding = self.shared.winding();
        if winding == Winding::RunOn {
            return Ok(false);
        }
        Ok(exchange_rules::wound_down(
            winding,
            self.state.task_count()?,
            running.len(),
            self.state.pending_report_count()?,
            self.state.pending_returns(1)?.len(),
        ))
    }
}

/// After `detach`: removes the pinned project key and the state database,
/// so the data folder can join another project. The host key, the account
/// key and the module caches stay.
fn forget_project(data: &Path) -> Result<()> {
    for name in [
        "project.pub".to_string(),
        crate::state::STATE_FILE.to_string(),
        format!("{}-wal", crate::state::STATE_FILE),
        format!("{}-shm", crate::state::STATE_FILE),
    ] {
        let path = data.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(())
}

/// Adds an event to the log `peergrid-worker log` shows; a failure to
/// write it is only logged.
fn note(state: &LocalState, kind: &str, message: impl AsRef<str>) {
    if let Err(e) = state.record_event(kind, &printable(message.as_ref()), peergrid_os::now_ms()) {
        tracing::warn!("cannot add to the event log: {e:#}");
    }
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
                return Err(FatalStop {
                    cause: Permanent::OtherProject,
                    what: format!(
                        "this host joined the project with key {}; the join string names key {}",
                        hex::encode(pinned),
                        hex::encode(key)
                    ),
                }
                .into());
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
    fn printable_strips_control_characters() {
        assert_eq!(
            printable("bad key\n2026-01-01 INFO forged\u{1b}]0;title\u{7}\u{1b}[2J\r\t!\u{9b}"),
            "bad key2026-01-01 INFO forged]0;title[2J!"
        );
        assert_eq!(printable("plain ünïcode"), "plain ünïcode");
    }
}
