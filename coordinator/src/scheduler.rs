//! The sans-IO heart of the coordinator: which host gets which copy of
//! which unit, what a report changes, when a copy has timed out.
//!
//! Inputs arrive through methods that take the current time (`now_ms`);
//! outputs are the tasks returned to the caller and the [`StoreOp`]s it
//! collects with [`Scheduler::take_ops`] and hands to the store writer.
//! Nothing here sleeps, reads a clock or touches a socket or a disk, so the
//! rules are tested directly (see the property tests below).
//!
//! The scheduler holds a *window* of unfinished units in memory (BOINC's
//! feeder keeps a similar shared-memory cache): dispatch never reads the
//! store; the I/O shell refills the window from the store when it runs low.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use peergrid_proto::limits::MAX_OUTPUT;
use peergrid_proto::wire::{JobId, Task, TaskLimits, UnitId};

use crate::quorum::{Copy, CopyState, Verdict, decide, needs_canonical_nan};
use crate::store::{HostId, JobInfo, LoadedUnit, StoreOp};

/// How many queued units one `assign` call may look at before giving up:
/// bounds the cost of a request from a host that already holds copies of
/// everything at the front of the queue.
const MAX_SCAN: usize = 4096;

struct UnitState {
    job: Arc<JobInfo>,
    input: Arc<[u8]>,
    copies: Vec<Copy>,
    /// Whether the unit sits in `queue`; keeps it there at most once.
    queued: bool,
}

#[derive(Default)]
pub struct Scheduler {
    jobs: HashMap<JobId, Arc<JobInfo>>,
    units: HashMap<UnitId, UnitState>,
    /// Units that may need more copies, oldest first. A unit's entry is
    /// re-checked with [`decide`] when it reaches the front.
    queue: VecDeque<UnitId>,
    /// Outstanding copies by deadline: `(deadline_ms, unit, host)`.
    deadlines: BTreeSet<(u64, UnitId, HostId)>,
    ops: Vec<StoreOp>,
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
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    pub fn has_job(&self, id: JobId) -> bool {
        self.jobs.contains_key(&id)
    }

    pub fn add_job(&mut self, job: JobInfo) {
        self.jobs.insert(job.id, Arc::new(job));
    }

