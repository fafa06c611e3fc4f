//! Verdicts: what a unit's copies decide (validation, failure, more
//! copies), audits, and the comparisons of different outputs the shell
//! makes for non-bitwise jobs and feeds back.

use std::collections::HashMap;
use std::sync::Arc;

use peergrid_proto::Hash;
use peergrid_proto::wire::UnitId;

use super::{COMPARE_RETRY_MS, Scheduler, release};
use crate::model::{Comparison, HostId, JobInfo, StoreOp};
use crate::quorum::{CopyState, Verdict, decide, needs_canonical_nan};
use crate::trust::Standing;

impl Scheduler {
    /// The comparisons units wait for, to make off the scheduler's lock:
    /// those asked since the last call, and those whose retry is due at
    /// `now_ms`. Each is handed out once; answer it with
    /// [`Scheduler::record_agreement`] or [`Scheduler::comparison_failed`].
    pub fn take_comparisons(&mut self, now_ms: u64) -> Vec<Comparison> {
        let mut out = std::mem::take(&mut self.comparisons);
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|(at, _)| *at <= now_ms);
        self.retries = later;
        out.extend(due.into_iter().map(|(_, c)| c));
        // A unit that finished meanwhile needs none.
        out.retain(|c| self.comparing.contains_key(&c.unit));
        out
    }

    /// The comparisons asked for `units` since they were last taken (not
    /// those of other units, nor retries): what an exchange that reported
    /// on `units` makes before it answers, leaving the rest to
    /// [`Scheduler::take_comparisons`].
    pub fn take_comparisons_of(&mut self, units: &[UnitId]) -> Vec<Comparison> {
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.comparisons)
            .into_iter()
            .partition(|c| units.contains(&c.unit));
        self.comparisons = others;
        mine
    }

    /// The verdict on a pair the scheduler asked about: the unit is decided
    /// again once its last asked pair is answered. Answers to pairs never
    /// asked (or of units finished since) are ignored.
    pub fn record_agreement(&mut self, unit: UnitId, a: Hash, b: Hash, agree: bool, now_ms: u64) {
        let pair = Comparison::pair(a, b);
        let Some(asked) = self.comparing.get_mut(&unit) else {
            return;
        };
        let Some(i) = asked.iter().position(|p| *p == pair) else {
            return;
        };
        asked.swap_remove(i);
        let done = asked.is_empty();
        if done {
            self.comparing.remove(&unit);
        }
        if let Some(u) = self.units.get_mut(&unit) {
            u.verdicts.push((pair, agree));
            if done {
                self.evaluate(unit, now_ms);
            }
        }
    }

    /// The shell could not make a comparison (reading an output failed):
    /// it is handed out again [`COMPARE_RETRY_MS`] later. Never a verdict.
    pub fn comparison_failed(&mut self, comparison: Comparison, now_ms: u64) {
        let pair = Comparison::pair(comparison.a, comparison.b);
        let asked = self.comparing.get(&comparison.unit);
        if asked.is_some_and(|a| a.contains(&pair)) {
            self.retries.push((now_ms + COMPARE_RETRY_MS, comparison));
        }
    }

    pub(super) fn host_failed(&mut self, host: HostId) {
        self.standing_mut(host).failed();
        self.dirty.insert(host);
    }

    pub(super) fn evaluate(&mut self, id: UnitId, now_ms: u64) {
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
        let mut missing = Vec::new();
        let verdict = {
            let verdicts = &unit.verdicts;
            let mut agree = |a: &Hash, b: &Hash| {
                !job.validator.is_bitwise()
                    && known(verdicts, *a, *b).unwrap_or_else(|| {
                        missing.push(Comparison::pair(*a, *b));
                        false
                    })
            };
            decide(&unit.copies, &unit.rules(), &mut agree)
        };
        if !missing.is_empty() {
            // Decided only once every pair it looked at has a verdict.
            ask(
                &mut self.comparing,
                &mut self.comparisons,
                id,
                &job,
                missing,
            );
            return;
        }
        match verdict {
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
                let mut checked = Vec::new();
                for c in &unit.copies {
                    if let CopyState::Success { .. } = &c.state {
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
                // Decided: its outputs no longer count against their hosts.
                let freed = std::mem::take(&mut unit.stored);
                release_stored(&mut self.stored, freed);
                self.ops.push(StoreOp::Validate {
                    unit: id,
                    output,
                    // What each agreeing host is credited: the agreed fuel,
                    // or a `fixed` job's declared credit.
                    fuel: job.settings.credit_of(fuel),
                    hosts: hosts.clone(),
                    at_ms: now_ms,
                    pending_credit,
                });
                self.ops.extend(
                    checked
                        .into_iter()
                        .map(|host| StoreOp::GrantCredit { host }),
                );
                // Kept for one more copy on an established host, or done.
                if !self.start_audit(id, output, hosts, now_ms) {
                    self.finish(id);
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

    /// Drops a finished unit from the window; copies still out are
    /// forgotten, and their late reports are refused.
    pub(super) fn finish(&mut self, id: UnitId) {
        self.auditing.remove(&id);
        self.comparing.remove(&id);
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

/// Asks for the comparisons of unit `id`'s `pairs` not asked for yet.
pub(super) fn ask(
    comparing: &mut HashMap<UnitId, Vec<(Hash, Hash)>>,
    comparisons: &mut Vec<Comparison>,
    id: UnitId,
    job: &Arc<JobInfo>,
    pairs: impl IntoIterator<Item = (Hash, Hash)>,
) {
    let asked = comparing.entry(id).or_default();
    for (a, b) in pairs {
        if !asked.contains(&(a, b)) {
            asked.push((a, b));
            comparisons.push(Comparison {
                unit: id,
                job: job.clone(),
                a,
                b,
            });
        }
    }
}

/// The verdict on `a` and `b` among a unit's `verdicts`, if known.
pub(super) fn known(verdicts: &[((Hash, Hash), bool)], a: Hash, b: Hash) -> Option<bool> {
    let pair = Comparison::pair(a, b);
    verdicts.iter().find(|(p, _)| *p == pair).map(|(_, v)| *v)
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
