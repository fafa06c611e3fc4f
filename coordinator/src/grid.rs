//! The running grid: the sans-IO [`Scheduler`] wired to the store, the
//! group-commit [`Writer`] and a clock.
//!
//! The QUIC and HTTP shells call into [`Grid`]; two background loops keep
//! it moving: the feeder refills the scheduler's window of unfinished
//! units from the store, and the ticker expires copies past their deadline.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use peergrid_core::model::Comparison;
use peergrid_os::now_ms;
use peergrid_proto::limits::{
    MAX_ENGINE_ID, MAX_FRAME, MAX_HELD, MAX_OUTPUT, MAX_STDERR_TAIL, MAX_TASKS_PER_EXCHANGE,
};
use peergrid_proto::wire::{self, Exchange, ExchangeReply, JobId, Outcome, UnitId};
use peergrid_proto::{Hash, api, text};
use tokio::sync::Notify;

use crate::judge::Judge;
use crate::mirror::{Mirrors, Publisher};
use crate::quorum::CopyState;
use crate::scheduler::{ReportError, Scheduler};
use crate::storage::Storage;
use crate::store::{BanTarget, HostId, SEEN_EVERY_MS, StderrTail, Store, StoreOp};
use crate::trust::{HostPolicy, Standing, day_start_ms};
use crate::writer::Writer;

mod collect;
mod feed;

/// A report checked and hashed, waiting to go to the scheduler: the unit,
/// its copy's new state, the run's milliseconds, a success's output with
/// its hash, and an error's stderr tail (kept in the store only: the
/// scheduler's memory holds the message alone).
type PendingReport = (
    UnitId,
    CopyState,
    u64,
    Option<(Hash, Vec<u8>)>,
    Option<String>,
);

/// Units kept in memory; the feeder tops the window up when it falls
/// below half.
const WINDOW: usize = 100_000;
/// Input bytes sent in one exchange reply: keeps every reply well under
/// the frame limit whatever the inputs' sizes.
const MAX_REPLY_INPUT_BYTES: usize = MAX_FRAME / 4;
/// Largest count stored from a worker's report (SQLite integers are i64).
const MAX_COUNT: u64 = i64::MAX as u64;
/// Longest error message kept from a worker.
const MAX_ERROR_LEN: usize = 2000;
/// How long a worker that got no task waits before asking again.
const IDLE_RETRY_MS: u32 = 1000;
/// How long a worker waits before its next exchange while the coordinator
/// is short of disk space.
const SHORT_OF_SPACE_RETRY_MS: u32 = 10_000;

/// Waits until the writer has committed a batch.
async fn durable(
    receipt: tokio::sync::oneshot::Receiver<Result<(), String>>,
    what: &str,
) -> Result<()> {
    receipt
        .await
        .map_err(|_| anyhow!("the store writer stopped"))?
        .map_err(|e| anyhow!("{what} failed: {e}"))
}

/// A stranger's string, without control characters (but with line breaks
/// when `lines`), cut to at most `max` bytes.
fn clean(s: &mut String, max: usize, lines: bool) {
    text::strip_controls(s, lines);
    text::truncate(s, max);
}

struct Window {
    scheduler: Scheduler,
    /// Highest unit id loaded so far: the next refill starts after it.
    loaded_upto: UnitId,
    /// Highest unit id in the store as of the last refill: units between
    /// `loaded_upto` and this exist but are not in the window yet.
    stored_upto: UnitId,
    /// The last reopened unit (by `units.reopened_seq`) the feeder loaded.
    reopened_upto: u64,
    /// When each host's `last_seen_ms` was last sent to the store: a
    /// `StoreOp::Seen` rides on an exchange's batch at most once every
    /// `SEEN_EVERY_MS` per host, so the hosts table stays fresh for the
    /// dashboard without a write per exchange.
    seen_sent: HashMap<HostId, u64>,
    /// The bans last applied, so a new or lifted one is logged once.
    banned_hosts: HashSet<HostId>,
    banned_accounts: HashSet<String>,
}

/// Why a host may not take part.
#[derive(Debug, thiserror::Error)]
#[error("this host is banned from the project: {0}")]
pub struct Banned(pub String);

