//! Assignment: which queued units go to a host that asks for work, under
//! its quota, its in-flight cap, the network rules and the disk cap.

use peergrid_proto::deadline;
use peergrid_proto::limits::MAX_OUTPUT;
use peergrid_proto::wire::{Task, TaskLimits, UnitId};

use std::collections::{HashMap, VecDeque};

use super::{Scheduler, UnitInput, UnitState, Waiting};
use crate::model::{HostId, StoreOp};
use crate::netgroup;
use crate::quorum::{Copy, CopyState, Verdict, bitwise, decide, needs_canonical_nan};
use crate::trust::SplitMix64;

/// How many queued units one `assign` call may look at before giving up:
/// bounds the cost of a request from a host that already holds copies of
/// everything at the front of the queue.
pub(super) const MAX_SCAN: usize = 4096;
/// Each copy is drawn at random among this many units at the front of the
/// queue, so which units a request gets cannot be predicted from the
/// request before it: two identities of one party asking back to back do
/// not get the two copies of the same units.
const DRAW_WINDOW: usize = 64;

impl Scheduler {
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
        // Audits take at most half of the request: the host also gets
        // fresh work while a backlog of audits drains.
        let (mut tasks, mut bytes) = match established {
            true => self.assign_audits(host, addr, want.div_ceil(2), max_bytes, now_ms),
            false => (Vec::new(), 0),
        };
        let mut issued_jobs = Vec::new();
        let mut put_back = Vec::new();
        let mut scanned = 0;
        while tasks.len() < want as usize && scanned < MAX_SCAN {
            let first = tasks.is_empty();
            let drawn = draw(
                &mut self.queue,
                &mut self.rng,
                &self.units,
                first,
                bytes,
                max_bytes,
            );
            let Some(id) = drawn else {
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
            if self.comparing.contains_key(&id) {
                // Its verdict decides what it needs; it queues again then.
                continue;
            }
            if unit.audit.is_some() {
                // Audits wait in a queue of their own.
                unit.queued = true;
                self.audit_queue.push_back(id);
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
    pub(super) fn issue(
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
}

/// Takes a unit drawn at random among the first [`DRAW_WINDOW`] of
/// `queue`, or none when the queue is empty or, past the `first` task of
/// a reply, the drawn unit's task would take the reply's `bytes` past
/// `max_bytes` (it then stays queued).
pub(super) fn draw(
    queue: &mut VecDeque<UnitId>,
    rng: &mut SplitMix64,
    units: &HashMap<UnitId, UnitState>,
    first: bool,
    bytes: usize,
    max_bytes: usize,
) -> Option<UnitId> {
    if queue.is_empty() {
        return None;
    }
    let k = (rng.next_u64() % queue.len().min(DRAW_WINDOW) as u64) as usize;
    let too_big = |u: &UnitState| bytes + wire_size(u) > max_bytes;
    if !first && units.get(&queue[k]).is_some_and(too_big) {
        return None;
    }
    queue.remove(k)
}

/// About how many bytes a task of `unit` takes on the wire: its input,
/// its arguments and room for the signature and fixed fields.
fn wire_size(unit: &UnitState) -> usize {
    let input = match &unit.input {
        UnitInput::Inline(bytes) => bytes.len(),
        UnitInput::ByReference(_) => 48,
    };
    input + unit.job.args.iter().map(|a| a.len() + 8).sum::<usize>() + 1024
}

fn task_for(id: UnitId, unit: &UnitState, deadline_ms: u64, canonical_nan: bool) -> Task {
    let s = &unit.job.settings;
    Task {
        unit: id,
        job: unit.job.id,
        number: unit.number,
        module: unit.job.module,
        input: match &unit.input {
            UnitInput::Inline(bytes) => bytes.to_vec(),
            UnitInput::ByReference(_) => Vec::new(),
        },
        input_ref: match &unit.input {
            UnitInput::Inline(_) => None,
            UnitInput::ByReference(r) => Some(*r),
        },
        args: unit.job.args.clone(),
        limits: TaskLimits::for_job(s),
        deadline_ms,
        signature: unit.job.signature.clone(),
        canonical_nan,
    }
}
