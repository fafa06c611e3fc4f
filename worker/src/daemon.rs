//! The worker's main loop: stay connected, keep every task slot busy,
//! report every finished task until the coordinator acknowledges it.
//!
//! One exchange both reports finished tasks and fetches new ones, so a
//! busy worker makes one round trip per batch of tasks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::SigningKey;
use peergrid_proto::limits::{
    MAX_FRAME, MAX_MODULE, MAX_OUTPUT, MAX_TASK_MEMORY, MAX_TASKS_PER_EXCHANGE,
};

/// Longest wall-clock budget a worker grants one task (the spec's longest
/// deadline, 30 days).
const MAX_WALL_MS: u64 = 30 * 86_400 * 1000;
use peergrid_proto::wire::{
    ErrorCode, Exchange, HostFacts, Outcome, Reply, Request, Task, TaskReport,
};
use peergrid_proto::{Hash, JoinString, signing};
use tokio::task::JoinSet;

use crate::identity::host_facts;
use crate::net::{self, Session};
use crate::sandbox::{RunOutcome, Sandbox};

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
    /// Concurrent tasks.
    pub slots: usize,
    /// The volunteer's account name (empty: anonymous).
    pub account: String,
    /// The volunteer's cap on one task's memory, in bytes: a job may ask
    /// for less, never more.
    pub max_task_memory: Option<u64>,
    pub fault: Option<Fault>,
}

pub struct Worker {
    config: WorkerConfig,
    key: SigningKey,
    sandbox: Arc<Sandbox>,
    /// Module bytes by hash: fetched once, then read from here or disk.
    modules: HashMap<Hash, Arc<Vec<u8>>>,
    /// Finished tasks not yet acknowledged by the coordinator.
    unacked: Vec<TaskReport>,
    completed: u64,
}

impl Worker {
    pub fn new(config: WorkerConfig, key: SigningKey) -> Result<Worker> {
        let sandbox = Arc::new(
            Sandbox::new(Some(&config.data.join("compiled")))
                .context("starting the wasm sandbox")?,
        );
        std::fs::create_dir_all(config.data.join("modules"))
            .with_context(|| format!("creating {}", config.data.display()))?;
        pin_project_key(&config.data, &config.join.project_key)?;
        Ok(Worker {
            config,
            key,
            sandbox,
            modules: HashMap::new(),
            unacked: Vec::new(),
            completed: 0,
        })
    }

