//! [`Uplink`], the coordinator side of the worker: it connects (with
//! backoff), reports stored results until the coordinator settles them,
//! gives back tasks the core could not start in time, and fetches work
//! (and its modules) until `slots + work_buffer` tasks are held. The
//! decisions are made in [`exchange_rules`]; this file reads the state,
//! talks and waits.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use peergrid_os::{lock, now_ms};
use peergrid_proto::JoinString;
use peergrid_proto::limits::{MAX_FRAME, MAX_HELD, MAX_INPUT, MAX_TASKS_PER_EXCHANGE};
use peergrid_proto::wire::{
    Attachment, Exchange, HostFacts, Reply, Request, Task, TaskReport, UnitId,
};
use tokio::sync::watch;

use super::exchange_rules::{self, Backoff, Before, Exchanged, Failure, FatalStop, GiveUp};
use super::modules::{self, fetch_module, refusal};
use super::{Shared, note, printable};
use crate::identity::host_facts;
use crate::net::{self, Session};
use crate::state::LocalState;

/// Longest wait of one exchange with the coordinator.
pub(super) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The coordinator side of the worker: reports and work fetch.
pub(super) struct Uplink {
    pub(super) join: JoinString,
    pub(super) key: SigningKey,
    /// The host's attachment to the volunteer's account, if any.
    pub(super) account: Option<Attachment>,
    /// What the Hello says besides the machine's facts: the volunteer's
    /// name for the host and the tasks it runs at once.
    pub(super) name: String,
    pub(super) slots: u32,
    pub(super) bind: Option<std::net::IpAddr>,
    pub(super) data: PathBuf,
    pub(super) state: Arc<LocalState>,
    pub(super) shared: Arc<Shared>,
}

