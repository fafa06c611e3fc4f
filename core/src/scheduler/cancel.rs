//! Cancelling a job: its unfinished units leave the window, no copy of
//! them goes out again, and the hosts running one are told to stop.

use peergrid_proto::wire::{JobId, UnitId};

use super::Scheduler;
use crate::model::{HostId, StoreOp};
use crate::quorum::CopyState;

/// Why the copies of a cancelled job's units count for nothing.
pub const CANCELLED: &str = "the job was cancelled";

impl Scheduler {
    /// Cancels job `job`: its unfinished units in the window are dropped
    /// (validated ones keep their dataset rows, and an audit still owed
    /// is forgotten), copies in progress are voided without charge to
    /// their hosts, each of which is told to stop at its next exchange
    /// ([`Scheduler::take_stops`]), and the job is forgotten, so units of
    /// it loaded later are ignored. One `StoreOp::Cancel` makes it durable
    /// for the units the window does not hold. Returns how many units the
    /// window dropped; `false` in the pair when the job was not known.
    pub fn cancel_job(&mut self, job: JobId, now_ms: u64) -> (bool, usize) {
        let known = self.jobs.remove(&job).is_some();
        self.cancelled.insert(job);
        self.waiting.remove(&job);
        let units: Vec<UnitId> = self
            .units
            .iter()
            .filter(|(_, u)| u.job.id == job)
            .map(|(id, _)| *id)
            .collect();
        for &id in &units {
            let hosts: Vec<HostId> = self.units[&id]
                .copies
                .iter()
                .filter(|c| matches!(c.state, CopyState::InProgress { .. }))
                .map(|c| c.host)
                .collect();
            for host in hosts {
                let stops = self.stops.entry(host).or_default();
                if !stops.contains(&id) {
                    stops.push(id);
                }
            }
            self.comparisons.retain(|c| c.unit != id);
            self.retries.retain(|(_, c)| c.unit != id);
            // Drops the unit, its deadlines and its hosts' in-flight counts.
            self.finish(id);
        }
        self.prune_audit_queue();
        self.ops.push(StoreOp::Cancel {
            job,
            reason: CANCELLED.to_string(),
            at_ms: now_ms,
        });
        (known, units.len())
    }

    /// Whether job `job` was cancelled since this scheduler started.
    pub fn is_cancelled(&self, job: JobId) -> bool {
        self.cancelled.contains(&job)
    }

    /// The units `host` holds copies of that it should stop running and
    /// forget (their job was cancelled); each is handed out once. With
    /// `held` (the units the host says it holds), only those are named.
    pub fn take_stops(&mut self, host: HostId, held: Option<&[UnitId]>) -> Vec<UnitId> {
        let Some(stops) = self.stops.remove(&host) else {
            return Vec::new();
        };
        match held {
            Some(held) => stops.into_iter().filter(|u| held.contains(u)).collect(),
            None => stops,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::{JobInfo, LoadedUnit};
    use peergrid_proto::Hash;
    use peergrid_proto::signing::{Endorsement, ModuleSignature};
    use peergrid_proto::spec::JobSettings;

    fn job(id: JobId) -> JobInfo {
        JobInfo {
            id,
            name: format!("job {id}"),
            module: Hash([1; 32]),
            args: vec![],
            settings: JobSettings::default(),
            validator: Default::default(),
            signature: ModuleSignature {
                endorsement: Endorsement {
                    researcher_key: String::new(),
                    name: "t".into(),
                    project_signature: String::new(),
                },
                signature: String::new(),
            },
        }
    }

    fn unit(id: UnitId, job: JobId) -> LoadedUnit {
        LoadedUnit {
            id,
            job,
            number: id,
            input: vec![id as u8],
            input_hash: peergrid_proto::Hash::of(&[id as u8]),
            input_len: 1,
            copies: vec![],
            single: false,
            disputed: false,
        }
    }

    /// Jobs 1 (units 1–2) and 2 (units 3–4), every unit with copies out on
    /// hosts 10 and 11 (four copies: a new host's cap on copies in flight).
    fn two_jobs_out() -> Scheduler {
        let mut s = Scheduler::new();
        s.add_job(job(1));
        s.add_job(job(2));
        for id in 1..=4 {
            s.load(unit(id, if id <= 2 { 1 } else { 2 }), 0);
        }
        assert_eq!(s.assign(10, 10, usize::MAX, 0).len(), 4);
        assert_eq!(s.assign(11, 10, usize::MAX, 0).len(), 4);
        s.take_ops();
        s
    }

    #[test]
    fn a_cancelled_job_sends_no_more_copies_and_its_hosts_are_told_to_stop() {
        let mut s = two_jobs_out();
        assert_eq!(s.cancel_job(1, 7), (true, 2));
        assert_eq!(s.active_units(), 2, "only job 2's units stay");
        assert!(s.is_cancelled(1) && !s.is_cancelled(2));
        let ops = s.take_ops();
        assert!(
            ops.contains(&StoreOp::Cancel {
                job: 1,
                reason: CANCELLED.into(),
                at_ms: 7
            }),
            "{ops:?}"
        );
        // Each host is told once, and only of the units it says it holds.
        let mut stops = s.take_stops(10, None);
        stops.sort_unstable();
        assert_eq!(stops, vec![1, 2]);
        assert!(s.take_stops(10, None).is_empty());
        assert_eq!(s.take_stops(11, Some(&[2, 4])), vec![2]);
        // Reports of the cancelled units are refused; job 2's are taken.
        assert_eq!(
            s.report(10, 1, CopyState::Error("late".into()), 1, 8),
            Err(super::super::ReportError::UnknownUnit(1))
        );
        assert!(s.report(10, 3, CopyState::Error("e".into()), 1, 8).is_ok());
        // The copy that erred goes out again; nothing of job 1 does.
        let tasks: Vec<UnitId> = s
            .assign(12, 10, usize::MAX, 9)
            .iter()
            .map(|t| t.unit)
            .collect();
        assert_eq!(tasks, vec![3]);
    }

    #[test]
    fn a_cancelled_job_is_not_loaded_or_added_again() {
        let mut s = two_jobs_out();
        s.cancel_job(1, 7);
        // The feeder may have read the job's units before the cancel.
        s.add_job(job(1));
        s.load(unit(5, 1), 8);
        assert_eq!(s.active_units(), 2);
        assert!(s.assign(12, 10, usize::MAX, 8).iter().all(|t| t.job == 2));
    }

    #[test]
    fn cancelling_an_unknown_job_still_makes_it_durable() {
        let mut s = Scheduler::new();
        assert_eq!(s.cancel_job(9, 1), (false, 0));
        assert!(matches!(s.take_ops()[..], [StoreOp::Cancel { job: 9, .. }]));
    }
}
