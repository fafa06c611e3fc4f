//! The sans-IO heart of the coordinator (BOINC's transitioner and
//! scheduler in one): which host gets which copy of which unit, what a
//! report changes, when a copy has timed out, what each host has earned in
//! trust and quota.
//!
//! Inputs arrive through methods that take the current time (`now_ms`);
//! outputs are the tasks returned to the caller and the [`StoreOp`]s it
//! collects with [`Scheduler::take_ops`] and hands to the store writer.
//! Nothing here sleeps, reads a clock or touches a socket or a disk, so the
//! rules are tested directly (see the property tests below and
//! `coordinator/tests/adversary.rs`). Randomness (adaptive replication's
//! spot checks) comes from a seeded generator. Comparing two different
//! outputs under a tolerance or a researcher's validator is I/O (it reads
//! outputs and may run wasm), so it is an input like a report: a unit that
//! needs a verdict asks for it ([`Scheduler::take_comparisons`]) and waits;
//! the shell compares off the lock and answers with
//! [`Scheduler::record_agreement`] (or [`Scheduler::comparison_failed`],
//! which retries).
//!
//! The scheduler holds a *window* of unfinished units in memory (BOINC's
//! feeder keeps a similar shared-memory cache): dispatch never reads the
//! store; the I/O shell refills the window from the store when it runs low.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use peergrid_proto::Hash;
use peergrid_proto::wire::{BlobRef, JobId, UnitId};

use crate::model::{Comparison, HostId, JobInfo, LoadedUnit, StoreOp};
use crate::quorum::{Copy, CopyState, Rules};
use crate::trust::{HostPolicy, SplitMix64, Standing};

/// One fewer copy in flight for `host`.
fn release(in_flight: &mut HashMap<HostId, u32>, host: HostId) {
    if let Some(n) = in_flight.get_mut(&host) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            in_flight.remove(&host);
        }
    }
}

/// How long a comparison the shell could not make waits before it is
/// handed out again.
pub const COMPARE_RETRY_MS: u64 = 2_000;

/// A unit's input as the window holds it.
enum UnitInput {
    /// Sent inside each task.
    Inline(Arc<[u8]>),
    /// Sent as its hash and length: workers fetch it from a blob mirror
    /// (or the coordinator), and the window keeps no bytes.
    ByReference(BlobRef),
}

struct UnitState {
    job: Arc<JobInfo>,
    /// The unit's number within its job.
    number: u64,
    input: UnitInput,
    copies: Vec<Copy>,
    /// Whether the unit sits in `queue` (or, waiting for an auditor, in
    /// `audit_queue`); keeps it there at most once.
    queued: bool,
    /// Adaptive replication sent it to a trusted host as a single copy;
    /// cleared (back to the job's quorum) if that copy fails.
    single: bool,
    /// An audit disagreed with its validated output: one more agreeing
    /// result than the quorum decides it.
    disputed: bool,
    /// Validated, and kept in the window for an audit copy.
    audit: Option<audits::Audit>,
    /// Output bytes each host's successful copy stored, counted against
    /// the host until the unit leaves the window.
    stored: Vec<(HostId, u64)>,
    /// Verdicts on pairs of its different outputs (non-bitwise jobs),
    /// smaller hash first.
    verdicts: Vec<((Hash, Hash), bool)>,
}

impl UnitState {
    fn rules(&self) -> Rules {
        let rules = Rules::of(&self.job.settings);
        let rules = if self.single { rules.single() } else { rules };
        if self.disputed {
            rules.disputed()
        } else {
            rules
        }
    }
}

/// Why the last host that asked got no copy of a job's unfinished units,
/// shown with the job's status until one of its copies goes out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The units' next copies need a host of another network (or another
    /// volunteer, with `distinct_volunteers`) than their earlier copies.
    OtherNetwork,
    /// A quorum of young hosts must be completed by an established host,
    /// and none has taken work lately.
    EstablishedHost,
}

impl Waiting {
    pub fn describe(self) -> &'static str {
        match self {
            Waiting::OtherNetwork => {
                "waiting for a host on another network than the hosts of its units' earlier copies"
            }
            Waiting::EstablishedHost => {
                "waiting for an established host to complete quorums of new hosts"
            }
        }
    }
}