pub struct Grid {
    pub store: Arc<dyn Store>,
    window: Mutex<Window>,
    /// Makes the comparisons the scheduler asks for (outputs of jobs with
    /// a non-bitwise validator).
    judge: Judge,
    writer: Writer,
    /// The free-space reserve: below it, reports are left for later.
    pub storage: Storage,
    /// Wakes the feeder early (a job was submitted, the window ran low).
    feed: Notify,
    /// Blob mirrors, once `serve` set them ([`Grid::set_mirrors`]).
    mirrors: std::sync::OnceLock<Mirrors>,
    /// Held (shared) by a submission from checking its blobs until its job
    /// is stored, and (alone) by garbage collection while it deletes: a
    /// blob a submission found is not collected before its job claims it.
    pub(crate) blob_gate: Arc<tokio::sync::RwLock<()>>,
}

impl Grid {
    pub fn new(store: Arc<dyn Store>, writer: Writer) -> Arc<Grid> {
        Grid::with_policy(store, writer, HostPolicy::default())
    }

    pub fn with_policy(store: Arc<dyn Store>, writer: Writer, policy: HostPolicy) -> Arc<Grid> {
        let seed = u64::from_le_bytes(*b"peergrid") ^ now_ms();
        Arc::new(Grid {
            judge: Judge::new(store.clone()),
            store,
            window: Mutex::new(Window {
                scheduler: Scheduler::with(policy, seed),
                loaded_upto: 0,
                stored_upto: 0,
                reopened_upto: 0,
                seen_sent: HashMap::new(),
                banned_hosts: HashSet::new(),
                banned_accounts: HashSet::new(),
            }),
            writer,
            storage: Storage::default(),
            feed: Notify::new(),
            mirrors: std::sync::OnceLock::new(),
            blob_gate: Arc::new(tokio::sync::RwLock::new(())),
        })
    }

    /// Names the blob mirrors workers are told of and the folder uploads
    /// are published into; inputs loaded from now on that are large
    /// enough go by reference. Call it before [`Grid::refill`]; a second
    /// call changes nothing.
    pub fn set_mirrors(&self, mirrors: Mirrors) {
        let by_reference_from = mirrors.by_reference_from();
        if self.mirrors.set(mirrors).is_ok() {
            self.window()
                .scheduler
                .send_inputs_by_reference(by_reference_from);
        }
    }

    /// Inputs shorter than this are loaded with their bytes; the others
    /// go to workers by reference, and the store need not read them.
    pub(crate) fn inputs_inline_below(&self) -> usize {
        self.mirrors
            .get()
            .and_then(Mirrors::by_reference_from)
            .unwrap_or(usize::MAX)
    }

    /// The mirrors' base addresses, for a worker's `Welcome`.
    pub fn mirror_urls(&self) -> Vec<String> {
        self.mirrors
            .get()
            .map(|m| m.urls.clone())
            .unwrap_or_default()
    }

    /// Where blobs are published, if they are.
    pub fn publisher(&self) -> Option<&Arc<Publisher>> {
        self.mirrors.get()?.publisher.as_ref()
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        peergrid_os::lock(&self.window)
    }

