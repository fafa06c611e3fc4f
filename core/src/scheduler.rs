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
//! spot checks) comes from a seeded generator, and comparing outputs that
//! are not bitwise equal is delegated to an injected [`Judge`].
//!
//! The scheduler holds a *window* of unfinished units in memory (BOINC's
//! feeder keeps a similar shared-memory cache): dispatch never reads the
//! store; the I/O shell refills the window from the store when it runs low.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use peergrid_proto::limits::MAX_OUTPUT;
use peergrid_proto::wire::{JobId, Task, TaskLimits, UnitId};
use peergrid_proto::{Hash, deadline};

use crate::model::{HostId, JobInfo, LoadedUnit, StoreOp};
use crate::netgroup;
use crate::quorum::{Copy, CopyState, Rules, Verdict, bitwise, decide, needs_canonical_nan};
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

/// How many queued units one `assign` call may look at before giving up:
/// bounds the cost of a request from a host that already holds copies of
/// everything at the front of the queue.
const MAX_SCAN: usize = 4096;
/// Each copy is drawn at random among this many units at the front of the
/// queue, so which units a request gets cannot be predicted from the
/// request before it: two identities of one party asking back to back do
/// not get the two copies of the same units.
const DRAW_WINDOW: usize = 64;

/// Compares outputs whose hashes differ, for jobs whose validator is not
/// bitwise (identical hashes always agree and are never asked about).
pub trait Judge: Send {
    fn agree(&mut self, job: &JobInfo, a: &Hash, b: &Hash) -> bool;
    /// A unit finished: its outputs will not be compared again.
    fn forget(&mut self, _outputs: &[Hash]) {}
}

/// The judge of a scheduler that only ever sees bitwise jobs.
pub struct BitwiseOnly;

impl Judge for BitwiseOnly {
    fn agree(&mut self, _: &JobInfo, _: &Hash, _: &Hash) -> bool {
        false
    }
}

struct UnitState {
    job: Arc<JobInfo>,
    input: Arc<[u8]>,
    copies: Vec<Copy>,
    /// Whether the unit sits in `queue`; keeps it there at most once.
    queued: bool,
    /// Adaptive replication sent it to a trusted host as a single copy;
    /// cleared (back to the job's quorum) if that copy fails.
    single: bool,
    /// An audit disagreed with its validated output: one more agreeing
    /// result than the quorum decides it.
    disputed: bool,
    /// Validated, and kept in the window for an audit copy.
    audit: Option<Audit>,
    /// Output bytes each host's successful copy stored, counted against
    /// the host until the unit leaves the window.
    stored: Vec<(HostId, u64)>,
}

/// A validated unit waiting for its audit: one more copy on an
/// established host that must agree with the dataset row.
#[derive(Clone, Debug)]
struct Audit {
    output: Hash,
    /// The hosts whose agreement validated it: if one is caught before
    /// the audit ends, the unit is reopened in the window too.
    hosts: Vec<HostId>,
    /// The established host running the audit copy.
    auditor: Option<HostId>,
    /// Audit copies that failed to report (error, timeout): after a few
    /// the audit is given up.
    attempts: u32,
}