impl Uplink {
    /// Connects and exchanges until `drain` turns true, then delivers what
    /// it can and returns. Errors only with a [`FatalStop`], after
    /// [`PERMANENT_ATTEMPTS`](exchange_rules::PERMANENT_ATTEMPTS) permanent
    /// failures in a row (a wrong certificate, a ban): the reason is kept
    /// in the state for `status`.
    pub(super) async fn run(self, mut drain: watch::Receiver<bool>) -> Result<()> {
        let mut retry = Backoff::default();
        let mut give_up = GiveUp::default();
        // Only the first failure after a connection goes to the event log:
        // an outage must not push everything else out of it.
        let mut offline_noted = false;
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
                    HostFacts {
                        name: self.name.clone(),
                        slots: self.slots,
                        ..host_facts()
                    },
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
                    note(
                        &self.state,
                        "joined",
                        format!(
                            "connected to {} as host {}",
                            self.join.address, session.welcome.host_id
                        ),
                    );
                    offline_noted = false;
                    self.shared.set_permanent_error(None);
                    self.state.set_stopped_for(None)?;
                    retry.connected();
                    give_up.connected();
                    match self.serve(&session, &mut drain).await {
                        Ok(()) => return Ok(()),
                        Err(e) => format!("lost the coordinator: {e:#}"),
                    }
                }
                Ok(Err(e)) => {
                    // The error may quote the coordinator.
                    let what = printable(&e.to_string());
                    let failure = exchange_rules::classify(&e);
                    if let Failure::Permanent(cause) = failure {
                        let stop = FatalStop { cause, what };
                        self.shared.set_permanent_error(Some(&stop.to_string()));
                        if give_up.failed(failure) {
                            // Kept, so `status` tells why the worker is
                            // not running, until the next connection.
                            self.state.set_stopped_for(Some(&stop.to_string()))?;
                            note(&self.state, "error", format!("stopped: {stop}"));
                            return Err(stop.into());
                        }
                        format!("refused: {}", stop.what)
                    } else {
                        give_up.failed(failure);
                        what
                    }
                }
                Err(_) => {
                    give_up.failed(Failure::Transient);
                    "connecting timed out".to_string()
                }
            };
            // The error may quote the coordinator.
            let error = printable(&error);
            let backoff = retry.failed();
            tracing::warn!("{error}; retrying in {backoff:?} (computing goes on)");
            if !offline_noted {
                note(&self.state, "error", format!("{error}; retrying"));
                offline_noted = true;
            }
            self.shared.set_connection(format!("offline: {error}"));
            tokio::select! {
                _ = drain.changed() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
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
            let unsettled = self.state.pending_report_count()?;
            // Winding down (no-more-work, detach) asks for nothing, as
            // draining does, but delivers until everything is settled.
            let fetch_nothing = draining || self.shared.winding().fetches_nothing();
            let target = self.shared.live().target();
            let want = exchange_rules::work_wanted(target, held, unsettled, fetch_nothing);
            let returned = self
                .state
                .pending_returns(MAX_TASKS_PER_EXCHANGE as usize)?;
            if exchange_rules::held_back(want, held, target, fetch_nothing) {
                tracing::debug!(
                    unsettled,
                    "asking for no work until the coordinator settles results"
                );
            }
            match exchange_rules::before_exchange(reports.len(), returned.len(), want, draining) {
                Before::Exchange => {}
                Before::Done => return Ok(()),
                Before::Idle(wait) => {
                    self.idle(drain, wait).await;
                    continue;
                }
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
            for unit in reply.stop.iter().take(MAX_HELD) {
                self.state.forget(*unit)?;
                if let Some(run) = lock(&self.shared.running).get(unit) {
                    run.cancel();
                }
                tracing::info!(unit, "the coordinator cancelled a held task; dropped");
                note(
                    &self.state,
                    "cancelled",
                    format!("unit {unit}: its job was cancelled; dropped"),
                );
            }
            let mut tasks = reply.tasks;
            if tasks.len() > want as usize {
                // More than asked: never hold past the volunteer's buffer.
                tracing::warn!(
                    "the coordinator sent {} tasks for {want} wanted; ignoring the rest",
                    tasks.len()
                );
                tasks.truncate(want as usize);
            }
            let exchanged = Exchanged {
                sent,
                want,
                got: tasks.len(),
                settled: reply.accepted.len() + rejected.len(),
                retry_after_ms: reply.retry_after_ms,
            };
            let mut ready = Vec::with_capacity(tasks.len());
            let mut ready_bytes = 0;
            for mut task in tasks {
                // The signature first: a module no endorsed researcher
                // signed is never downloaded, let alone kept or run.
                if let Some(report) = refusal(&self.join.project_key, &task) {
                    self.state.finish(&report, now_ms())?;
                    continue;
                }
                if let Err(e) = self.fetch_input(session, &mut task).await {
                    // As for a module: not the task's fault.
                    tracing::warn!(
                        unit = task.unit,
                        "cannot fetch the input, giving the task back: {e:#}"
                    );
                    self.state.give_back(task.unit, now_ms())?;
                    continue;
                }
                let (modules, mirrors) = (&self.shared.modules, &self.shared.mirrors);
                match fetch_module(&self.data, modules, mirrors, session, &task.module).await {
                    Ok(()) => {
                        ready_bytes += task.input.len();
                        ready.push(task);
                        // Inputs fetched by reference are not bounded by
                        // the reply's size: hold at most a quarter frame
                        // of them in memory, and let the core start on
                        // those while the rest arrive.
                        if ready_bytes >= MAX_FRAME / 4 {
                            self.hold(&mut ready, received_ms)?;
                            ready_bytes = 0;
                        }
                    }
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
            self.hold(&mut ready, received_ms)?;
            if exchanged.got > 0 {
                // Once every task of the reply is held: their modules
                // are then kept.
                self.trim_caches()?;
            }
            if exchange_rules::drain_done(draining, &exchanged) {
                return Ok(());
            }
            let more_to_send = self.state.pending_report_count()? > 0;
            if let Some(wait) = exchange_rules::wait_after(&exchanged, more_to_send) {
                self.idle(drain, wait).await;
            }
        }
    }

    /// Stores the fetched tasks `ready` (emptying it) for the core, and
    /// wakes it.
    fn hold(&self, ready: &mut Vec<Task>, received_ms: u64) -> Result<()> {
        if ready.is_empty() {
            return Ok(());
        }
        let units: Vec<String> = ready.iter().map(|t| t.unit.to_string()).collect();
        let message = format!("{} task(s): unit {}", ready.len(), units.join(", "));
        // The tasks and their line in the event log: one commit.
        self.state
            .add_tasks_noting(ready, received_ms, Some(("fetched", &message)))?;
        ready.clear();
        self.shared.wake_core.notify_one();
        Ok(())
    }

    /// Fills in an input the coordinator sent by reference, so the task
    /// is held (and run, after a restart too) with its bytes.
    async fn fetch_input(&self, session: &Session, task: &mut Task) -> Result<()> {
        let Some(input) = task.input_ref else {
            return Ok(());
        };
        if input.len > MAX_INPUT as u64 {
            bail!(
                "the input is {} bytes, over the limit of {MAX_INPUT}",
                input.len
            );
        }
        let mirrors = &self.shared.mirrors;
        task.input = mirrors
            .fetch(session, &input.hash, Some(input.len), MAX_INPUT)
            .await?;
        task.input_ref = None;
        Ok(())
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
        let held = self
            .state
            .pending_reports(MAX_TASKS_PER_EXCHANGE as usize)?;
        Ok(exchange_rules::reports_that_fit(held, MAX_FRAME / 4))
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
        modules::trim_caches(&self.data, self.shared.live().disk_cap(), &keep);
        Ok(())
    }
}