pub struct Scheduler {
    jobs: HashMap<JobId, Arc<JobInfo>>,
    units: HashMap<UnitId, UnitState>,
    /// Units that may need more copies, oldest first. A unit's entry is
    /// re-checked with [`decide`] when it reaches the front.
    queue: VecDeque<UnitId>,
    /// Validated units waiting for an auditor, oldest first: a queue of
    /// their own, which only established hosts look at, so audits no host
    /// can take never stand in front of the units still to be done.
    audit_queue: VecDeque<UnitId>,
    /// Outstanding copies by expiry (deadline plus grace):
    /// `(expiry_ms, unit, host)`.
    deadlines: BTreeSet<(u64, UnitId, HostId)>,
    hosts: HashMap<HostId, Standing>,
    /// Copies each host holds unreported: bounded by
    /// [`Standing::in_flight_cap`], so no host can hoard a job.
    in_flight: HashMap<HostId, u32>,
    /// Output bytes each host has stored for units still undecided:
    /// bounded by [`HostPolicy::max_stored_bytes`].
    stored: HashMap<HostId, u64>,
    /// When an established host last asked for work: while none has for
    /// [`HostPolicy::established_idle_ms`], young hosts may complete each
    /// other's quorums (a new grid has no established hosts).
    established_seen_ms: Option<u64>,
    /// Hosts caught since the last [`Scheduler::take_ops`] (an invalid
    /// result, a ban): each gets one `StoreOp::Repair`.
    caught: HashMap<HostId, (String, u64)>,
    /// Validated units kept in the window for their audit.
    auditing: HashSet<UnitId>,
    /// Jobs whose units the last asking host could not take, and why.
    waiting: HashMap<JobId, Waiting>,
    /// Hosts whose standing changed since the last [`Scheduler::take_ops`].
    dirty: HashSet<HostId>,
    policy: HostPolicy,
    /// Comparisons asked for and not yet handed out.
    comparisons: Vec<Comparison>,
    /// Comparisons the shell could not make, with when to retry them.
    retries: Vec<(u64, Comparison)>,
    /// Pairs asked for and not yet answered, by unit.
    comparing: HashMap<UnitId, Vec<(Hash, Hash)>>,
    /// Adaptive replication's draws.
    rng: SplitMix64,
    ops: Vec<StoreOp>,
    /// Jobs cancelled since start: never added or loaded again.
    cancelled: HashSet<JobId>,
    /// Units each host should stop running (their job was cancelled),
    /// told at its next exchange.
    stops: HashMap<HostId, Vec<UnitId>>,
    /// Inputs of at least this many bytes are sent by reference (blob
    /// mirrors hold them); `None`: every input rides inline.
    by_reference_from: Option<usize>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new()
    }
}