/// Audit copies that may fail before an audit is given up.
const AUDIT_ATTEMPTS: u32 = 3;
/// Stands for "no host" in `Scheduler::deadlines`: when an audit waiting
/// for an auditor is given up.
const AUDIT_WAIT: HostId = HostId::MAX;

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
    judge: Box<dyn Judge>,
    /// Adaptive replication's draws.
    rng: SplitMix64,
    ops: Vec<StoreOp>,
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
        Scheduler::with(HostPolicy::default(), Box::new(BitwiseOnly), 0x5eed)
    }

    /// A scheduler with a quota policy, a judge for non-bitwise
    /// validators and a seed for adaptive replication's draws.
    pub fn with(policy: HostPolicy, judge: Box<dyn Judge>, seed: u64) -> Scheduler {
        Scheduler {
            jobs: HashMap::new(),
            units: HashMap::new(),
            queue: VecDeque::new(),
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
            judge,
            rng: SplitMix64(seed),
            ops: Vec::new(),
        }
    }

    pub fn has_job(&self, id: JobId) -> bool {
        self.jobs.contains_key(&id)
    }

    pub fn add_job(&mut self, job: JobInfo) {
        self.jobs.insert(job.id, Arc::new(job));
    }

    /// The job a unit in the window belongs to.
    pub fn job_of(&self, unit: UnitId) -> Option<&JobInfo> {
        self.units.get(&unit).map(|u| &*u.job)
    }

    /// For a unit of a job with a validator other than bitwise, whose copy
    /// `host` may still report: the job and the outputs its copies reported
    /// so far, so the grid can compare the host's output with them before it
    /// takes the scheduler's lock to report it. `None` for a report
    /// [`Scheduler::report`] would refuse, so a host cannot make the
    /// coordinator run validators on units it was never sent.
    pub fn outputs_to_compare(
        &self,
        unit: UnitId,
        host: HostId,
    ) -> Option<(Arc<JobInfo>, Vec<Hash>)> {
        let unit = self.units.get(&unit)?;
        if unit.job.validator.is_bitwise() || self.hosts.get(&host).is_some_and(|s| s.banned) {
            return None;
        }
        let may_report = unit.copies.iter().any(|c| {
            c.host == host && matches!(c.state, CopyState::InProgress { .. } | CopyState::TimedOut)
        });
        if !may_report {
            return None;
        }
        let outputs = unit
            .copies
            .iter()
            .filter_map(|c| match &c.state {
                CopyState::Success { output, .. } => Some(*output),
                _ => None,
            })
            .collect();
        Some((unit.job.clone(), outputs))
    }

    /// Unfinished units in the window.
    pub fn active_units(&self) -> usize {
        self.units.len()
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
                input: unit.input.into(),
                // The store keeps which copy was sent as a single one; if
                // it failed, `evaluate` puts the unit back to the quorum.
                single: unit.single,
                disputed: unit.disputed,
                audit: None,
                stored: Vec::new(),
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

    /// Up to `want` tasks for `host` whose inputs add up to at most
    /// `max_bytes` (one task always fits), within the host's daily quota
    /// and its cap on copies in flight, never a second copy of a unit the
    /// host (or, when the job asks, its volunteer) already has, nor a later
    /// copy of a unit an earlier copy of which went to the host's network.
    /// Units are drawn at random among the front of the queue, and a young
    /// host never completes a quorum of young hosts while established hosts
    /// are about.
    pub fn assign(&mut self, host: HostId, want: u32, max_bytes: usize, now_ms: u64) -> Vec<Task> {
        let policy = self.policy;
        let held = self.in_flight.get(&host).copied().unwrap_or(0);
        // Fresh units only while the host's share of the disk has room for
        // what it stored for undecided units and the largest output of
        // every copy it holds. Copies that complete a quorum or audit one
        // still go out: they decide units, which frees their bytes.
        let stored = self.stored.get(&host).copied().unwrap_or(0);
        let mut fresh_room = policy
            .max_stored_bytes
            .saturating_sub(stored)
            .saturating_sub(u64::from(held).saturating_mul(MAX_OUTPUT as u64))
            / MAX_OUTPUT as u64;
        let me = self.standing_mut(host);
        let cap = me.in_flight_cap(now_ms, &policy);
        let want = me.allowance(want, now_ms).min(cap.saturating_sub(held));
        let (account, addr) = (me.account.clone(), me.addr);
        let established = me.established(now_ms, &policy);
        let young_may_complete = self
            .established_seen_ms
            .is_none_or(|t| now_ms.saturating_sub(t) > policy.established_idle_ms);
        let mut tasks = Vec::new();
        let mut issued_jobs = Vec::new();
        let mut put_back = Vec::new();
        let mut scanned = 0;
        let mut bytes = 0;
        while tasks.len() < want as usize && scanned < MAX_SCAN && !self.queue.is_empty() {
            let window = self.queue.len().min(DRAW_WINDOW);
            let k = (self.rng.next_u64() % window as u64) as usize;
            if !tasks.is_empty()
                && self
                    .units
                    .get(&self.queue[k])
                    .is_some_and(|u| bytes + wire_size(u) > max_bytes)
            {
                break;
            }
            let Some(id) = self.queue.remove(k) else {
                break;
            };
            scanned += 1;
            let Some(unit) = self.units.get(&id) else {
                continue;
            };
            let offer_single =
                established && unit.copies.is_empty() && unit.job.settings.adaptive_replication;
            let single = offer_single && {
                let draw = self.rng.unit();
                self.hosts[&host].single_copy(draw)
            };
            let Some(unit) = self.units.get_mut(&id) else {
                continue;
            };
            unit.queued = false;
            if let Some(audit) = &unit.audit {
                // An audit copy: one at a time, on an established host of
                // another network than every copy so far.
                if audit.auditor.is_some() {
                    continue;
                }
                unit.queued = true;
                put_back.push(id);
                let hosts = &self.hosts;
                let s = &unit.job.settings;
                let clash = |c: &Copy| {
                    c.host == host
                        || netgroup::same_network(
                            addr,
                            hosts.get(&c.host).and_then(|o| o.addr),
                            s.network_prefix_v4,
                            s.network_prefix_v6,
                        )
                };
                if !established || unit.copies.iter().any(clash) {
                    continue;
                }
                unit.queued = false;
                put_back.pop();
                if let Some(a) = unit.audit.as_mut() {
                    a.auditor = Some(host);
                }
                if let Some((task, size)) = self.issue(id, host, false, now_ms) {
                    bytes += size;
                    tasks.push(task);
                }
                continue;
            }
            let rules = unit.rules();
            let Verdict::NeedCopies(need) = decide(&unit.copies, &rules, &mut bitwise) else {
                continue;
            };
            unit.queued = true;
            put_back.push(id);
            let hosts = &self.hosts;
            let s = &unit.job.settings;
            let other = |c: &Copy| hosts.get(&c.host);
            let same_party = |c: &Copy| {
                c.host == host
                    || (s.distinct_volunteers
                        && !account.is_empty()
                        && other(c).is_some_and(|o| o.account == account))
                    || netgroup::same_network(
                        addr,
                        other(c).and_then(|o| o.addr),
                        s.network_prefix_v4,
                        s.network_prefix_v6,
                    )
            };
            if unit.copies.iter().any(same_party) {
                // Only another host's copy stands for every host of this
                // network; this host's own copy keeps out only this host.
                if unit.copies.iter().any(|c| c.host != host && same_party(c)) {
                    self.waiting
                        .entry(unit.job.id)
                        .or_insert(Waiting::OtherNetwork);
                }
                continue;
            }
            if !established && !young_may_complete && rules.quorum >= 2 {
                let live: Vec<&Copy> = unit
                    .copies
                    .iter()
                    .filter(|c| {
                        matches!(
                            c.state,
                            CopyState::InProgress { .. } | CopyState::Success { .. }
                        )
                    })
                    .collect();
                let completes = live.len() + 1 >= rules.quorum as usize;
                let all_young = live
                    .iter()
                    .all(|c| !other(c).is_some_and(|o| o.established(now_ms, &policy)));
                if completes && all_young {
                    self.waiting
                        .entry(unit.job.id)
                        .or_insert(Waiting::EstablishedHost);
                    continue;
                }
            }
            if unit.copies.is_empty() {
                if fresh_room == 0 {
                    continue;
                }
                fresh_room -= 1;
            }
            unit.single = single;
            if need == 1 || single {
                unit.queued = false;
                put_back.pop();
            }
            if let Some((task, size)) = self.issue(id, host, single, now_ms) {
                bytes += size;
                issued_jobs.push(task.job);
                tasks.push(task);
            }
        }
        // A copy of a job's units went out: it is not waiting, whatever
        // else this host could not take.
        for job in issued_jobs {
            self.waiting.remove(&job);
        }
        for id in put_back.into_iter().rev() {
            self.queue.push_front(id);
        }
        // An established host counts as about only when it takes work: one
        // that merely asks cannot keep young hosts from completing quorums.
        if established && !tasks.is_empty() {
            self.established_seen_ms = Some(now_ms);
        }
        self.standing_mut(host).sent(tasks.len() as u32);
        tasks
    }

    /// Hands `host` a copy of unit `id` and returns its task and wire size.
    /// The copy is due one wall-clock limit of waiting plus one of running
    /// after now (`peergrid_proto::deadline`), and expires after the grace.
    fn issue(
        &mut self,
        id: UnitId,
        host: HostId,
        single: bool,
        now_ms: u64,
    ) -> Option<(Task, usize)> {
        let unit = self.units.get_mut(&id)?;
        let s = &unit.job.settings;
        let deadline_ms = deadline::copy_deadline_ms(now_ms, TaskLimits::for_job(s).wall_ms);
        let expiry_ms = deadline_ms.saturating_add(s.grace_secs * 1000);
        let canonical_nan = needs_canonical_nan(&unit.copies);
        unit.copies.push(Copy {
            host,
            state: CopyState::InProgress {
                deadline_ms: expiry_ms,
            },
        });
        self.deadlines.insert((expiry_ms, id, host));
        *self.in_flight.entry(host).or_insert(0) += 1;
        self.ops.push(StoreOp::Assign {
            unit: id,
            host,
            sent_ms: now_ms,
            deadline_ms: expiry_ms,
            single,
        });
        Some((
            task_for(id, unit, deadline_ms, canonical_nan),
            wire_size(unit),
        ))
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
        let limit = unit.job.settings.fuel;
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
        while let Some(&(deadline_ms, unit_id, host)) = self.deadlines.first() {
            if deadline_ms > now_ms {
                break;
            }
            self.deadlines.pop_first();
            let Some(unit) = self.units.get_mut(&unit_id) else {
                continue;
            };
            if host == AUDIT_WAIT {
                // No established host took the audit in time (there may be
                // none it could go to): give it up.
                if unit.audit.as_ref().is_some_and(|a| a.auditor.is_none()) {
                    self.finish(unit_id);
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
                        self.evaluate(id, at_ms);
                    }
                    None => self.evaluate(id, at_ms),
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

    fn host_failed(&mut self, host: HostId) {
        self.standing_mut(host).failed();
        self.dirty.insert(host);
    }

    fn evaluate(&mut self, id: UnitId, now_ms: u64) {
        let Some(unit) = self.units.get_mut(&id) else {
            return;
        };
        if unit.audit.is_some() {
            self.evaluate_audit(id, now_ms);
            return;
        }
        if unit.single
            && unit.copies.iter().any(|c| {
                matches!(
                    c.state,
                    CopyState::Error(_) | CopyState::TimedOut | CopyState::Voided(_)
                )
            })
        {
            // The trusted host's single copy failed (or was thrown out with
            // its banned host): back to the quorum.
            unit.single = false;
        }
        let job = unit.job.clone();
        let judge = &mut self.judge;
        let mut agree = |a: &Hash, b: &Hash| !job.validator.is_bitwise() && judge.agree(&job, a, b);
        match decide(&unit.copies, &unit.rules(), &mut agree) {
            Verdict::Validated {
                output,
                fuel,
                hosts,
            } => {
                let replicated = hosts.len() >= 2;
                // A single copy checked by no one: its credit waits.
                let pending_credit = unit.single && !replicated;
                let cross_engine = needs_canonical_nan(&unit.copies);
                let policy = self.policy;
                let mut outputs = Vec::new();
                let mut checked = Vec::new();
                for c in &unit.copies {
                    if let CopyState::Success { output, .. } = &c.state {
                        outputs.push(*output);
                        let s = self
                            .hosts
                            .entry(c.host)
                            .or_insert_with(|| Standing::anonymous(&policy));
                        if hosts.contains(&c.host) {
                            s.valid(replicated, &policy);
                            if pending_credit {
                                s.pending_credit = true;
                            } else if replicated && (s.pending_credit || !s.loaded) {
                                // A spot check passed (of a host whose
                                // waiting credit the scheduler may not know
                                // of, too: granting finds nothing or some).
                                s.pending_credit = false;
                                checked.push(c.host);
                            }
                        } else {
                            s.failed();
                            // Its result is invalid against a quorum: what
                            // else it helped validate is suspect. Only under
                            // a bitwise validator is that proof of a wrong
                            // result; a tolerance or a researcher's
                            // comparison may part honest hosts.
                            // Nor when replicas on different engines
                            // disagreed: that is an honest host of another
                            // architecture until canonical NaNs settle it.
                            if job.validator.is_bitwise() && !cross_engine {
                                self.caught.entry(c.host).or_insert_with(|| {
                                    (format!("its result for unit {id} was invalid"), now_ms)
                                });
                            }
                        }
                        self.dirty.insert(c.host);
                    }
                }
                self.judge.forget(&outputs);
                // Decided: its outputs no longer count against their hosts.
                let freed = std::mem::take(&mut unit.stored);
                release_stored(&mut self.stored, freed);
                self.ops.push(StoreOp::Validate {
                    unit: id,
                    output,
                    fuel,
                    hosts: hosts.clone(),
                    at_ms: now_ms,
                    pending_credit,
                });
                self.ops.extend(
                    checked
                        .into_iter()
                        .map(|host| StoreOp::GrantCredit { host }),
                );
                let audit = u64::from(policy.audit_ppm) > self.rng.next_u64() % 1_000_000;
                match audit {
                    true => {
                        // Kept for one more copy on an established host.
                        self.auditing.insert(id);
                        unit.audit = Some(Audit {
                            output,
                            hosts,
                            auditor: None,
                            attempts: 0,
                        });
                        self.evaluate_audit(id, now_ms);
                    }
                    false => self.finish(id),
                }
            }
            Verdict::Failed(reason) => {
                self.ops.push(StoreOp::Fail {
                    unit: id,
                    reason,
                    at_ms: now_ms,
                });
                self.finish(id);
            }
            Verdict::NeedCopies(_) => {
                if !unit.queued {
                    unit.queued = true;
                    // Reissues (a tie-breaker, a replacement for an error
                    // or a timeout) go first: a unit already under way
                    // should not wait behind every fresh unit, and a
                    // disagreement's verdict (an invalid result, a reset
                    // trust streak) must not lag behind the agreements.
                    if unit.copies.is_empty() {
                        self.queue.push_back(id);
                    } else {
                        self.queue.push_front(id);
                    }
                }
            }
            Verdict::Wait => {}
        }
    }

    /// A validated unit under audit: wait for the auditor's copy, ask for
    /// one, or judge it. Agreement ends the audit; disagreement disputes
    /// the row, and the unit goes back to the quorum with one more
    /// agreeing result needed, which catches whichever side lied.
    fn evaluate_audit(&mut self, id: UnitId, now_ms: u64) {
        let Some(unit) = self.units.get_mut(&id) else {
            return;
        };
        let Some(audit) = unit.audit.as_mut() else {
            return;
        };
        let state = audit
            .auditor
            .and_then(|a| unit.copies.iter().find(|c| c.host == a))
            .map(|c| c.state.clone());
        let s = &unit.job.settings;
        let give_up_ms = now_ms + (2 * s.deadline_secs + s.grace_secs) * 1000;
        match state {
            None => {
                if !unit.queued {
                    unit.queued = true;
                    self.queue.push_back(id);
                }
                self.deadlines.insert((give_up_ms, id, AUDIT_WAIT));
            }
            Some(CopyState::InProgress { .. }) => {}
            Some(CopyState::Success { output, .. }) => {
                let job = unit.job.clone();
                let agrees = output == audit.output
                    || (!job.validator.is_bitwise()
                        && self.judge.agree(&job, &output, &audit.output));
                let auditor = audit.auditor.unwrap_or_default();
                if agrees {
                    let policy = self.policy;
                    let validated_by = audit.hosts.clone();
                    self.standing_mut(auditor).valid(true, &policy);
                    self.dirty.insert(auditor);
                    // The audit checked the row's hosts, and the auditor's
                    // result agreed with another host's: both are checks.
                    for host in std::iter::once(auditor).chain(validated_by) {
                        let s = self.standing_mut(host);
                        if s.pending_credit {
                            s.pending_credit = false;
                            self.ops.push(StoreOp::GrantCredit { host });
                        }
                    }
                    self.finish(id);
                } else {
                    unit.audit = None;
                    unit.disputed = true;
                    self.auditing.remove(&id);
                    self.ops.push(StoreOp::Dispute {
                        unit: id,
                        at_ms: now_ms,
                    });
                    self.evaluate(id, now_ms);
                }
            }
            Some(_) => {
                audit.attempts += 1;
                audit.auditor = None;
                if audit.attempts >= AUDIT_ATTEMPTS {
                    self.finish(id);
                } else {
                    if !unit.queued {
                        unit.queued = true;
                        self.queue.push_back(id);
                    }
                    self.deadlines.insert((give_up_ms, id, AUDIT_WAIT));
                }
            }
        }
    }

    /// Drops a finished unit from the window; copies still out are
    /// forgotten, and their late reports are refused.
    fn finish(&mut self, id: UnitId) {
        self.auditing.remove(&id);
        if let Some(unit) = self.units.remove(&id) {
            release_stored(&mut self.stored, unit.stored);
            for c in unit.copies {
                if let CopyState::InProgress { deadline_ms } = c.state {
                    self.deadlines.remove(&(deadline_ms, id, c.host));
                    release(&mut self.in_flight, c.host);
                }
            }
        }
    }
}

/// Takes a decided unit's stored outputs off their hosts' totals.
fn release_stored(totals: &mut HashMap<HostId, u64>, freed: Vec<(HostId, u64)>) {
    for (host, bytes) in freed {
        if let Some(total) = totals.get_mut(&host) {
            *total = total.saturating_sub(bytes);
            if *total == 0 {
                totals.remove(&host);
            }
        }
    }
}

/// About how many bytes a task of `unit` takes on the wire: its input,
/// its arguments and room for the signature and fixed fields.
fn wire_size(unit: &UnitState) -> usize {
    unit.input.len() + unit.job.args.iter().map(|a| a.len() + 8).sum::<usize>() + 1024
}

fn task_for(id: UnitId, unit: &UnitState, deadline_ms: u64, canonical_nan: bool) -> Task {
    let s = &unit.job.settings;
    Task {
        unit: id,
        job: unit.job.id,
        module: unit.job.module,
        input: unit.input.to_vec(),
        args: unit.job.args.clone(),
        limits: TaskLimits::for_job(s),
        deadline_ms,
        signature: unit.job.signature.clone(),
        canonical_nan,
    }
}

#[cfg(test)]
mod tests;