    /// Unfinished units in the window.
    pub fn active_units(&self) -> usize {
        self.units.len()
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
            }
        }
        self.units.insert(
            unit.id,
            UnitState {
                job,
                input: unit.input.into(),
                copies: unit.copies,
                queued: false,
            },
        );
        self.evaluate(unit.id, now_ms);
    }

    /// Up to `want` tasks for `host` whose inputs add up to at most
    /// `max_bytes` (one task always fits), never a second copy of a unit
    /// the host already has.
    pub fn assign(&mut self, host: HostId, want: u32, max_bytes: usize, now_ms: u64) -> Vec<Task> {
        let mut tasks = Vec::new();
        let mut put_back = Vec::new();
        let mut scanned = 0;
        let mut bytes = 0;
        while tasks.len() < want as usize && scanned < MAX_SCAN {
            if let Some(&next) = self.queue.front()
                && !tasks.is_empty()
                && self
                    .units
                    .get(&next)
                    .is_some_and(|u| bytes + wire_size(u) > max_bytes)
            {
                break;
            }
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            scanned += 1;
            let Some(unit) = self.units.get_mut(&id) else {
                continue;
            };
            unit.queued = false;
            let Verdict::NeedCopies(need) = decide(&unit.copies, &unit.job.settings) else {
                continue;
            };
            unit.queued = true;
            put_back.push(id);
            if unit.copies.iter().any(|c| c.host == host) {
                continue;
            }
            let deadline_ms = now_ms + unit.job.settings.deadline_secs * 1000;
            let canonical_nan = needs_canonical_nan(&unit.copies);
            unit.copies.push(Copy {
                host,
                state: CopyState::InProgress { deadline_ms },
            });
            if need == 1 {
                unit.queued = false;
                put_back.pop();
            }
            self.deadlines.insert((deadline_ms, id, host));
            self.ops.push(StoreOp::Assign {
                unit: id,
                host,
                sent_ms: now_ms,
                deadline_ms,
            });
            bytes += wire_size(unit);
            tasks.push(task_for(id, unit, deadline_ms, canonical_nan));
        }
        for id in put_back.into_iter().rev() {
            self.queue.push_front(id);
        }
        tasks
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
        let unit = self
            .units
            .get_mut(&unit_id)
            .ok_or(ReportError::UnknownUnit(unit_id))?;
        let copy = unit
            .copies
            .iter_mut()
            .find(|c| c.host == host)
            .ok_or(ReportError::NotAssigned(unit_id))?;
        match copy.state {
            CopyState::InProgress { deadline_ms } => {
                self.deadlines.remove(&(deadline_ms, unit_id, host));
            }
            CopyState::TimedOut => {}
            CopyState::Success { .. } | CopyState::Error(_) => {
                return Err(ReportError::AlreadyReported(unit_id));
            }
        }
        copy.state = state.clone();
        self.ops.push(StoreOp::Report {
            unit: unit_id,
            host,
            state,
            elapsed_ms,
            received_ms: now_ms,
        });
        self.evaluate(unit_id, now_ms);
        Ok(())
    }

    /// Marks every copy whose deadline has passed as timed out.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(deadline_ms, unit_id, host)) = self.deadlines.first() {
            if deadline_ms > now_ms {
                break;
            }
            self.deadlines.pop_first();
            let Some(unit) = self.units.get_mut(&unit_id) else {
                continue;
            };
            if let Some(c) = unit.copies.iter_mut().find(|c| c.host == host) {
                c.state = CopyState::TimedOut;
            }
            self.ops.push(StoreOp::TimedOut {
                unit: unit_id,
                host,
            });
            self.evaluate(unit_id, now_ms);
        }
    }

    /// Store changes decided since the last call, in order.
    pub fn take_ops(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.ops)
    }

    fn evaluate(&mut self, id: UnitId, now_ms: u64) {
        let Some(unit) = self.units.get_mut(&id) else {
            return;
        };
        match decide(&unit.copies, &unit.job.settings) {
            Verdict::Validated {
                output,
                fuel,
                hosts,
            } => {
                self.ops.push(StoreOp::Validate {
                    unit: id,
                    output,
                    fuel,
                    hosts,
                    at_ms: now_ms,
                });
                self.finish(id);
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
                    self.queue.push_back(id);
                }
            }
            Verdict::Wait => {}
        }
    }

    /// Drops a finished unit from the window; copies still out are
    /// forgotten, and their late reports are refused.
    fn finish(&mut self, id: UnitId) {
        if let Some(unit) = self.units.remove(&id) {
            for c in unit.copies {
                if let CopyState::InProgress { deadline_ms } = c.state {
                    self.deadlines.remove(&(deadline_ms, id, c.host));
                }
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
        limits: TaskLimits {
            memory_bytes: s.memory_mb * 1024 * 1024,
            fuel: s.fuel,
            max_output_bytes: MAX_OUTPUT as u64,
            wall_ms: s.deadline_secs * 1000,
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
    use peergrid_proto::Hash;
    use peergrid_proto::spec::JobSettings;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn job(settings: JobSettings) -> JobInfo {
        JobInfo {
            id: 1,
            name: "t".into(),
            module: Hash([1; 32]),
            args: vec![],
            settings,
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

    fn with_units(n: u64, settings: JobSettings) -> Scheduler {
        let mut s = Scheduler::new();
        s.add_job(job(settings));
        for id in 1..=n {
            s.load(
                LoadedUnit {
                    id,
                    job: 1,
                    input: vec![id as u8],
                    copies: vec![],
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
        }
    }

    #[test]
    fn a_host_never_gets_two_copies_of_a_unit() {
        let mut s = with_units(3, JobSettings::default());
        let a = s.assign(10, 100, usize::MAX, 0);
        assert_eq!(a.iter().map(|t| t.unit).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(s.assign(10, 100, usize::MAX, 0).is_empty());
        let b = s.assign(11, 100, usize::MAX, 0);
        assert_eq!(b.len(), 3);
        assert!(
            s.assign(12, 100, usize::MAX, 0).is_empty(),
            "quorum copies are all out"
        );
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
            matches!(ops.last(), Some(StoreOp::Validate { hosts, .. }) if hosts == &vec![1, 2])
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
        s.expire(10_001);
        assert!(
            s.take_ops()
                .iter()
                .any(|o| matches!(o, StoreOp::TimedOut { host: 2, .. }))
        );
        assert_eq!(s.assign(3, 1, usize::MAX, 10_002).len(), 1);
        // The timed-out host reports late and completes the quorum.
        s.report(2, 1, ok(9), 1, 10_003).unwrap();
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

    proptest! {
        /// Hosts 0 and 1 cheat (each with its own wrong answer), host 2 errs,
        /// the rest are honest; tasks finish or time out in any order.
        /// Whatever happens: no host holds two copies of a unit, nothing
        /// enters the dataset without `quorum` distinct agreeing hosts, a
        /// wrong output never validates with quorum 2 when cheaters do not
        /// collude, copies never exceed the cap, and once the honest hosts
        /// drain the queue every unit is validated or failed, never lost.
        #[test]
        fn rules_hold_under_any_schedule(actions in proptest::collection::vec(action(), 1..200)) {
            let settings = JobSettings { deadline_secs: 10, ..JobSettings::default() };
            let units = 8u64;
            let mut s = with_units(units, settings);
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
                        StoreOp::Validate { unit, .. } | StoreOp::Fail { unit, .. } => {
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
                prop_assert!(hosts.len() as u32 <= settings.max_total_results());
            }
            prop_assert_eq!(s.active_units(), 0);
            for unit in 1..=units {
                match finished.get(&unit) {
                    Some(StoreOp::Validate { output, hosts, .. }) => {
                        prop_assert_eq!(*output, Hash([unit as u8; 32]), "wrong output validated");
                        let distinct: HashSet<_> = hosts.iter().collect();
                        prop_assert!(distinct.len() >= 2);
                        prop_assert!(hosts.iter().all(|h| *h >= 3));
                    }
                    Some(StoreOp::Fail { reason, .. }) => prop_assert!(!reason.is_empty()),
                    other => prop_assert!(false, "unit {} ended as {:?}", unit, other),
                }
            }
        }
    }
}