    /// Runs until `shutdown` resolves, reconnecting with backoff whenever
    /// the coordinator is unreachable.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let mut running: JoinSet<TaskReport> = JoinSet::new();
        let mut backoff = Duration::from_millis(250);
        loop {
            let facts = HostFacts {
                account: self.config.account.clone(),
                ..host_facts()
            };
            let connect = net::connect(&self.config.join, &self.key, facts);
            let session = tokio::select! {
                _ = &mut shutdown => break,
                s = connect => s,
            };
            let session = match session {
                Ok(s) => {
                    tracing::info!(
                        host_id = s.welcome.host_id,
                        coordinator = %self.config.join.address,
                        "connected"
                    );
                    backoff = Duration::from_millis(250);
                    s
                }
                Err(e) => {
                    tracing::warn!("{e}; retrying in {backoff:?}");
                    if let net::NetError::Refused(w) = &e
                        && matches!(w.code, ErrorCode::Unauthenticated | ErrorCode::Banned)
                    {
                        bail!("{e}");
                    }
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            tokio::select! {
                _ = &mut shutdown => {
                    self.farewell(&session, &mut running).await;
                    break;
                }
                r = self.serve(&session, &mut running) => {
                    tracing::warn!("lost the coordinator: {e:#}", e = r.err().unwrap_or_else(|| anyhow!("session ended")));
                }
            }
        }
        tracing::info!(completed = self.completed, "worker stopped");
        Ok(())
    }

    /// On shutdown: report what is finished, if the coordinator answers quickly.
    async fn farewell(&mut self, session: &Session, running: &mut JoinSet<TaskReport>) {
        while let Some(Ok(r)) = running.try_join_next() {
            self.unacked.push(r);
        }
        if self.unacked.is_empty() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), self.exchange(session, 0)).await;
    }

    async fn serve(&mut self, session: &Session, running: &mut JoinSet<TaskReport>) -> Result<()> {
        loop {
            while let Some(done) = running.try_join_next() {
                self.finished(done?);
            }
            let want = self.config.slots.saturating_sub(running.len()) as u32;
            let mut idle = Duration::ZERO;
            if want > 0 || !self.unacked.is_empty() {
                let (tasks, retry_after) = self.exchange(session, want).await?;
                if tasks.is_empty() && want > 0 {
                    idle = retry_after;
                }
                if tasks.len() > want as usize {
                    // More than asked: never run past the volunteer's slots.
                    tracing::warn!(
                        "the coordinator sent {} tasks for {want} free slots; ignoring the rest",
                        tasks.len()
                    );
                }
                for task in tasks.into_iter().take(want as usize) {
                    self.start(session, task, running).await;
                }
            }
            if running.len() >= self.config.slots {
                if let Some(done) = running.join_next().await {
                    self.finished(done?);
                }
            } else if !idle.is_zero() {
                if running.is_empty() {
                    tokio::time::sleep(idle).await;
                } else {
                    tokio::select! {
                        done = running.join_next() => if let Some(done) = done { self.finished(done?) },
                        _ = tokio::time::sleep(idle) => {}
                    }
                }
            }
        }
    }

    fn finished(&mut self, report: TaskReport) {
        self.completed += 1;
        match &report.outcome {
            Outcome::Success(out) => tracing::info!(
                unit = report.unit,
                bytes = out.len(),
                fuel = report.fuel_used,
                ms = report.elapsed_ms,
                "task done"
            ),
            Outcome::Error(e) => tracing::info!(unit = report.unit, "task failed: {e}"),
        }
        self.unacked.push(report);
    }

    /// Reports unacknowledged results and asks for `want` tasks.
    async fn exchange(&mut self, session: &Session, want: u32) -> Result<(Vec<Task>, Duration)> {
        // Report at most a quarter frame of outputs per exchange; the rest
        // go in the next ones.
        let mut budget = MAX_FRAME / 4;
        let reports: Vec<TaskReport> = self
            .unacked
            .iter()
            .take_while(|r| {
                let size = match &r.outcome {
                    Outcome::Success(out) => out.len(),
                    Outcome::Error(e) => e.len(),
                } + 64;
                let fits = size <= budget;
                budget = budget.saturating_sub(size);
                fits
            })
            .take(MAX_TASKS_PER_EXCHANGE as usize)
            .cloned()
            .collect();
        let req = Request::Exchange(Exchange { reports, want });
        match net::request(&session.connection, &req).await? {
            Reply::Exchange(reply) => {
                let settled: std::collections::HashSet<u64> = reply
                    .accepted
                    .iter()
                    .copied()
                    .chain(reply.rejected.iter().map(|(u, _)| *u))
                    .collect();
                if !reply.accepted.is_empty() {
                    tracing::debug!(units = ?reply.accepted, "results acknowledged");
                }
                for (unit, why) in &reply.rejected {
                    tracing::warn!(unit, "coordinator refused a result: {why}");
                }
                self.unacked.retain(|r| !settled.contains(&r.unit));
                Ok((
                    reply.tasks,
                    Duration::from_millis(reply.retry_after_ms as u64),
                ))
            }
            Reply::Error(e) => bail!("coordinator error: {e}"),
            _ => bail!("unexpected reply to an exchange"),
        }
    }

    async fn start(
        &mut self,
        session: &Session,
        mut task: Task,
        running: &mut JoinSet<TaskReport>,
    ) {
        if let Some(cap) = self.config.max_task_memory {
            task.limits.memory_bytes = task.limits.memory_bytes.min(cap);
        }
        // The coordinator's limits are trusted only within protocol bounds.
        task.limits.memory_bytes = task.limits.memory_bytes.min(MAX_TASK_MEMORY);
        task.limits.max_output_bytes = task.limits.max_output_bytes.min(MAX_OUTPUT as u64);
        task.limits.wall_ms = task.limits.wall_ms.min(MAX_WALL_MS);
        // Nothing runs unless the project key this host pinned endorsed the
        // researcher who signed this module and these arguments.
        if let Err(e) = signing::verify(
            &self.config.join.project_key,
            &task.signature,
            &task.module,
            &task.args,
        ) {
            tracing::warn!(unit = task.unit, "refusing a task: {e}");
            self.finished(TaskReport {
                unit: task.unit,
                outcome: Outcome::Error(format!("refused by the worker: {e}")),
                fuel_used: 0,
                elapsed_ms: 0,
                engine: String::new(),
                resumed: false,
            });
            return;
        }
        let module = match self.module(session, &task.module).await {
            Ok(m) => m,
            Err(e) => {
                // Not the module's fault: no error result; the copy times
                // out and is reissued.
                tracing::warn!(
                    unit = task.unit,
                    "cannot fetch module {}: {e:#}",
                    task.module
                );
                return;
            }
        };
        let sandbox = self.sandbox.clone();
        let fault = self.config.fault;
        running.spawn_blocking(move || run_task(&sandbox, &task, &module, fault));
    }

    /// The module's bytes: from memory, from the disk cache, or fetched.
    async fn module(&mut self, session: &Session, hash: &Hash) -> Result<Arc<Vec<u8>>> {
        if let Some(m) = self.modules.get(hash) {
            return Ok(m.clone());
        }
        let path = self
            .config
            .data
            .join("modules")
            .join(format!("{hash}.wasm"));
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) if Hash::of(&b) == *hash => b,
            _ => {
                let bytes =
                    match net::request(&session.connection, &Request::GetBlob(*hash)).await? {
                        Reply::Blob(b) => b,
                        Reply::Error(e) => bail!("{e}"),
                        _ => bail!("unexpected reply to a module fetch"),
                    };
                if bytes.len() > MAX_MODULE || Hash::of(&bytes) != *hash {
                    bail!("the coordinator sent a module that does not match its hash");
                }
                let tmp = path.with_extension("tmp");
                tokio::fs::write(&tmp, &bytes).await?;
                tokio::fs::rename(&tmp, &path).await?;
                bytes
            }
        };
        let bytes = Arc::new(bytes);
        self.modules.insert(*hash, bytes.clone());
        Ok(bytes)
    }
}

/// Remembers the project key of the first join in `DIR/project.pub` and
/// refuses a later join string naming another project's key: a host's
/// trust is not silently moved.
fn pin_project_key(data: &std::path::Path, key: &[u8; 32]) -> Result<()> {
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

/// The randomness seed of unit `unit` of job `job`.
pub fn unit_seed(job: u64, unit: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"peergrid-seed-v1");
    h.update(&job.to_le_bytes());
    h.update(&unit.to_le_bytes());
    let out = h.finalize();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(seed)
}

fn run_task(sandbox: &Sandbox, task: &Task, module: &[u8], fault: Option<Fault>) -> TaskReport {
    let report = sandbox.run(
        &task.module,
        module,
        &task.input,
        &task.args,
        task_seed(task),
        &task.limits,
        task.canonical_nan,
    );
    let mut engine = sandbox.engine_id(task.canonical_nan).to_string();
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
        resumed: false,
    }
}
