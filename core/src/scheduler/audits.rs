//! Audits: a validated unit kept in the window for one more copy on an
//! established host of another network, waiting in a queue of its own
//! (only established hosts look at it), judged against its dataset row.

use super::Scheduler;
use super::assign::{MAX_SCAN, draw};
use super::verdicts::{ask, known};
use crate::model::{Comparison, HostId, StoreOp};
use crate::netgroup;
use crate::quorum::{Copy, CopyState};
use peergrid_proto::Hash;
use peergrid_proto::wire::{Task, UnitId};

/// A validated unit waiting for its audit: one more copy on an
/// established host that must agree with the dataset row.
#[derive(Clone, Debug)]
pub(super) struct Audit {
    pub(super) output: Hash,
    /// The hosts whose agreement validated it: if one is caught before
    /// the audit ends, the unit is reopened in the window too.
    pub(super) hosts: Vec<HostId>,
    /// The established host running the audit copy.
    pub(super) auditor: Option<HostId>,
    /// Audit copies that failed to report (error, timeout): after a few
    /// the audit is given up.
    pub(super) attempts: u32,
    /// When the current wait for an auditor is given up (0: not yet set);
    /// an earlier wait's give-up, still in `deadlines`, is ignored.
    pub(super) give_up_ms: u64,
}

/// Audit copies that may fail before an audit is given up.
pub(super) const AUDIT_ATTEMPTS: u32 = 3;
/// Most validated units the window keeps waiting for an auditor. Past
/// it, a validated unit leaves the window unaudited: audits pile up only
/// while no established host takes them, and must not crowd out the
/// units still to be done. Audits under way do not count: a host that
/// takes audit copies and sits on them cannot switch auditing off.
pub(super) const MAX_AUDITS: usize = 10_000;
/// Stands for "no host" in `Scheduler::deadlines`: when an audit waiting
/// for an auditor is given up.
pub(super) const AUDIT_WAIT: HostId = HostId::MAX;

impl Scheduler {
    /// Draws whether validated unit `id` is audited (`audit_ppm` of units,
    /// while fewer than [`MAX_AUDITS`] wait for an auditor) and if so keeps
    /// it in the window for its audit; false when it is not.
    pub(super) fn start_audit(
        &mut self,
        id: UnitId,
        output: Hash,
        hosts: Vec<HostId>,
        now_ms: u64,
    ) -> bool {
        let drawn = u64::from(self.policy.audit_ppm) > self.rng.next_u64() % 1_000_000
            && self.audit_queue.len() < MAX_AUDITS;
        let Some(unit) = self.units.get_mut(&id).filter(|_| drawn) else {
            return false;
        };
        self.auditing.insert(id);
        unit.audit = Some(Audit {
            output,
            hosts,
            auditor: None,
            attempts: 0,
            give_up_ms: 0,
        });
        self.evaluate_audit(id, now_ms);
        true
    }

    /// Up to `want` audit copies for an established `host` (one at a time
    /// per unit, on a host of another network than every copy so far)
    /// within `max_bytes`, with their wire size.
    pub(super) fn assign_audits(
        &mut self,
        host: HostId,
        addr: Option<std::net::IpAddr>,
        want: u32,
        max_bytes: usize,
        now_ms: u64,
    ) -> (Vec<Task>, usize) {
        let (mut tasks, mut bytes) = (Vec::new(), 0);
        let mut put_back = Vec::new();
        let mut scanned = 0;
        while tasks.len() < want as usize && scanned < MAX_SCAN {
            let (queue, first) = (&mut self.audit_queue, tasks.is_empty());
            let drawn = draw(queue, &mut self.rng, &self.units, first, bytes, max_bytes);
            let Some(id) = drawn else {
                break;
            };
            scanned += 1;
            let Some(unit) = self.units.get_mut(&id) else {
                continue;
            };
            unit.queued = false;
            let Some(audit) = &unit.audit else {
                // Reopened since it queued: back to the quorum.
                self.evaluate(id, now_ms);
                continue;
            };
            if audit.auditor.is_some() {
                continue;
            }
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
            if unit.copies.iter().any(clash) {
                unit.queued = true;
                put_back.push(id);
                continue;
            }
            if let Some(a) = unit.audit.as_mut() {
                a.auditor = Some(host);
            }
            if let Some((task, size)) = self.issue(id, host, false, now_ms) {
                bytes += size;
                tasks.push(task);
            }
        }
        for id in put_back.into_iter().rev() {
            self.audit_queue.push_front(id);
        }
        (tasks, bytes)
    }

    /// A validated unit under audit: wait for the auditor's copy, ask for
    /// one, or judge it. Agreement ends the audit; disagreement disputes
    /// the row, and the unit goes back to the quorum with one more
    /// agreeing result needed, which catches whichever side lied.
    pub(super) fn evaluate_audit(&mut self, id: UnitId, now_ms: u64) {
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
                    self.audit_queue.push_back(id);
                }
                if audit.give_up_ms == 0 {
                    audit.give_up_ms = give_up_ms;
                    self.deadlines.insert((give_up_ms, id, AUDIT_WAIT));
                }
            }
            Some(CopyState::InProgress { .. }) => {}
            Some(CopyState::Success { output, .. }) => {
                let agrees = if output == audit.output {
                    true
                } else if unit.job.validator.is_bitwise() {
                    false
                } else if let Some(v) = known(&unit.verdicts, output, audit.output) {
                    v
                } else {
                    let pair = Comparison::pair(output, audit.output);
                    ask(
                        &mut self.comparing,
                        &mut self.comparisons,
                        id,
                        &unit.job,
                        [pair],
                    );
                    return;
                };
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
                        self.audit_queue.push_back(id);
                    }
                    audit.give_up_ms = give_up_ms;
                    self.deadlines.insert((give_up_ms, id, AUDIT_WAIT));
                }
            }
        }
    }

    /// Drops from `audit_queue` every unit no longer waiting for an
    /// auditor (finished, cancelled, reopened), so its length is the
    /// audits waiting; one still in the window is no longer queued.
    pub(super) fn prune_audit_queue(&mut self) {
        let units = &mut self.units;
        self.audit_queue.retain(|id| match units.get_mut(id) {
            None => false,
            Some(u) if u.audit.as_ref().is_some_and(|a| a.auditor.is_none()) => true,
            Some(u) => {
                u.queued = false;
                false
            }
        });
    }
}