    /// Loads a host's trust and quota into the scheduler after its Hello;
    /// refuses a banned host (or a host of a banned account).
    pub async fn join(&self, host: HostId, addr: std::net::IpAddr) -> Result<()> {
        let store = self.store.clone();
        let now = now_ms();
        // Today's count is read from the store only when the scheduler has
        // none (see below): most reconnections skip the query.
        let counted = self
            .window()
            .scheduler
            .standing(host)
            .is_some_and(|s| s.counts_today(now));
        let (stored, bans, sent_today) = tokio::task::spawn_blocking(move || {
            let sent = match counted {
                true => 0,
                false => store.tasks_sent_since(host, day_start_ms(now))?,
            };
            anyhow::Ok((store.host_standing(host)?, store.bans()?, sent))
        })
        .await
        .context("loading the host's standing")??;
        let stored = stored.ok_or_else(|| anyhow!("host {host} is not registered"))?;
        for ban in &bans {
            let hit = match &ban.target {
                BanTarget::Host(id) => *id == host,
                BanTarget::Account(a) => !stored.account.is_empty() && *a == stored.account,
            };
            if hit {
                return Err(Banned(ban.reason.clone()).into());
            }
        }
        let mut w = self.window();
        let policy = *w.scheduler.policy();
        let mut standing = Standing::new(stored.account, stored.cores, &policy);
        standing.consecutive_valid = stored.consecutive_valid;
        standing.first_seen_ms = stored.first_seen_ms;
        // (Or the scheduler's, ahead of the store by a batch.)
        standing.pending_credit =
            stored.pending_credit || w.scheduler.standing(host).is_some_and(|o| o.pending_credit);
        standing.loaded = true;
        standing.addr = Some(addr);
        if let Some(q) = stored.quota {
            standing.quota = q.clamp(1, policy.max_for(standing.cores));
        }
        // A host reconnecting keeps today's count. Otherwise (a restart; or
        // a blank standing the scheduler made for the host when one of its
        // copies expired or validated before it reconnected) the store's
        // count of today's assignments stands in for it.
        match w.scheduler.standing(host) {
            Some(old) if old.counts_today(now) => {
                standing.day = old.day;
                standing.sent_today = old.sent_today;
            }
            _ => standing.sent_today_from_store(sent_today, now),
        }
        w.scheduler.host_joined(host, standing);
        Ok(())
    }