/// Why a report was refused; the worker forgets such reports.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("unit {0} is finished or unknown")]
    UnknownUnit(UnitId),
    #[error("unit {0} was not assigned to this host")]
    NotAssigned(UnitId),
    #[error("unit {0} was already reported by this host")]
    AlreadyReported(UnitId),
    #[error("this host is banned from the project")]
    Banned,
    #[error("unit {unit}: reported fuel {fuel} exceeds the task's limit of {limit}")]
    FuelAboveLimit { unit: UnitId, fuel: u64, limit: u64 },
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler::with(HostPolicy::default(), 0x5eed)
    }

    /// A scheduler with a quota policy and a seed for adaptive
    /// replication's draws.
    pub fn with(policy: HostPolicy, seed: u64) -> Scheduler {
        Scheduler {
            jobs: HashMap::new(),
            units: HashMap::new(),
            queue: VecDeque::new(),
            audit_queue: VecDeque::new(),
            deadlines: BTreeSet::new(),
            hosts: HashMap::new(),
            in_flight: HashMap::new(),
            stored: HashMap::new(),
            established_seen_ms: None,
            caught: HashMap::new(),
            auditing: HashSet::new(),
            waiting: HashMap::new(),
            dirty: HashSet::new(),
            policy,
            comparisons: Vec::new(),
            retries: Vec::new(),
            comparing: HashMap::new(),
            rng: SplitMix64(seed),
            ops: Vec::new(),
            cancelled: HashSet::new(),
            stops: HashMap::new(),
            by_reference_from: None,
        }
    }

    /// Sends inputs of at least `min_bytes` by reference from now on
    /// (units loaded later), or every input inline with `None`: a
    /// coordinator whose blobs are mirrored lets workers fetch the larger
    /// inputs from the mirrors, and keeps no bytes of them in the window.
    pub fn send_inputs_by_reference(&mut self, min_bytes: Option<usize>) {
        self.by_reference_from = min_bytes;
    }

    pub fn has_job(&self, id: JobId) -> bool {
        self.jobs.contains_key(&id)
    }

    pub fn add_job(&mut self, job: JobInfo) {
        if self.cancelled.contains(&job.id) {
            return;
        }
        self.jobs.insert(job.id, Arc::new(job));
    }

    /// The job a unit in the window belongs to.
    pub fn job_of(&self, unit: UnitId) -> Option<&JobInfo> {
        self.units.get(&unit).map(|u| &*u.job)
    }

    /// Unfinished units in the window.
    pub fn active_units(&self) -> usize {
        self.units.len()
    }

    /// Units queued for more copies, audits included.
    pub fn queued_units(&self) -> usize {
        self.queue.len() + self.audit_queue.len()
    }

    pub fn policy(&self) -> &HostPolicy {
        &self.policy
    }

    /// Tells the scheduler who a host is (after it said Hello), with the
    /// trust and quota the store kept for it. A host the scheduler never
    /// heard of is an anonymous, untrusted host with a full quota.
    pub fn host_joined(&mut self, host: HostId, standing: Standing) {
        self.hosts.insert(host, standing);
    }

    pub fn standing(&self, host: HostId) -> Option<&Standing> {
        self.hosts.get(&host)
    }

    /// Applies the operator's bans: `hosts` by id and every host of
    /// `accounts`. A newly banned host's copies in the window are voided
    /// (its results so far count for nothing) and it gets no more work;
    /// hosts no longer listed are let back in.
    pub fn set_bans(&mut self, hosts: &HashSet<HostId>, accounts: &HashSet<String>, now_ms: u64) {
        let mut newly = Vec::new();
        for (id, s) in &mut self.hosts {
            let banned =
                hosts.contains(id) || (!s.account.is_empty() && accounts.contains(&s.account));
            if banned && !s.banned {
                newly.push(*id);
            }
            s.banned = banned;
        }
        for id in hosts {
            if !self.hosts.contains_key(id) {
                let mut s = Standing::anonymous(&self.policy);
                s.banned = true;
                self.hosts.insert(*id, s);
                newly.push(*id);
            }
        }
        if newly.is_empty() {
            return;
        }
        for &host in &newly {
            self.caught
                .insert(host, ("the operator banned it".to_string(), now_ms));
        }
        let newly: HashSet<HostId> = newly.into_iter().collect();
        let mut touched = Vec::new();
        for (&unit_id, unit) in &mut self.units {
            for c in &mut unit.copies {
                if !newly.contains(&c.host) {
                    continue;
                }
                match c.state {
                    CopyState::InProgress { deadline_ms } => {
                        self.deadlines.remove(&(deadline_ms, unit_id, c.host));
                        release(&mut self.in_flight, c.host);
                    }
                    CopyState::Success { .. } => {}
                    _ => continue,
                }
                let reason = "the host was banned by the operator".to_string();
                c.state = CopyState::Voided(reason.clone());
                self.ops.push(StoreOp::Void {
                    unit: unit_id,
                    host: c.host,
                    reason,
                });
                touched.push(unit_id);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            self.evaluate(id, now_ms);
        }
    }

    /// Adds an unfinished unit from the store to the window. Its job must
    /// have been added first.
    pub fn load(&mut self, unit: LoadedUnit, now_ms: u64) {
        let Some(job) = self.jobs.get(&unit.job).cloned() else {
            return;
        };
        if self.units.contains_key(&unit.id) {
            return;
        }
        for c in &unit.copies {
            if let CopyState::InProgress { deadline_ms } = c.state {
                self.deadlines.insert((deadline_ms, unit.id, c.host));
                *self.in_flight.entry(c.host).or_insert(0) += 1;
            }
        }
        self.units.insert(
            unit.id,
            UnitState {
                job,
                number: unit.number,
                // Bytes the store withheld go by reference whatever the
                // setting: a unit never goes out with an empty input that
                // is not its own.
                input: if unit.input.len() as u64 != unit.input_len
                    || self
                        .by_reference_from
                        .is_some_and(|min| unit.input_len >= min as u64)
                {
                    UnitInput::ByReference(BlobRef {
                        hash: unit.input_hash,
                        len: unit.input_len,
                    })
                } else {
                    UnitInput::Inline(unit.input.into())
                },
                // The store keeps which copy was sent as a single one; if
                // it failed, `evaluate` puts the unit back to the quorum.
                single: unit.single,
                disputed: unit.disputed,
                audit: None,
                stored: Vec::new(),
                verdicts: Vec::new(),
                copies: unit.copies,
                queued: false,
            },
        );
        self.evaluate(unit.id, now_ms);
    }

    fn standing_mut(&mut self, host: HostId) -> &mut Standing {
        let policy = self.policy;
        self.hosts
            .entry(host)
            .or_insert_with(|| Standing::anonymous(&policy))
    }

    /// Why the last host that asked could take none of `job`'s units, if
    /// no copy of the job has gone out since.
    pub fn waiting(&self, job: JobId) -> Option<Waiting> {
        self.waiting.get(&job).copied()
    }

    /// Copies `host` holds unreported.
    pub fn in_flight(&self, host: HostId) -> u32 {
        self.in_flight.get(&host).copied().unwrap_or(0)
    }

    /// Records a host's report on a unit it was assigned (also after its
    /// deadline, as long as the unit is unfinished).
    pub fn report(
        &mut self,
        host: HostId,
        unit_id: UnitId,
        state: CopyState,
        elapsed_ms: u64,
        now_ms: u64,
    ) -> Result<(), ReportError> {
        if self.hosts.get(&host).is_some_and(|s| s.banned) {
            return Err(ReportError::Banned);
        }
        let unit = self
            .units
            .get_mut(&unit_id)
            .ok_or(ReportError::UnknownUnit(unit_id))?;
        let limit = unit.job.settings.fuel_limit();
        let copy = unit
            .copies
            .iter_mut()
            .find(|c| c.host == host)
            .ok_or(ReportError::NotAssigned(unit_id))?;
        if matches!(
            copy.state,
            CopyState::Success { .. } | CopyState::Error(_) | CopyState::Voided(_)
        ) {
            return Err(ReportError::AlreadyReported(unit_id));
        }
        // Fuel is bounded by the task's limit on every honest host: a
        // report above it is a lie about the work (and about credit). The
        // copy becomes an error, charged to the host.
        let (state, refused) = match state {
            CopyState::Success { fuel, .. } if fuel > limit => {
                let e = ReportError::FuelAboveLimit {
                    unit: unit_id,
                    fuel,
                    limit,
                };
                (CopyState::Error(e.to_string()), Some(e))
            }
            state => (state, None),
        };
        if let CopyState::InProgress { deadline_ms } = copy.state {
            self.deadlines.remove(&(deadline_ms, unit_id, host));
            release(&mut self.in_flight, host);
        }
        copy.state = state.clone();
        if matches!(state, CopyState::Error(_)) {
            self.host_failed(host);
        }
        self.ops.push(StoreOp::Report {
            unit: unit_id,
            host,
            state,
            elapsed_ms,
            received_ms: now_ms,
        });
        self.evaluate(unit_id, now_ms);
        match refused {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Counts `bytes` of output stored for `host`'s accepted report on
    /// `unit` against its storage cap, until the unit is decided.
    pub fn stored(&mut self, host: HostId, unit: UnitId, bytes: u64) {
        if let Some(u) = self.units.get_mut(&unit) {
            u.stored.push((host, bytes));
            let total = self.stored.entry(host).or_default();
            *total = total.saturating_add(bytes);
        }
    }

    /// The host gives back a copy it has not started (it could not start it
    /// in time): the copy counts for nothing, neither for the quorum nor
    /// against the host or the unit's caps, and the unit goes to another
    /// host.
    pub fn give_back(
        &mut self,
        host: HostId,
        unit_id: UnitId,
        now_ms: u64,
    ) -> Result<(), ReportError> {
        self.void_unstarted(host, unit_id, "given back unstarted by the host", now_ms)
    }

    /// Voids, without charge, the copies `host` has in progress but does
    /// not hold (`held`: every unit it holds unfinished): the reply that
    /// assigned them was lost on the way, so they are reissued now rather
    /// than at their deadline. Returns how many.
    pub fn reconcile(&mut self, host: HostId, held: &HashSet<UnitId>, now_ms: u64) -> usize {
        let holding = held
            .iter()
            .filter(|u| {
                self.units.get(u).is_some_and(|unit| {
                    unit.copies
                        .iter()
                        .any(|c| c.host == host && matches!(c.state, CopyState::InProgress { .. }))
                })
            })
            .count();
        if self.in_flight(host) as usize <= holding {
            return 0;
        }
        let lost: Vec<UnitId> = self
            .deadlines
            .iter()
            .filter(|(_, unit, h)| *h == host && !held.contains(unit))
            .map(|(_, unit, _)| *unit)
            .collect();
        for unit in &lost {
            // Ok or nothing to void: either way the copy is no longer out.
            let _ = self.void_unstarted(
                host,
                *unit,
                "lost on the way: the host never held it",
                now_ms,
            );
        }
        lost.len()
    }

    fn void_unstarted(
        &mut self,
        host: HostId,
        unit_id: UnitId,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ReportError> {
        if self.hosts.get(&host).is_some_and(|s| s.banned) {
            return Err(ReportError::Banned);
        }
        let unit = self
            .units
            .get_mut(&unit_id)
            .ok_or(ReportError::UnknownUnit(unit_id))?;
        let copy = unit
            .copies
            .iter_mut()
            .find(|c| c.host == host)
            .ok_or(ReportError::NotAssigned(unit_id))?;
        let CopyState::InProgress { deadline_ms } = copy.state else {
            return Err(ReportError::AlreadyReported(unit_id));
        };
        self.deadlines.remove(&(deadline_ms, unit_id, host));
        release(&mut self.in_flight, host);
        let reason = reason.to_string();
        copy.state = CopyState::Voided(reason.clone());
        self.ops.push(StoreOp::Void {
            unit: unit_id,
            host,
            reason,
        });
        self.evaluate(unit_id, now_ms);
        Ok(())
    }

    /// Marks every copy whose deadline (plus grace) has passed as timed out.
    pub fn expire(&mut self, now_ms: u64) {
        let mut given_up = false;
        while let Some(&(deadline_ms, unit_id, host)) = self.deadlines.first() {
            if deadline_ms > now_ms {
                break;
            }
            self.deadlines.pop_first();
            let Some(unit) = self.units.get_mut(&unit_id) else {
                continue;
            };
            if host == audits::AUDIT_WAIT {
                // No established host took the audit in time (there may be
                // none it could go to): give it up.
                if unit
                    .audit
                    .as_ref()
                    .is_some_and(|a| a.auditor.is_none() && a.give_up_ms <= deadline_ms)
                {
                    self.finish(unit_id);
                    given_up = true;
                }
                continue;
            }
            if let Some(c) = unit.copies.iter_mut().find(|c| c.host == host) {
                c.state = CopyState::TimedOut;
                release(&mut self.in_flight, host);
            }
            self.ops.push(StoreOp::TimedOut {
                unit: unit_id,
                host,
            });
            self.host_failed(host);
            self.evaluate(unit_id, now_ms);
        }
        if given_up {
            self.prune_audit_queue();
        }
    }

    /// Store changes decided since the last call, in order; changed host
    /// standings come last, one per host.
    pub fn take_ops(&mut self) -> Vec<StoreOp> {
        let mut caught: Vec<(HostId, (String, u64))> = self.caught.drain().collect();
        caught.sort_unstable();
        for (host, (reason, at_ms)) in caught {
            let reason = format!("host {host} was caught: {reason}");
            self.ops.push(StoreOp::Repair {
                host,
                reason: reason.clone(),
                at_ms,
            });
            // Whatever the host reported that still counts in the window
            // is void, as the store voids it: a caught host's results never
            // validate anything again. A unit under audit whose row it
            // helped validate is reopened here as the store reopens it.
            let mut hit: Vec<UnitId> = self
                .units
                .iter()
                .filter(|(_, u)| {
                    u.copies
                        .iter()
                        .any(|c| c.host == host && matches!(c.state, CopyState::Success { .. }))
                })
                .map(|(id, _)| *id)
                .collect();
            hit.sort_unstable();
            let mut reopened = Vec::new();
            for id in hit {
                let Some(unit) = self.units.get_mut(&id) else {
                    continue;
                };
                for c in &mut unit.copies {
                    if c.host == host && matches!(c.state, CopyState::Success { .. }) {
                        c.state = CopyState::Voided(reason.clone());
                    }
                }
                match &unit.audit {
                    // Validated without the host: the row stands, the audit
                    // goes on.
                    Some(a) if !a.hosts.contains(&host) => {}
                    // Its row is reopened: an audit copy still out counts
                    // as an ordinary copy.
                    Some(_) => {
                        unit.audit = None;
                        self.auditing.remove(&id);
                        reopened.push(id);
                    }
                    None => self.evaluate(id, at_ms),
                }
            }
            if !reopened.is_empty() {
                // Out of the audits' queue first, then to the quorum's.
                self.prune_audit_queue();
                for id in reopened {
                    self.evaluate(id, at_ms);
                }
            }
        }
        let mut dirty: Vec<HostId> = self.dirty.drain().collect();
        dirty.sort_unstable();
        for host in dirty {
            if let Some(s) = self.hosts.get(&host) {
                self.ops.push(StoreOp::Standing {
                    host,
                    consecutive_valid: s.consecutive_valid,
                    quota: s.quota,
                });
            }
        }
        std::mem::take(&mut self.ops)
    }
}

mod assign;
mod audits;
mod cancel;
mod verdicts;

pub use cancel::CANCELLED;

#[cfg(test)]
mod tests;
