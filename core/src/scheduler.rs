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
use peergrid_proto::spec::JobSettings;
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
        let deadline_ms = deadline::copy_deadline_ms(now_ms, wall_ms(s));
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

/// The wall-clock limit a task of a job with `settings` runs with.
fn wall_ms(settings: &JobSettings) -> u64 {
    settings.deadline_secs.saturating_mul(1000)
}

fn task_for(id: UnitId, unit: &UnitState, deadline_ms: u64, canonical_nan: bool) -> Task {
    let s = &unit.job.settings;
    Task {
        unit: id,
        job: unit.job.id,
        module: unit.job.module,
        input: unit.input.to_vec(),
        args: unit.job.args.clone(),
        limits: TaskLimits {
            memory_bytes: s.memory_mb * 1024 * 1024,
            fuel: s.fuel,
            max_output_bytes: MAX_OUTPUT as u64,
            wall_ms: wall_ms(s),
        },
        deadline_ms,
        signature: unit.job.signature.clone(),
        canonical_nan,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::trust::Standing;
    use peergrid_proto::Hash;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn job(settings: JobSettings) -> JobInfo {
        JobInfo {
            id: 1,
            name: "t".into(),
            module: Hash([1; 32]),
            args: vec![],
            settings,
            validator: Default::default(),
            signature: peergrid_proto::signing::ModuleSignature {
                endorsement: peergrid_proto::signing::Endorsement {
                    researcher_key: String::new(),
                    name: "t".into(),
                    project_signature: String::new(),
                },
                signature: String::new(),
            },
        }
    }

    /// A scheduler whose trusted hosts are established at once (their age
    /// is not what most tests are about).
    fn with_units(n: u64, settings: JobSettings) -> Scheduler {
        let policy = HostPolicy {
            established_age_ms: 0,
            ..HostPolicy::default()
        };
        with_units_in(
            Scheduler::with(policy, Box::new(BitwiseOnly), 0x5eed),
            n,
            settings,
        )
    }

    /// Adds a job of `n` fresh units to `s`.
    fn with_units_in(mut s: Scheduler, n: u64, settings: JobSettings) -> Scheduler {
        s.add_job(job(settings));
        for id in 1..=n {
            s.load(
                LoadedUnit {
                    id,
                    job: 1,
                    input: vec![id as u8],
                    copies: vec![],
                    single: false,
                    disputed: false,
                },
                0,
            );
        }
        s
    }

    fn ok(out: u8) -> CopyState {
        on_engine(out, "x86_64")
    }

    fn on_engine(out: u8, engine: &str) -> CopyState {
        CopyState::Success {
            output: Hash([out; 32]),
            fuel: 5,
            engine: engine.into(),
            resumed: false,
        }
    }

    #[test]
    fn a_host_never_gets_two_copies_of_a_unit() {
        let mut s = with_units(3, JobSettings::default());
        let a = s.assign(10, 100, usize::MAX, 0);
        let mut got: Vec<_> = a.iter().map(|t| t.unit).collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3]);
        assert!(s.assign(10, 100, usize::MAX, 0).is_empty());
        let b = s.assign(11, 100, usize::MAX, 0);
        assert_eq!(b.len(), 3);
        assert!(
            s.assign(12, 100, usize::MAX, 0).is_empty(),
            "quorum copies are all out"
        );
    }

    #[test]
    fn outputs_are_compared_ahead_only_for_reports_the_scheduler_takes() {
        let mut s = Scheduler::new();
        let mut tolerant = job(JobSettings::default());
        tolerant.validator = peergrid_proto::spec::Validator::Tolerance {
            abs_epsilon: 0.5,
            rel_epsilon: 0.0,
        };
        s.add_job(tolerant);
        s.load(
            LoadedUnit {
                id: 1,
                job: 1,
                input: vec![1],
                copies: vec![],
                single: false,
                disputed: false,
            },
            0,
        );
        assert!(s.outputs_to_compare(1, 7).is_none(), "never sent to host 7");
        s.assign(1, 1, usize::MAX, 0);
        s.assign(2, 1, usize::MAX, 0);
        let (_, outputs) = s.outputs_to_compare(1, 1).unwrap();
        assert!(outputs.is_empty(), "nothing reported yet");
        s.report(1, 1, ok(3), 1, 5).unwrap();
        assert!(
            s.outputs_to_compare(1, 1).is_none(),
            "host 1 already reported"
        );
        let (job, outputs) = s.outputs_to_compare(1, 2).unwrap();
        assert_eq!((job.id, outputs), (1, vec![Hash([3; 32])]));
        s.set_bans(&HashSet::from([2]), &HashSet::new(), 6);
        assert!(s.outputs_to_compare(1, 2).is_none(), "host 2 is banned");

        let mut bitwise = with_units(1, JobSettings::default());
        bitwise.assign(1, 1, usize::MAX, 0);
        assert!(
            bitwise.outputs_to_compare(1, 1).is_none(),
            "bitwise needs no judge"
        );
    }

    fn on_network(s: &mut Scheduler, host: HostId, addr: &str, cores: u32) {
        let policy = *s.policy();
        let mut standing = Standing::new(String::new(), cores, &policy);
        standing.addr = Some(addr.parse().unwrap());
        s.host_joined(host, standing);
    }

    fn units_of(tasks: &[Task]) -> HashSet<UnitId> {
        tasks.iter().map(|t| t.unit).collect()
    }

    #[test]
    fn two_identities_on_one_network_never_share_a_unit() {
        let mut s = with_units(20, JobSettings::default());
        on_network(&mut s, 1, "198.51.100.7", 1);
        on_network(&mut s, 2, "198.51.100.8", 1);
        on_network(&mut s, 3, "203.0.113.9", 4);
        let mut first = HashSet::new();
        let mut second = HashSet::new();
        for _ in 0..5 {
            first.extend(units_of(&s.assign(1, 4, usize::MAX, 0)));
            second.extend(units_of(&s.assign(2, 4, usize::MAX, 0)));
            for u in first.clone() {
                s.report(1, u, ok(9), 1, 1).ok();
            }
            for u in second.clone() {
                s.report(2, u, ok(9), 1, 1).ok();
            }
        }
        assert!(!first.is_empty() && !second.is_empty());
        assert!(first.is_disjoint(&second), "{first:?} {second:?}");
        let ops = s.take_ops();
        assert!(
            !ops.iter().any(|o| matches!(o, StoreOp::Validate { .. })),
            "one network cannot validate its own output"
        );
        // A host on another network may take copies of them.
        let third = units_of(&s.assign(3, 16, usize::MAX, 2));
        assert!(!third.is_disjoint(&first), "{first:?} {third:?}");
    }

    #[test]
    fn a_job_says_why_its_units_wait_until_a_copy_goes_out() {
        let mut s = with_units(1, JobSettings::default());
        on_network(&mut s, 1, "198.51.100.7", 1);
        on_network(&mut s, 2, "198.51.100.8", 1);
        on_network(&mut s, 3, "203.0.113.9", 1);
        assert_eq!(s.assign(1, 1, usize::MAX, 0).len(), 1);
        assert_eq!(s.waiting(1), None);
        assert!(s.assign(2, 1, usize::MAX, 1).is_empty());
        assert_eq!(s.waiting(1), Some(Waiting::OtherNetwork));
        assert_eq!(s.assign(3, 1, usize::MAX, 2).len(), 1);
        assert_eq!(s.waiting(1), None, "a copy went out");
    }

    #[test]
    fn copies_a_host_never_got_are_reissued_at_its_next_exchange() {
        let mut s = with_units(2, JobSettings::default());
        on_network(&mut s, 1, "198.51.100.7", 1);
        on_network(&mut s, 2, "203.0.113.9", 1);
        let t = s.assign(1, 2, usize::MAX, 0);
        assert_eq!(t.len(), 2);
        s.take_ops();
        // The reply was cut after the first task: the host holds only it.
        let held: HashSet<UnitId> = [t[0].unit].into();
        assert_eq!(s.reconcile(1, &held, 5), 1);
        assert_eq!(s.in_flight(1), 1);
        let ops = s.take_ops();
        assert!(
            ops.iter()
                .any(|o| matches!(o, StoreOp::Void { unit, host: 1, .. } if *unit == t[1].unit)),
            "{ops:?}"
        );
        assert!(!ops.iter().any(|o| matches!(o, StoreOp::TimedOut { .. })));
        // Another host takes the lost copy's unit at once, not after the
        // deadline; telling all it holds voids nothing more.
        assert!(units_of(&s.assign(2, 2, usize::MAX, 6)).contains(&t[1].unit));
        assert_eq!(s.reconcile(1, &held, 7), 0);
        assert_eq!(s.in_flight(1), 1);
    }

    #[test]
    fn back_to_back_requests_draw_different_units() {
        let mut s = with_units(500, JobSettings::default());
        on_network(&mut s, 1, "198.51.100.7", 4);
        on_network(&mut s, 2, "203.0.113.9", 4);
        let a = units_of(&s.assign(1, 16, usize::MAX, 0));
        let b = units_of(&s.assign(2, 16, usize::MAX, 0));
        assert_eq!((a.len(), b.len()), (16, 16));
        // In queue order (the code before draws), b would equal a.
        assert!(a.intersection(&b).count() < 8, "{a:?} {b:?}");
    }

    #[test]
    fn a_quorum_of_young_hosts_is_completed_by_an_established_one() {
        let mut s = with_units(4, JobSettings::default());
        let day = 86_400_000;
        on_network(&mut s, 1, "198.51.100.7", 1);
        on_network(&mut s, 2, "203.0.113.9", 1);
        let mut old = Standing::new(String::new(), 1, s.policy());
        old.addr = Some("192.0.2.1".parse().unwrap());
        old.consecutive_valid = 50;
        s.host_joined(3, old);
        let now = day + 1;
        // The established host took work a moment ago (asking alone would
        // not count: anyone can ask).
        assert!(s.assign(3, 0, usize::MAX, now).is_empty());
        assert_eq!(
            s.assign(2, 4, usize::MAX, now).len(),
            4,
            "no established host about yet"
        );
        let mut s = with_units(5, JobSettings::default());
        on_network(&mut s, 1, "198.51.100.7", 1);
        on_network(&mut s, 2, "203.0.113.9", 1);
        let mut old = Standing::new(String::new(), 1, s.policy());
        old.addr = Some("192.0.2.1".parse().unwrap());
        old.consecutive_valid = 50;
        s.host_joined(3, old);
        let first = units_of(&s.assign(3, 1, usize::MAX, now));
        let young = units_of(&s.assign(1, 4, usize::MAX, now));
        assert_eq!(young.len(), 4);
        // Units whose only copy is host 1's: a second young host may not
        // complete their quorum (it may take a fresh unit's first copy).
        let young_only: HashSet<UnitId> = young.difference(&first).copied().collect();
        assert!(!young_only.is_empty());
        let second = units_of(&s.assign(2, 4, usize::MAX, now));
        assert!(
            second.is_disjoint(&young_only),
            "a second young host may not complete the first one's quorum: {second:?} {young_only:?}"
        );
        let completed = units_of(&s.assign(3, 8, usize::MAX, now));
        assert!(
            young_only.is_subset(&completed),
            "{young_only:?} {completed:?}"
        );
        // With no established host about for a while, young hosts may
        // complete each other's quorums (a new grid has none).
        let mut fresh = with_units(4, JobSettings::default());
        on_network(&mut fresh, 1, "198.51.100.7", 1);
        on_network(&mut fresh, 2, "203.0.113.9", 1);
        fresh.assign(1, 4, usize::MAX, 0);
        assert_eq!(fresh.assign(2, 4, usize::MAX, 0).len(), 4);
    }

    #[test]
    fn a_host_claiming_every_core_holds_only_a_young_hosts_share() {
        let mut s = with_units(122, JobSettings::default());
        on_network(&mut s, 1, "198.51.100.7", u32::MAX);
        let policy = *s.policy();
        let cap = policy.young_cores * policy.in_flight_per_core;
        let got = s.assign(1, 256, usize::MAX, 0);
        assert_eq!(got.len() as u32, cap);
        assert_eq!(s.in_flight(1), cap);
        assert!(s.assign(1, 256, usize::MAX, 0).is_empty(), "cap reached");
        s.report(1, got[0].unit, ok(1), 1, 1).unwrap();
        assert_eq!(
            s.assign(1, 256, usize::MAX, 1).len(),
            1,
            "one reported, one more"
        );
        on_network(&mut s, 2, "203.0.113.9", 2);
        assert_eq!(
            s.assign(2, 256, usize::MAX, 1).len(),
            8,
            "others still get work"
        );
    }

    #[test]
    fn a_copy_given_back_is_reissued_without_charging_the_host() {
        let mut s = with_units(1, JobSettings::default());
        s.assign(1, 1, usize::MAX, 0);
        let quota = s.standing(1).unwrap().quota;
        s.give_back(1, 1, 5).unwrap();
        assert_eq!(s.in_flight(1), 0);
        assert_eq!(s.standing(1).unwrap().quota, quota, "not charged");
        assert_eq!(s.give_back(1, 1, 6), Err(ReportError::AlreadyReported(1)));
        assert!(
            s.assign(1, 1, usize::MAX, 7).is_empty(),
            "not back to the same host"
        );
        assert_eq!(s.assign(2, 1, usize::MAX, 7).len(), 1);
        assert_eq!(
            s.assign(3, 1, usize::MAX, 7).len(),
            1,
            "the quorum still needs two"
        );
        s.expire(u64::MAX);
        assert_eq!(
            s.standing(1).unwrap().quota,
            quota,
            "a voided copy never times out"
        );
    }

    #[test]
    fn a_host_outvoted_by_a_quorum_is_caught_for_repair() {
        let mut s = with_units(1, JobSettings::default());
        for h in 1..=3 {
            on_network(&mut s, h, &format!("10.0.{h}.1"), 1);
        }
        s.assign(1, 1, usize::MAX, 0);
        s.assign(2, 1, usize::MAX, 0);
        s.report(1, 1, ok(1), 1, 1).unwrap();
        s.report(2, 1, ok(2), 1, 1).unwrap();
        s.assign(3, 1, usize::MAX, 2);
        s.report(3, 1, ok(1), 1, 3).unwrap();
        let ops = s.take_ops();
        let repairs: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                StoreOp::Repair { host, at_ms, .. } => Some((*host, *at_ms)),
                _ => None,
            })
            .collect();
        assert_eq!(repairs, vec![(2, 3)], "{ops:?}");
        // A ban catches too.
        s.set_bans(&HashSet::from([3]), &HashSet::new(), 9);
        assert!(
            s.take_ops()
                .iter()
                .any(|o| matches!(o, StoreOp::Repair { host: 3, .. }))
        );
    }

    /// Hosts 1 and 2 (colluders on two networks) validate a wrong output;
    /// the audit sends one more copy to established host 3, whose output
    /// disagrees: the row is disputed, two more honest results decide it,
    /// and both colluders are caught.
    #[test]
    fn an_audit_that_disagrees_disputes_the_row_and_catches_the_liars() {
        let policy = HostPolicy {
            established_age_ms: 0,
            audit_ppm: 1_000_000,
            ..HostPolicy::default()
        };
        let mut s = with_units_in(
            Scheduler::with(policy, Box::new(BitwiseOnly), 7),
            1,
            JobSettings::default(),
        );
        for h in 1..=5 {
            on_network(&mut s, h, &format!("10.0.{h}.1"), 1);
        }
        for h in 3..=5 {
            let mut old = s.standing(h).unwrap().clone();
            old.consecutive_valid = 50;
            s.host_joined(h, old);
        }
        s.assign(1, 1, usize::MAX, 0);
        s.assign(2, 1, usize::MAX, 0);
        s.report(1, 1, ok(66), 1, 1).unwrap();
        s.report(2, 1, ok(66), 1, 1).unwrap();
        let ops = s.take_ops();
        assert!(ops.iter().any(|o| matches!(o, StoreOp::Validate { .. })));
        assert_eq!(s.active_units(), 1, "kept for its audit");
        assert!(
            s.assign(2, 1, usize::MAX, 2).is_empty(),
            "not on a young host"
        );
        assert_eq!(s.assign(3, 1, usize::MAX, 2).len(), 1, "the auditor");
        assert!(
            s.assign(4, 1, usize::MAX, 2).is_empty(),
            "one audit copy at a time"
        );
        s.report(3, 1, ok(1), 1, 3).unwrap();
        let ops = s.take_ops();
        assert!(
            ops.iter()
                .any(|o| matches!(o, StoreOp::Dispute { unit: 1, .. })),
            "{ops:?}"
        );
        // One more agreeing result than the quorum: three against two.
        assert_eq!(s.assign(4, 1, usize::MAX, 4).len(), 1);
        s.report(4, 1, ok(1), 1, 5).unwrap();
        assert_eq!(s.assign(5, 1, usize::MAX, 6).len(), 1);
        s.report(5, 1, ok(1), 1, 7).unwrap();
        let ops = s.take_ops();
        let validated: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                StoreOp::Validate { output, hosts, .. } => Some((*output, hosts.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(validated, vec![(Hash([1; 32]), vec![3, 4, 5])]);
        let mut caught: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                StoreOp::Repair { host, .. } => Some(*host),
                _ => None,
            })
            .collect();
        caught.sort_unstable();
        assert_eq!(caught, vec![1, 2]);
    }

    #[test]
    fn fuel_above_the_tasks_limit_is_refused_and_never_credited() {
        let settings = JobSettings {
            fuel: 1000,
            ..JobSettings::default()
        };
        let mut s = with_units(1, settings);
        s.assign(1, 1, usize::MAX, 0);
        s.assign(2, 1, usize::MAX, 0);
        let inflated = CopyState::Success {
            output: Hash([7; 32]),
            fuel: 4_000_000_000_000_000_000,
            engine: "x86_64".into(),
            resumed: false,
        };
        assert!(matches!(
            s.report(1, 1, inflated.clone(), 1, 1),
            Err(ReportError::FuelAboveLimit {
                fuel: 4_000_000_000_000_000_000,
                limit: 1000,
                ..
            })
        ));
        assert_eq!(
            s.report(2, 1, inflated, 1, 1),
            Err(ReportError::FuelAboveLimit {
                unit: 1,
                fuel: 4_000_000_000_000_000_000,
                limit: 1000,
            })
        );
        let ops = s.take_ops();
        assert!(
            !ops.iter().any(|o| matches!(o, StoreOp::Validate { .. })),
            "{ops:?}"
        );
        assert_eq!(s.standing(1).unwrap().consecutive_valid, 0);
    }

    /// One unit of an adaptive job, sent to host 1, trusted far beyond the
    /// threshold, so it went out as a single copy.
    fn single_copy_to_a_trusted_host() -> (Scheduler, JobSettings) {
        let settings = JobSettings {
            adaptive_replication: true,
            ..JobSettings::default()
        };
        let mut s = with_units(1, settings);
        let mut trusted = Standing::anonymous(s.policy());
        trusted.consecutive_valid = 1_000_000;
        s.host_joined(1, trusted);
        assert_eq!(s.assign(1, 1, usize::MAX, 0).len(), 1);
        (s, settings)
    }

    #[test]
    fn a_single_copy_stays_single_after_a_restart() {
        let (mut s, settings) = single_copy_to_a_trusted_host();
        let ops = s.take_ops();
        assert!(
            ops.iter()
                .any(|o| matches!(o, StoreOp::Assign { single: true, .. })),
            "a trusted host's fresh unit goes out as a single copy: {ops:?}"
        );
        assert!(s.assign(2, 1, usize::MAX, 0).is_empty());

        // After a restart the store hands the unit back with its copy and
        // the flag: still no second copy, and the one result validates it.
        let reloaded = |single| {
            let mut s = Scheduler::new();
            s.add_job(job(settings));
            s.load(
                LoadedUnit {
                    id: 1,
                    job: 1,
                    input: vec![1],
                    copies: vec![Copy {
                        host: 1,
                        state: CopyState::InProgress {
                            deadline_ms: 1_000_000,
                        },
                    }],
                    single,
                    disputed: false,
                },
                10,
            );
            s
        };
        let mut s = reloaded(true);
        assert!(s.assign(2, 1, usize::MAX, 20).is_empty());
        s.report(1, 1, ok(4), 1, 30).unwrap();
        assert!(
            s.take_ops()
                .iter()
                .any(|o| matches!(o, StoreOp::Validate { hosts, .. } if hosts == &vec![1]))
        );
        // Without the flag the unit is held to its quorum.
        assert_eq!(reloaded(false).assign(2, 1, usize::MAX, 20).len(), 1);
    }

    /// A host's share of the disk holds what it stored for undecided units
    /// and the largest output of each copy it holds: past it, the host gets
    /// no fresh unit, only copies that decide units (which frees them).
    #[test]
    fn a_host_past_its_storage_cap_gets_only_copies_that_decide_units() {
        const M: u64 = MAX_OUTPUT as u64;
        let policy = HostPolicy {
            established_age_ms: 0,
            audit_ppm: 0,
            max_stored_bytes: 3 * M,
            ..HostPolicy::default()
        };
        let mut s = with_units_in(
            Scheduler::with(policy, Box::new(BitwiseOnly), 1),
            8,
            JobSettings::default(),
        );
        s.host_joined(2, Standing::new(String::new(), 4, &policy));
        let first = s.assign(1, 16, usize::MAX, 0);
        assert_eq!(first.len(), 3, "room for three outputs of the largest size");
        assert!(s.assign(1, 16, usize::MAX, 5).is_empty());
        for t in &first {
            s.report(1, t.unit, ok(4), 1, 10).unwrap();
            s.stored(1, t.unit, M);
        }
        assert!(
            s.assign(1, 16, usize::MAX, 20).is_empty(),
            "its outputs fill its share"
        );
        // Another host takes three fresh units and host 1's second copies,
        // and reports the fresh ones first.
        let second = s.assign(2, 16, usize::MAX, 30);
        assert_eq!(second.len(), 6, "{second:?}");
        let (seconds, fresh): (Vec<UnitId>, Vec<UnitId>) = second
            .iter()
            .map(|t| t.unit)
            .partition(|u| first.iter().any(|f| f.unit == *u));
        for u in &fresh {
            s.report(2, *u, ok(4), 1, 40).unwrap();
        }
        // Host 1, still at its cap: the copies that decide host 2's units,
        // none of the two units nobody has run.
        let third: Vec<UnitId> = s
            .assign(1, 16, usize::MAX, 50)
            .iter()
            .map(|t| t.unit)
            .collect();
        let mut sorted = third.clone();
        sorted.sort_unstable();
        let mut want = fresh.clone();
        want.sort_unstable();
        assert_eq!(sorted, want, "only copies that decide units");
        // Host 2's copies decide host 1's first units: their bytes are freed
        // and host 1 may take a fresh unit again.
        for u in &seconds {
            s.report(2, *u, ok(4), 1, 60).unwrap();
        }
        for u in &third {
            s.report(1, *u, ok(4), 1, 60).unwrap();
        }
        let validated = s
            .take_ops()
            .iter()
            .filter(|o| matches!(o, StoreOp::Validate { .. }))
            .count();
        assert_eq!(validated, 6);
        assert_eq!(
            s.assign(1, 16, usize::MAX, 70).len(),
            2,
            "the last two units"
        );
    }

    /// Credit for a copy no other host checked waits for the host's next
    /// spot check (a replicated result that agrees) or an audit.
    #[test]
    fn a_single_copys_credit_waits_for_a_check_of_its_host() {
        let (mut s, _) = single_copy_to_a_trusted_host();
        s.report(1, 1, ok(4), 1, 10).unwrap();
        let ops = s.take_ops();
        assert!(
            ops.iter().any(|o| matches!(o,
                StoreOp::Validate { hosts, pending_credit: true, .. } if hosts == &vec![1])),
            "{ops:?}"
        );
        assert!(!ops.iter().any(|o| matches!(o, StoreOp::GrantCredit { .. })));
        assert!(s.standing(1).is_some_and(|h| h.pending_credit));

        // A unit host 2 already ran: host 1's copy is a spot check.
        s.load(
            LoadedUnit {
                id: 2,
                job: 1,
                input: vec![2],
                copies: vec![Copy {
                    host: 2,
                    state: ok(7),
                }],
                single: false,
                disputed: false,
            },
            20,
        );
        assert_eq!(s.assign(1, 1, usize::MAX, 30).len(), 1);
        s.report(1, 2, ok(8), 1, 40).unwrap();
        let ops = s.take_ops();
        assert!(
            !ops.iter().any(|o| matches!(o, StoreOp::GrantCredit { .. })),
            "a disagreement is no check passed: {ops:?}"
        );
        assert!(s.standing(1).is_some_and(|h| h.pending_credit));
        let s3 = s.assign(3, 1, usize::MAX, 50);
        assert_eq!(s3.len(), 1, "a tie-breaker");
        s.report(3, 2, ok(8), 1, 60).unwrap();
        let ops = s.take_ops();
        let validate = ops.iter().position(|o| {
            matches!(
                o,
                StoreOp::Validate {
                    unit: 2,
                    pending_credit: false,
                    ..
                }
            )
        });
        let grant = ops
            .iter()
            .position(|o| matches!(o, StoreOp::GrantCredit { host: 1 }));
        assert!(
            validate.is_some() && grant.is_some(),
            "host 1 agreed with host 3: {ops:?}"
        );
        assert!(s.standing(1).is_some_and(|h| !h.pending_credit));
    }

    /// An audit that agrees with a single copy's row checks its host.
    #[test]
    fn an_audit_that_agrees_grants_a_single_copys_credit() {
        let settings = JobSettings {
            adaptive_replication: true,
            ..JobSettings::default()
        };
        let policy = HostPolicy {
            established_age_ms: 0,
            audit_ppm: 1_000_000,
            ..HostPolicy::default()
        };
        let mut s = with_units_in(
            Scheduler::with(policy, Box::new(BitwiseOnly), 7),
            1,
            settings,
        );
        for host in [1, 2] {
            let mut trusted = Standing::anonymous(s.policy());
            trusted.consecutive_valid = 1_000_000;
            s.host_joined(host, trusted);
        }
        assert_eq!(s.assign(1, 1, usize::MAX, 0).len(), 1);
        s.report(1, 1, ok(4), 1, 10).unwrap();
        let ops = s.take_ops();
        assert!(
            ops.iter().any(|o| matches!(
                o,
                StoreOp::Validate {
                    pending_credit: true,
                    ..
                }
            )),
            "{ops:?}"
        );
        assert_eq!(s.assign(2, 1, usize::MAX, 20).len(), 1, "the audit copy");
        s.report(2, 1, ok(4), 1, 30).unwrap();
        let ops = s.take_ops();
        assert!(
            ops.iter()
                .any(|o| matches!(o, StoreOp::GrantCredit { host: 1 })),
            "{ops:?}"
        );
    }

    #[test]
    fn a_single_copy_thrown_out_with_its_banned_host_puts_the_unit_back_to_quorum() {
        let (mut s, _) = single_copy_to_a_trusted_host();
        s.set_bans(&HashSet::from([1]), &HashSet::new(), 5);
        assert_eq!(s.assign(2, 1, usize::MAX, 10).len(), 1);
        s.report(2, 1, ok(4), 1, 20).unwrap();
        assert!(
            !s.take_ops()
                .iter()
                .any(|o| matches!(o, StoreOp::Validate { .. })),
            "one untrusted result must not validate"
        );
        // Once the banned host's last request is 10 minutes old, young
        // hosts may complete each other's quorum.
        let later = s.policy().established_idle_ms + 31;
        assert_eq!(s.assign(3, 1, usize::MAX, later).len(), 1, "a second copy");
    }

    #[test]
    fn a_reply_stays_within_its_byte_budget() {
        let mut s = with_units(5, JobSettings::default());
        // Each task is 1025 bytes on the wire: a budget of three takes three.
        assert_eq!(s.assign(1, 100, 3 * 1025, 0).len(), 3);
        // A budget smaller than one input still sends one task.
        assert_eq!(s.assign(2, 100, 0, 0).len(), 1);
    }

    #[test]
    fn agreement_validates_once_and_late_reports_are_refused() {
        let mut s = with_units(1, JobSettings::default());
        s.assign(1, 1, usize::MAX, 0);
        s.assign(2, 1, usize::MAX, 0);
        s.report(1, 1, ok(3), 1, 5).unwrap();
        s.report(2, 1, ok(3), 1, 6).unwrap();
        let ops = s.take_ops();
        assert!(
            ops.iter()
                .any(|o| matches!(o, StoreOp::Validate { hosts, .. } if hosts == &vec![1, 2]))
        );
        assert_eq!(
            s.report(2, 1, ok(3), 1, 7),
            Err(ReportError::UnknownUnit(1))
        );
        assert_eq!(s.active_units(), 0);
    }

    #[test]
    fn timeouts_reissue_to_another_host_and_late_reports_still_count() {
        let settings = JobSettings {
            deadline_secs: 10,
            ..JobSettings::default()
        };
        let mut s = with_units(1, settings);
        s.assign(1, 1, usize::MAX, 0);
        s.assign(2, 1, usize::MAX, 0);
        s.report(1, 1, ok(9), 1, 1_000).unwrap();
        assert!(s.assign(3, 1, usize::MAX, 5_000).is_empty());
        // Due after two runs of 10 s and two margins.
        let due = deadline::copy_deadline_ms(0, 10_000);
        s.expire(due - 1);
        assert!(s.assign(3, 1, usize::MAX, due - 1).is_empty());
        s.expire(due + 1);
        assert!(
            s.take_ops()
                .iter()
                .any(|o| matches!(o, StoreOp::TimedOut { host: 2, .. }))
        );
        assert_eq!(s.assign(3, 1, usize::MAX, due + 2).len(), 1);
        // The timed-out host reports late and completes the quorum.
        s.report(2, 1, ok(9), 1, due + 3).unwrap();
        assert_eq!(s.active_units(), 0);
    }

    #[test]
    fn cross_architecture_disagreement_reruns_with_canonical_nans() {
        let mut s = with_units(1, JobSettings::default());
        assert!(!s.assign(1, 1, usize::MAX, 0)[0].canonical_nan);
        s.assign(2, 1, usize::MAX, 0);
        s.report(1, 1, on_engine(1, "fast/x86_64"), 1, 1).unwrap();
        s.report(2, 1, on_engine(2, "fast/aarch64"), 1, 1).unwrap();
        let t = s.assign(3, 1, usize::MAX, 2);
        assert!(
            t[0].canonical_nan,
            "the tie-breaker runs with canonical NaNs"
        );
        s.report(3, 1, on_engine(3, "canonical"), 1, 3).unwrap();
        let t = s.assign(4, 1, usize::MAX, 4);
        assert!(t[0].canonical_nan);
        s.report(4, 1, on_engine(3, "canonical"), 1, 5).unwrap();
        assert!(
            s.take_ops()
                .iter()
                .any(|o| matches!(o, StoreOp::Validate { hosts, .. } if hosts == &vec![3, 4]))
        );
    }

    #[test]
    fn a_stranger_cannot_report_a_unit_it_was_not_given() {
        let mut s = with_units(1, JobSettings::default());
        s.assign(1, 1, usize::MAX, 0);
        assert_eq!(
            s.report(2, 1, ok(1), 1, 1),
            Err(ReportError::NotAssigned(1))
        );
        s.report(1, 1, ok(1), 1, 1).unwrap();
        assert_eq!(
            s.report(1, 1, ok(1), 1, 1),
            Err(ReportError::AlreadyReported(1))
        );
    }

    #[test]
    fn distinct_volunteers_keep_a_volunteers_hosts_off_one_unit() {
        let settings = JobSettings {
            distinct_volunteers: true,
            ..JobSettings::default()
        };
        let mut s = with_units(1, settings);
        let policy = *s.policy();
        for (host, account) in [(1, "ann"), (2, "ann"), (3, "")] {
            s.host_joined(host, Standing::new(account.into(), 1, &policy));
        }
        assert_eq!(s.assign(1, 1, usize::MAX, 0).len(), 1);
        assert!(s.assign(2, 1, usize::MAX, 0).is_empty(), "same volunteer");
        assert_eq!(
            s.assign(3, 1, usize::MAX, 0).len(),
            1,
            "anonymous is its own volunteer"
        );
    }

    #[test]
    fn failures_shrink_a_hosts_daily_quota_and_successes_restore_it() {
        let policy = HostPolicy {
            per_core_per_day: 8,
            in_flight_per_core: 100,
            ..HostPolicy::default()
        };
        let mut s = with_units_in(
            Scheduler::with(policy, Box::new(BitwiseOnly), 1),
            40,
            JobSettings::default(),
        );
        let got = s.assign(7, 100, usize::MAX, 0);
        assert_eq!(got.len(), 8, "the full quota");
        for t in &got[..3] {
            s.report(7, t.unit, CopyState::Error("crash".into()), 1, 1)
                .unwrap();
        }
        assert_eq!(s.standing(7).unwrap().quota, 1);
        assert!(
            s.assign(7, 100, usize::MAX, 2).is_empty(),
            "today's tasks are used up"
        );
        let tomorrow = 86_400_000;
        assert_eq!(s.assign(7, 100, usize::MAX, tomorrow).len(), 1);
        assert!(s.take_ops().iter().any(|o| matches!(
            o,
            StoreOp::Standing {
                host: 7,
                quota: 1,
                ..
            }
        )));
    }

    #[test]
    fn a_ban_voids_the_hosts_pending_results_and_stops_its_work() {
        let mut s = with_units(1, JobSettings::default());
        s.assign(1, 1, usize::MAX, 0);
        s.assign(2, 1, usize::MAX, 0);
        s.report(1, 1, ok(6), 1, 1).unwrap();
        s.set_bans(&HashSet::from([1]), &HashSet::new(), 2);
        assert!(s.take_ops().iter().any(|o| matches!(
            o,
            StoreOp::Void {
                unit: 1,
                host: 1,
                ..
            }
        )));
        assert!(s.assign(1, 1, usize::MAX, 3).is_empty());
        assert_eq!(s.report(1, 1, ok(6), 1, 3), Err(ReportError::Banned));
        // Host 1's result no longer counts: the unit needs another copy.
        assert_eq!(s.assign(3, 1, usize::MAX, 3).len(), 1);
        s.report(2, 1, ok(6), 1, 4).unwrap();
        s.report(3, 1, ok(6), 1, 5).unwrap();
        assert!(
            s.take_ops()
                .iter()
                .any(|o| matches!(o, StoreOp::Validate { hosts, .. } if hosts == &vec![2, 3]))
        );
        s.set_bans(&HashSet::new(), &HashSet::new(), 6);
        assert!(!s.standing(1).unwrap().banned, "unbanned");
    }

    #[test]
    fn a_copy_times_out_only_after_the_grace_period() {
        let settings = JobSettings {
            deadline_secs: 10,
            grace_secs: 5,
            ..JobSettings::default()
        };
        let mut s = with_units(1, settings);
        let t = s.assign(1, 1, usize::MAX, 0);
        let due = deadline::copy_deadline_ms(0, 10_000);
        assert_eq!(t[0].deadline_ms, due, "the host is told the deadline");
        assert_eq!(t[0].limits.wall_ms, 10_000);
        s.expire(due + 4_000);
        assert!(
            s.take_ops()
                .iter()
                .all(|o| !matches!(o, StoreOp::TimedOut { .. }))
        );
        s.expire(due + 5_000);
        assert!(
            s.take_ops()
                .iter()
                .any(|o| matches!(o, StoreOp::TimedOut { .. }))
        );
    }

    #[derive(Clone, Debug)]
    enum Action {
        Fetch { host: u64, want: u32 },
        Finish { host: u64, pick: usize },
        Tick { ms: u64 },
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            (0u64..6, 1u32..4).prop_map(|(host, want)| Action::Fetch { host, want }),
            (0u64..6, any::<usize>()).prop_map(|(host, pick)| Action::Finish { host, pick }),
            (1u64..20_000).prop_map(|ms| Action::Tick { ms }),
        ]
    }

    fn settings() -> impl Strategy<Value = JobSettings> {
        (
            2u32..=3,
            0u32..=2,
            1u32..=4,
            0u64..=5,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(quorum, extra, max_error, grace, distinct, adaptive)| {
                JobSettings {
                    quorum,
                    target_nresults: Some(quorum + extra),
                    max_error_results: max_error,
                    deadline_secs: 10,
                    grace_secs: grace,
                    distinct_volunteers: distinct,
                    adaptive_replication: adaptive,
                    ..JobSettings::default()
                }
            })
    }

    /// Volunteer accounts: hosts 0 and 2 belong to one volunteer.
    const ACCOUNTS: [&str; 6] = ["x", "y", "x", "p", "q", "r"];

    proptest! {
        /// Hosts 0 and 1 cheat (each with its own wrong answer), host 2 errs,
        /// the rest are honest, and 3 and 4 are trusted; tasks finish or
        /// time out in any order, under any redundancy settings. Whatever
        /// happens: no host (nor, when asked, volunteer) holds two copies
        /// of a unit; nothing enters the dataset without `quorum` distinct
        /// agreeing hosts, or one trusted host under adaptive replication;
        /// a wrong output never validates when cheaters do not collude;
        /// credit goes once to each agreeing host of a validated unit;
        /// copies never exceed the cap; and once the honest hosts drain
        /// the queue every unit is validated or failed with a reason,
        /// never lost.
        #[test]
        fn rules_hold_under_any_schedule(
            settings in settings(),
            actions in proptest::collection::vec(action(), 1..200),
        ) {
            let units = 8u64;
            // A generous quota: these are the redundancy rules under any
            // schedule; a young host's small quota has its own tests, and
            // here it would starve the honest hosts meant to drain the queue.
            let policy = HostPolicy {
                established_age_ms: 0,
                young_per_core_per_day: 1_000_000,
                ..HostPolicy::default()
            };
            let mut s = with_units_in(Scheduler::with(policy, Box::new(BitwiseOnly), 0x5eed), units, settings);
            let policy = *s.policy();
            for (host, account) in ACCOUNTS.iter().enumerate() {
                let mut standing = Standing::new(account.to_string(), 1, &policy);
                if host == 3 || host == 4 {
                    standing.consecutive_valid = 50;
                }
                s.host_joined(host as u64, standing);
            }
            let mut credit: HashMap<u64, u64> = HashMap::new();
            let mut now = 0u64;
            let mut held: HashMap<u64, Vec<UnitId>> = HashMap::new();
            let mut issued: HashMap<UnitId, Vec<u64>> = HashMap::new();
            let mut finished: HashMap<UnitId, StoreOp> = HashMap::new();
            let answer = |host: u64, unit: UnitId| match host {
                0 => ok(200),
                1 => ok(201),
                2 => CopyState::Error("trap".into()),
                _ => ok(unit as u8),
            };
            let mut drive = |s: &mut Scheduler, a: Action, now: &mut u64| {
                match a {
                    Action::Fetch { host, want } => {
                        for t in s.assign(host, want, usize::MAX, *now) {
                            held.entry(host).or_default().push(t.unit);
                            issued.entry(t.unit).or_default().push(host);
                        }
                    }
                    Action::Finish { host, pick } => {
                        let list = held.entry(host).or_default();
                        if !list.is_empty() {
                            let unit = list.remove(pick % list.len());
                            let _ = s.report(host, unit, answer(host, unit), 1, *now);
                        }
                    }
                    Action::Tick { ms } => {
                        *now += ms;
                        s.expire(*now);
                    }
                }
                for op in s.take_ops() {
                    match &op {
                        StoreOp::Validate { unit, hosts, fuel, .. } => {
                            for h in hosts {
                                *credit.entry(*h).or_default() += fuel;
                            }
                            prop_assert!(finished.insert(*unit, op.clone()).is_none(), "unit finished twice");
                        }
                        StoreOp::Fail { unit, .. } => {
                            prop_assert!(finished.insert(*unit, op.clone()).is_none(), "unit finished twice");
                        }
                        _ => {}
                    }
                }
                Ok(())
            };
            for a in actions {
                drive(&mut s, a, &mut now)?;
            }
            // Honest hosts 3, 4, 5 drain whatever is left.
            for _ in 0..100 {
                for host in 3..6 {
                    drive(&mut s, Action::Fetch { host, want: 8 }, &mut now)?;
                    // A host holds at most one copy of each of the 8 units.
                    for _ in 0..units {
                        drive(&mut s, Action::Finish { host, pick: 0 }, &mut now)?;
                    }
                }
                drive(&mut s, Action::Tick { ms: 11_000 }, &mut now)?;
            }
            for (unit, hosts) in &issued {
                let distinct: HashSet<_> = hosts.iter().collect();
                prop_assert_eq!(distinct.len(), hosts.len(), "two copies of unit {} on one host", unit);
                if settings.distinct_volunteers {
                    let volunteers: HashSet<_> = hosts.iter().map(|h| ACCOUNTS[*h as usize]).collect();
                    prop_assert_eq!(volunteers.len(), hosts.len(), "two copies of unit {} for one volunteer", unit);
                }
                prop_assert!(hosts.len() as u32 <= settings.max_total_results());
            }
            let mut expected: HashMap<u64, u64> = HashMap::new();
            prop_assert_eq!(s.active_units(), 0);
            for unit in 1..=units {
                match finished.get(&unit) {
                    Some(StoreOp::Validate { output, hosts, .. }) => {
                        prop_assert_eq!(*output, Hash([unit as u8; 32]), "wrong output validated");
                        let distinct: HashSet<_> = hosts.iter().collect();
                        prop_assert_eq!(distinct.len(), hosts.len());
                        let trusted_alone = settings.adaptive_replication
                            && (hosts == &vec![3] || hosts == &vec![4]);
                        prop_assert!(distinct.len() as u32 >= settings.quorum || trusted_alone);
                        prop_assert!(hosts.iter().all(|h| *h >= 3));
                        for h in hosts {
                            *expected.entry(*h).or_default() += 5;
                        }
                    }
                    Some(StoreOp::Fail { reason, .. }) => prop_assert!(!reason.is_empty()),
                    other => prop_assert!(false, "unit {} ended as {:?}", unit, other),
                }
            }
            prop_assert_eq!(credit, expected, "credit is the fuel of each valid result, once");
        }
    }
}