    /// Why `job`'s unfinished units are not going out, if the scheduler
    /// knows (shown with the job's status).
    pub fn waiting(&self, job: JobId) -> Option<&'static str> {
        self.window().scheduler.waiting(job).map(|w| w.describe())
    }

    /// Units queued for more copies, and unfinished units in memory (for
    /// `/metrics`).
    pub fn queue_sizes(&self) -> (usize, usize) {
        let w = self.window();
        (w.scheduler.queued_units(), w.scheduler.active_units())
    }

    /// Whether `host` holds copies it has not reported.
    pub fn holds_work(&self, host: HostId) -> bool {
        self.window().scheduler.in_flight(host) > 0
    }

    /// Those of `hosts` that hold no copy, under one lock.
    pub fn without_work(&self, hosts: &[HostId]) -> HashSet<HostId> {
        if hosts.is_empty() {
            return HashSet::new();
        }
        let w = self.window();
        hosts
            .iter()
            .copied()
            .filter(|h| w.scheduler.in_flight(*h) == 0)
            .collect()
    }

    /// Applies the bans in the store to the scheduler: the operator's
    /// `peergrid-coordinator ban` writes them from another process.
    pub async fn apply_bans(&self) -> Result<()> {
        let store = self.store.clone();
        let bans = tokio::task::spawn_blocking(move || store.bans())
            .await
            .context("reading bans")??;
        let mut hosts = HashSet::new();
        let mut accounts = HashSet::new();
        for b in bans {
            match b.target {
                BanTarget::Host(id) => hosts.insert(id),
                BanTarget::Account(a) => accounts.insert(a),
            };
        }
        let mut w = self.window();
        for h in hosts.difference(&w.banned_hosts) {
            tracing::warn!(host = h, "ban in force: host");
        }
        for a in accounts.difference(&w.banned_accounts) {
            tracing::warn!(account = %a, "ban in force: volunteer account");
        }
        for h in w.banned_hosts.difference(&hosts) {
            tracing::info!(host = h, "ban lifted: host");
        }
        for a in w.banned_accounts.difference(&accounts) {
            tracing::info!(account = %a, "ban lifted: volunteer account");
        }
        w.scheduler.set_bans(&hosts, &accounts, now_ms());
        w.banned_hosts = hosts;
        w.banned_accounts = accounts;
        let ops = w.scheduler.take_ops();
        if !ops.is_empty() {
            self.writer.submit_detached(ops);
        }
        Ok(())
    }

    /// Cancels job `job` for its researcher: no copy of its unfinished
    /// units goes out again, hosts running one are told to stop at their
    /// next exchange, and its validated rows stay. Returns once the
    /// cancellation is durable; `None` when there is no such job.
    pub async fn cancel_job(&self, job: JobId) -> Result<Option<api::Cancelled>> {
        let status = |store: Arc<dyn Store>| async move {
            tokio::task::spawn_blocking(move || store.job_status(job))
                .await
                .context("reading the job")?
                .map_err(anyhow::Error::from)
        };
        let Some(before) = status(self.store.clone()).await? else {
            return Ok(None);
        };
        // Cancelled before, or nothing left to cancel: a finished job stays
        // finished.
        if before.cancelled_ms.is_some() || before.finished {
            return Ok(Some(api::Cancelled {
                job,
                cancelled: before.cancelled,
                validated: before.validated,
                already: true,
            }));
        }
        let receipt = {
            let mut w = self.window();
            let (_, dropped) = w.scheduler.cancel_job(job, now_ms());
            tracing::info!(job, dropped, "job cancelled by its researcher");
            self.writer.submit(w.scheduler.take_ops(), Vec::new())
        };
        durable(receipt, "cancelling the job").await?;
        let after = status(self.store.clone())
            .await?
            .context("the cancelled job is gone")?;
        Ok(Some(api::Cancelled {
            job,
            cancelled: after.cancelled,
            validated: after.validated,
            already: false,
        }))
    }

    /// Handles one worker exchange: records its reports, assigns new
    /// tasks, and returns only once every change is durable.
    pub async fn exchange(&self, host: HostId, mut ex: Exchange) -> Result<ExchangeReply> {
        let now = now_ms();
        let mut reply = ExchangeReply::default();
        // Short of disk space: take no results (the worker keeps them and
        // sends them again) and send no work whose results could not be
        // stored; the rest of the exchange (returns, held copies) goes on.
        let short_of_space = self.storage.may_grow().is_err();
        if short_of_space {
            ex.reports.clear();
            ex.want = 0;
        }
        // Hash outputs before taking the lock.
        let mut reports: Vec<PendingReport> = Vec::with_capacity(ex.reports.len());
        for r in ex.reports.into_iter().take(MAX_TASKS_PER_EXCHANGE as usize) {
            match r.outcome {
                Outcome::Success(out) if out.len() > MAX_OUTPUT => reply.rejected.push((
                    r.unit,
                    format!(
                        "output of {} bytes exceeds the {MAX_OUTPUT}-byte limit",
                        out.len()
                    ),
                )),
                Outcome::Success(out) => {
                    crate::metrics::RESULTS_SUCCESS.fetch_add(1, Ordering::Relaxed);
                    let hash = Hash::of(&out);
                    let mut engine = r.engine;
                    clean(&mut engine, MAX_ENGINE_ID, false);
                    let state = CopyState::Success {
                        output: hash,
                        fuel: r.fuel_used.min(MAX_COUNT),
                        engine,
                        resumed: r.resumed,
                    };
                    let elapsed = r.elapsed_ms.min(MAX_COUNT);
                    reports.push((r.unit, state, elapsed, Some((hash, out)), None));
                }
                Outcome::Error(text) => {
                    crate::metrics::RESULTS_ERROR.fetch_add(1, Ordering::Relaxed);
                    let (msg, tail) = wire::split_stderr(&text);
                    let mut msg = msg.to_string();
                    clean(&mut msg, MAX_ERROR_LEN, true);
                    // A stranger's text too: cleaned and bounded, its end kept.
                    let tail = tail.map(|t| {
                        let mut t = t.to_string();
                        text::strip_controls(&mut t, true);
                        text::keep_end(&mut t, MAX_STDERR_TAIL);
                        t
                    });
                    let elapsed = r.elapsed_ms.min(MAX_COUNT);
                    reports.push((r.unit, CopyState::Error(msg), elapsed, None, tail));
                }
            }
        }
        let mut blobs = Vec::new();
        let mut stderr = Vec::new();
        // Outputs of non-bitwise jobs, for the comparisons they may need.
        let mut fresh = HashMap::new();
        let (receipt, low, (comparisons, reported)) = {
            let mut w = self.window();
            if w.scheduler.standing(host).is_some_and(|s| s.banned) {
                return Err(Banned("the operator banned it".into()).into());
            }
            let reported: Vec<UnitId> = reports.iter().map(|r| r.0).collect();
            for (unit, state, elapsed, blob, tail) in reports {
                if let Some((hash, out)) = &blob
                    && w.scheduler
                        .job_of(unit)
                        .is_some_and(|j| !j.validator.is_bitwise())
                {
                    fresh.insert(*hash, Arc::<[u8]>::from(out.as_slice()));
                }
                match w.scheduler.report(host, unit, state, elapsed, now) {
                    Ok(()) => {
                        reply.accepted.push(unit);
                        if let Some((_, out)) = &blob {
                            w.scheduler.stored(host, unit, out.len() as u64);
                        }
                        blobs.extend(blob);
                        stderr.extend(tail.map(|text| StderrTail { unit, host, text }));
                    }
                    // After a restart the window may not hold every
                    // unfinished unit yet: leave the report unacknowledged
                    // so the worker sends it again once the unit is loaded.
                    Err(ReportError::UnknownUnit(_))
                        if unit > w.loaded_upto && unit <= w.stored_upto => {}
                    Err(e) => reply.rejected.push((unit, e.to_string())),
                }
            }
            for unit in ex.returned.iter().take(MAX_TASKS_PER_EXCHANGE as usize) {
                if let Err(e) = w.scheduler.give_back(host, *unit, now) {
                    tracing::debug!(host, unit, "a task given back was not taken: {e}");
                }
            }
            if let Some(held) = ex.held.as_ref().filter(|h| h.len() <= MAX_HELD) {
                let held: HashSet<UnitId> = held.iter().copied().collect();
                let lost = w.scheduler.reconcile(host, &held, now);
                if lost > 0 {
                    tracing::info!(host, lost, "copies lost on the way to a host reissued");
                }
            }
            reply.stop = w.scheduler.take_stops(host, ex.held.as_deref());
            reply.tasks = w.scheduler.assign(
                host,
                ex.want.min(MAX_TASKS_PER_EXCHANGE),
                MAX_REPLY_INPUT_BYTES,
                now,
            );
            let mut ops = w.scheduler.take_ops();
            let last_sent = w.seen_sent.get(&host).copied();
            if last_sent.is_none_or(|t| now.saturating_sub(t) >= SEEN_EVERY_MS) {
                w.seen_sent.insert(host, now);
                ops.push(StoreOp::Seen { host, at_ms: now });
            }
            // Those its reports asked for, taken with this batch: every
            // output they name was written in it or in a batch before, so
            // once it is durable they can be read. Others (loads, expiries,
            // retries) are the ticker's.
            let comparisons = w.scheduler.take_comparisons_of(&reported);
            // Queued under the lock, so the writer applies batches in the
            // order the scheduler decided them.
            let receipt = (!ops.is_empty() || !blobs.is_empty() || !comparisons.is_empty())
                .then(|| self.writer.submit_with_stderr(ops, blobs, stderr));
            (
                receipt,
                w.scheduler.active_units() < WINDOW / 2,
                (comparisons, reported),
            )
        };
        if low {
            self.feed.notify_one();
        }
        if let Some(receipt) = receipt
            && let Err(e) = durable(receipt, "storing results").await
        {
            self.retry_later(comparisons);
            return Err(e);
        }
        // The reporting host waits for its own reports' verdicts, as it
        // waits for their storage; a slow validator delays only it. Its
        // reports and tasks are stored whatever happens to the comparisons
        // (handed back to the scheduler if they could not be made).
        if let Err(e) = self.settle(comparisons, fresh, Some(&reported)).await {
            tracing::error!(host, "comparing outputs failed: {e:#}");
        }
        if short_of_space {
            reply.retry_after_ms = SHORT_OF_SPACE_RETRY_MS;
        } else if reply.tasks.is_empty() {
            reply.retry_after_ms = IDLE_RETRY_MS;
        }
        Ok(reply)
    }

    /// Makes the comparisons the scheduler asked for (taken with a batch
    /// already durable, so their outputs are in the store or in `fresh`),
    /// on a blocking thread and off the scheduler's lock, and feeds the
    /// verdicts back; then does the same for any asked meanwhile. A
    /// comparison that could not be made goes back to the scheduler, which
    /// hands it out again later.
    /// With `units`, later rounds take only those units' comparisons.
    async fn settle(
        &self,
        mut comparisons: Vec<Comparison>,
        fresh: HashMap<Hash, Arc<[u8]>>,
        units: Option<&[UnitId]>,
    ) -> Result<()> {
        let fresh = Arc::new(fresh);
        while !comparisons.is_empty() {
            let judge = self.judge.clone();
            let outputs = fresh.clone();
            let asked = comparisons.clone();
            let verdicts = match tokio::task::spawn_blocking(move || {
                asked
                    .into_iter()
                    .map(|c| {
                        let verdict = judge.compare(&c, &outputs);
                        (c, verdict)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            {
                Ok(verdicts) => verdicts,
                Err(e) => {
                    self.retry_later(comparisons);
                    return Err(e).context("comparing outputs");
                }
            };
            let receipt = {
                let mut w = self.window();
                let now = now_ms();
                for (c, verdict) in verdicts {
                    match verdict {
                        Some(agree) => w.scheduler.record_agreement(c.unit, c.a, c.b, agree, now),
                        None => w.scheduler.comparison_failed(c, now),
                    }
                }
                let ops = w.scheduler.take_ops();
                comparisons = match units {
                    Some(units) => w.scheduler.take_comparisons_of(units),
                    None => w.scheduler.take_comparisons(now),
                };
                (!ops.is_empty() || !comparisons.is_empty())
                    .then(|| self.writer.submit(ops, Vec::new()))
            };
            if let Some(receipt) = receipt
                && let Err(e) = durable(receipt, "storing verdicts").await
            {
                self.retry_later(comparisons);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Comparisons taken from the scheduler that will not be made now (the
    /// writer or a comparison failed): it hands them out again later, so no
    /// unit waits forever for a verdict.
    fn retry_later(&self, comparisons: Vec<Comparison>) {
        let mut w = self.window();
        let now = now_ms();
        for c in comparisons {
            w.scheduler.comparison_failed(c, now);
        }
    }

    /// Makes the comparisons asked outside an exchange (a unit loaded into
    /// the window, a copy expired, a retry due), from a loop of its own.
    pub async fn compare_pending(&self) -> Result<()> {
        let (comparisons, barrier) = {
            let mut w = self.window();
            let comparisons = w.scheduler.take_comparisons(now_ms());
            if comparisons.is_empty() {
                return Ok(());
            }
            // Queued after every batch decided before: once it is done,
            // every output the comparisons name is in the store.
            (comparisons, self.writer.submit(Vec::new(), Vec::new()))
        };
        if let Err(e) = durable(barrier, "storing results").await {
            self.retry_later(comparisons);
            return Err(e);
        }
        self.settle(comparisons, HashMap::new(), None).await
    }

    /// Commits what is queued and stops the store writer: the last step
    /// of a graceful shutdown.
    pub fn stop_writer(&self) {
        self.writer.stop();
    }

    /// Expires copies past their deadline.
    pub fn tick(&self) {
        self.storage.check();
        let mut w = self.window();
        w.scheduler.expire(now_ms());
        let ops = w.scheduler.take_ops();
        if !ops.is_empty() {
            self.writer.submit_detached(ops);
        }
    }

    /// Runs the feeder and the ticker until the process ends.
    pub fn spawn_background(self: &Arc<Self>) {
        let grid = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = grid.refill().await {
                    tracing::error!("refilling the dispatch window failed: {e:#}");
                }
                if let Err(e) = grid.reload_reopened().await {
                    tracing::error!("reloading reopened units failed: {e:#}");
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), grid.feed.notified()).await;
            }
        });
        let grid = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            let mut ticks = 0u64;
            loop {
                every.tick().await;
                grid.tick();
                ticks += 1;
                if ticks.is_multiple_of(4)
                    && let Err(e) = grid.apply_bans().await
                {
                    tracing::error!("applying bans failed: {e:#}");
                }
            }
        });
        // Apart from the ticker: a slow validator must not hold up expiry.
        let grid = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                every.tick().await;
                if let Err(e) = grid.compare_pending().await {
                    tracing::error!("comparing outputs failed: {e:#}");
                }
            }
        });
    }
}
