#![allow(clippy::unwrap_used)]
use super::audits::MAX_AUDITS;
use super::*;
use crate::trust::Standing;
use peergrid_proto::Hash;
use peergrid_proto::deadline;
use peergrid_proto::limits::MAX_OUTPUT;
use peergrid_proto::spec::{JobSettings, Metering};
use peergrid_proto::wire::Task;
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
    with_units_in(Scheduler::with(policy, 0x5eed), n, settings)
}

/// Adds a job of `n` fresh units to `s`.
fn with_units_in(mut s: Scheduler, n: u64, settings: JobSettings) -> Scheduler {
    s.add_job(job(settings));
    for id in 1..=n {
        s.load(
            LoadedUnit {
                id,
                job: 1,
                number: id,
                input: vec![id as u8],
                input_hash: Hash::of(&[id as u8]),
                input_len: 1,
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

/// A scheduler with one unit of a job under a tolerance validator, sent
/// to hosts 1 and 2.
fn tolerant_unit() -> Scheduler {
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
            number: 1,
            input: vec![1],
            input_hash: Hash::of(&[1]),
            input_len: 1,
            copies: vec![],
            single: false,
            disputed: false,
        },
        0,
    );
    s.assign(1, 1, usize::MAX, 0);
    s.assign(2, 1, usize::MAX, 0);
    s
}

fn validated(ops: &[StoreOp]) -> bool {
    ops.iter().any(|op| matches!(op, StoreOp::Validate { .. }))
}

#[test]
fn different_outputs_wait_for_the_verdict_the_shell_feeds_back() {
    let mut s = tolerant_unit();
    s.report(1, 1, ok(3), 1, 5).unwrap();
    assert!(
        s.take_comparisons(5).is_empty(),
        "one output: nothing to compare"
    );
    s.report(2, 1, ok(4), 1, 6).unwrap();
    let asked = s.take_comparisons(6);
    assert_eq!(asked.len(), 1, "{asked:?}");
    let c = &asked[0];
    assert_eq!(
        (c.unit, c.job.id, c.a, c.b),
        (1, 1, Hash([3; 32]), Hash([4; 32]))
    );
    assert!(!validated(&s.take_ops()), "undecided until the verdict");
    assert!(s.take_comparisons(7).is_empty(), "handed out once");
    // A verdict on a pair never asked changes nothing.
    s.record_agreement(1, Hash([3; 32]), Hash([9; 32]), true, 7);
    assert!(!validated(&s.take_ops()));
    s.record_agreement(1, c.b, c.a, true, 8);
    assert!(validated(&s.take_ops()), "agreement validates");
    s.record_agreement(1, c.a, c.b, true, 9);
    assert!(
        s.take_ops().is_empty(),
        "a late answer for a finished unit is ignored"
    );
}

#[test]
fn a_failed_comparison_is_retried_never_taken_for_disagreement() {
    let mut s = tolerant_unit();
    s.report(1, 1, ok(3), 1, 5).unwrap();
    s.report(2, 1, ok(4), 1, 6).unwrap();
    let mut asked = s.take_comparisons(6);
    let c = asked.pop().unwrap();
    s.comparison_failed(c.clone(), 10);
    s.take_ops();
    assert!(
        s.assign(3, 1, usize::MAX, 11).is_empty(),
        "no tie-breaker: the pair was not found to disagree"
    );
    assert!(s.take_comparisons(10 + COMPARE_RETRY_MS - 1).is_empty());
    let again = s.take_comparisons(10 + COMPARE_RETRY_MS);
    assert_eq!(again.len(), 1, "handed out again once the retry is due");
    s.record_agreement(1, c.a, c.b, false, 20 + COMPARE_RETRY_MS);
    assert!(!validated(&s.take_ops()));
    assert_eq!(
        s.assign(3, 1, usize::MAX, 21 + COMPARE_RETRY_MS).len(),
        1,
        "disagreement asks for a tie-breaker"
    );
}

#[test]
fn a_unit_loaded_after_a_restart_asks_again_for_its_comparisons() {
    let mut s = Scheduler::new();
    let mut tolerant = job(JobSettings::default());
    tolerant.validator = peergrid_proto::spec::Validator::Tolerance {
        abs_epsilon: 0.5,
        rel_epsilon: 0.0,
    };
    s.add_job(tolerant);
    let copy = |host, out| Copy {
        host,
        state: ok(out),
    };
    s.load(
        LoadedUnit {
            id: 1,
            job: 1,
            number: 1,
            input: vec![1],
            input_hash: Hash::of(&[1]),
            input_len: 1,
            copies: vec![copy(1, 3), copy(2, 4)],
            single: false,
            disputed: false,
        },
        0,
    );
    let asked = s.take_comparisons(0);
    assert_eq!(asked.len(), 1, "the verdicts died with the old process");
    s.record_agreement(1, asked[0].a, asked[0].b, true, 1);
    assert!(validated(&s.take_ops()));
}

#[test]
fn an_exchange_takes_only_its_own_units_comparisons() {
    let mut s = tolerant_unit();
    s.report(1, 1, ok(3), 1, 5).unwrap();
    s.report(2, 1, ok(4), 1, 6).unwrap();
    assert!(s.take_comparisons_of(&[2, 3]).is_empty(), "not its units");
    assert_eq!(s.take_comparisons_of(&[1]).len(), 1);
    assert!(s.take_comparisons(7).is_empty(), "handed out once");
}

#[test]
fn identical_outputs_and_bitwise_jobs_need_no_comparison() {
    let mut s = tolerant_unit();
    s.report(1, 1, ok(3), 1, 5).unwrap();
    s.report(2, 1, ok(3), 1, 6).unwrap();
    assert!(s.take_comparisons(6).is_empty());
    assert!(validated(&s.take_ops()));

    let mut bitwise = with_units(1, JobSettings::default());
    bitwise.assign(1, 1, usize::MAX, 0);
    bitwise.assign(2, 1, usize::MAX, 0);
    bitwise.report(1, 1, ok(3), 1, 5).unwrap();
    bitwise.report(2, 1, ok(4), 1, 6).unwrap();
    assert!(
        bitwise.take_comparisons(6).is_empty(),
        "bitwise needs no comparison"
    );
    assert!(!validated(&bitwise.take_ops()));
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
    let mut s = with_units_in(Scheduler::with(policy, 7), 1, JobSettings::default());
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

/// A `fixed` job counts no fuel: agreeing hosts are credited the job's
/// declared credit, and a host reporting any fuel lies about its work.
#[test]
fn a_fixed_job_grants_its_declared_credit_and_refuses_reported_fuel() {
    let settings = JobSettings {
        metering: Metering::Fixed,
        credit: Some(5_000),
        target_nresults: Some(3),
        ..JobSettings::default()
    };
    let mut s = with_units(1, settings);
    for host in 1..=3 {
        s.assign(host, 1, usize::MAX, 0);
    }
    let done = |fuel| CopyState::Success {
        output: Hash([7; 32]),
        fuel,
        engine: "x86_64".into(),
        resumed: false,
    };
    assert_eq!(
        s.report(1, 1, done(1), 1, 1),
        Err(ReportError::FuelAboveLimit {
            unit: 1,
            fuel: 1,
            limit: 0,
        })
    );
    s.report(2, 1, done(0), 1, 1).unwrap();
    s.report(3, 1, done(0), 1, 1).unwrap();
    let validated: Vec<(u64, Vec<HostId>)> = s
        .take_ops()
        .into_iter()
        .filter_map(|o| match o {
            StoreOp::Validate { fuel, hosts, .. } => Some((fuel, hosts)),
            _ => None,
        })
        .collect();
    assert_eq!(validated, vec![(5_000, vec![2, 3])]);
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
                number: 1,
                input: vec![1],
                input_hash: Hash::of(&[1]),
                input_len: 1,
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
    let mut s = with_units_in(Scheduler::with(policy, 1), 8, JobSettings::default());
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
            number: 2,
            input: vec![2],
            input_hash: Hash::of(&[2]),
            input_len: 1,
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
    let mut s = with_units_in(Scheduler::with(policy, 7), 1, settings);
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
    let mut s = with_units_in(Scheduler::with(policy, 1), 40, JobSettings::default());
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
        .prop_map(
            |(quorum, extra, max_error, grace, distinct, adaptive)| JobSettings {
                quorum,
                target_nresults: Some(quorum + extra),
                max_error_results: max_error,
                deadline_secs: 10,
                grace_secs: grace,
                distinct_volunteers: distinct,
                adaptive_replication: adaptive,
                ..JobSettings::default()
            },
        )
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
        let mut s = with_units_in(Scheduler::with(policy, 0x5eed), units, settings);
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

/// Unit `id` of job 1, with no copies, its input as the store loads it.
fn fresh_unit(id: u64, input: Vec<u8>) -> LoadedUnit {
    LoadedUnit {
        id,
        job: 1,
        number: id,
        input_hash: Hash::of(&input),
        input_len: input.len() as u64,
        input,
        copies: vec![],
        single: false,
        disputed: false,
    }
}

#[test]
fn inputs_at_or_over_the_threshold_go_by_reference_and_count_little_against_the_budget() {
    let mut s = Scheduler::new();
    s.send_inputs_by_reference(Some(1024));
    s.add_job(job(JobSettings::default()));
    let big = vec![7u8; 4096];
    for (id, input) in [(1, vec![1u8; 1023]), (2, vec![2u8; 1024]), (3, big.clone())] {
        s.load(fresh_unit(id, input), 0);
    }
    let tasks = s.assign(10, 10, usize::MAX, 0);
    let by_unit = |u: u64| tasks.iter().find(|t| t.unit == u).unwrap();
    assert_eq!(by_unit(1).input, vec![1u8; 1023]);
    assert_eq!(by_unit(1).input_ref, None);
    for (unit, input) in [(2, vec![2u8; 1024]), (3, big)] {
        let t = by_unit(unit);
        assert!(t.input.is_empty());
        let r = t.input_ref.unwrap();
        assert_eq!((r.hash, r.len), (Hash::of(&input), input.len() as u64));
    }
    // A budget two inline 4 KiB inputs would overflow holds many
    // references: only the hash rides in the task.
    let mut s = Scheduler::new();
    s.send_inputs_by_reference(Some(1));
    s.add_job(job(JobSettings::default()));
    for id in 1..=8 {
        let input = vec![id as u8; 4096];
        s.load(fresh_unit(id, input), 0);
    }
    assert_eq!(s.assign(10, 4, 4 * 1200, 0).len(), 4);
    // The budget still bounds references: two fit in 2 × 1100 bytes.
    assert_eq!(s.assign(11, 4, 2 * 1100, 0).len(), 2);

    // Bytes the store withheld go by reference even when the scheduler
    // was not told to send any: never an empty input that is not the
    // unit's own.
    let mut s = Scheduler::new();
    s.add_job(job(JobSettings::default()));
    let withheld = vec![9u8; 4096];
    let unit = LoadedUnit {
        input: Vec::new(),
        ..fresh_unit(1, withheld.clone())
    };
    s.load(unit, 0);
    let t = s.assign(10, 1, usize::MAX, 0);
    assert_eq!(
        t[0].input_ref,
        Some(BlobRef {
            hash: Hash::of(&withheld),
            len: 4096
        })
    );
}

/// Young hosts on two networks work through a job whose every validated
/// unit is kept for an audit that only an established host may run, and
/// none is about. The audits waiting must neither hide the fresh units
/// behind them (the 1,000,000-unit bench stalled at 260,000 when 2 % of
/// them filled the front of the queue past `MAX_SCAN`) nor grow without
/// bound.
#[test]
fn audits_no_host_can_take_never_starve_fresh_units() {
    let policy = HostPolicy {
        audit_ppm: 1_000_000,
        ..HostPolicy::default()
    };
    let n = 2 * MAX_AUDITS as u64;
    let mut s = with_units_in(Scheduler::with(policy, 11), 0, JobSettings::default());
    on_network(&mut s, 1, "198.51.100.7", 4);
    on_network(&mut s, 2, "203.0.113.9", 4);
    let (mut loaded, mut validated) = (0, 0);
    let mut now = 1;
    let mut idle_rounds = 0;
    while validated < n && idle_rounds < 3 {
        // The feeder tops the window up as it runs low, behind whatever
        // is queued already.
        if s.active_units() < s.auditing.len() + 100 && loaded < n {
            for id in loaded + 1..=(loaded + 500).min(n) {
                s.load(fresh_unit(id, vec![id as u8]), now);
            }
            loaded = (loaded + 500).min(n);
        }
        let mut issued = 0;
        for host in [1, 2] {
            let tasks = s.assign(host, 16, usize::MAX, now);
            issued += tasks.len();
            for t in tasks {
                s.report(host, t.unit, ok(1), 1, now).unwrap();
            }
            now += 1;
        }
        validated += s
            .take_ops()
            .iter()
            .filter(|o| matches!(o, StoreOp::Validate { .. }))
            .count() as u64;
        idle_rounds = if issued == 0 { idle_rounds + 1 } else { 0 };
        assert!(
            s.auditing.len() <= MAX_AUDITS,
            "{} audits held in the window",
            s.auditing.len()
        );
    }
    assert_eq!(validated, n, "units validated before the grid stalled");
    assert_eq!(s.auditing.len(), MAX_AUDITS, "audits still waiting");
}

/// A unit waiting for its audit is reopened when a host that validated it
/// is caught (outvoted on another unit): it leaves the audits' queue for
/// the quorum's, and a young host (no established one is about)
/// completes it again.
#[test]
fn a_reopened_unit_leaves_the_audits_queue_for_more_copies() {
    let policy = HostPolicy {
        audit_ppm: 1_000_000,
        ..HostPolicy::default()
    };
    let mut s = with_units_in(Scheduler::with(policy, 3), 1, JobSettings::default());
    for h in 1..=4 {
        on_network(&mut s, h, &format!("10.0.{h}.1"), 1);
    }
    s.assign(1, 1, usize::MAX, 0);
    s.assign(2, 1, usize::MAX, 0);
    s.report(1, 1, ok(7), 1, 1).unwrap();
    s.report(2, 1, ok(7), 1, 1).unwrap();
    assert!(validated(&s.take_ops()));
    assert_eq!(s.audit_queue.len(), 1, "waiting for an established host");
    assert!(
        s.assign(3, 1, usize::MAX, 2).is_empty(),
        "not on a young host"
    );
    // Unit 2: host 1 is outvoted by hosts 3 and 4, and caught.
    s.load(fresh_unit(2, vec![2]), 3);
    for (h, out) in [(1, 9), (3, 2), (4, 2)] {
        assert_eq!(units_of(&s.assign(h, 1, usize::MAX, 3)), HashSet::from([2]));
        s.report(h, 2, ok(out), 1, 4).unwrap();
    }
    let ops = s.take_ops();
    assert!(
        ops.iter()
            .any(|o| matches!(o, StoreOp::Repair { host: 1, .. })),
        "{ops:?}"
    );
    assert_eq!(
        s.audit_queue,
        [2],
        "unit 2 waits for its audit, unit 1 no more"
    );
    assert_eq!(units_of(&s.assign(3, 1, usize::MAX, 5)), HashSet::from([1]));
    s.report(3, 1, ok(7), 1, 6).unwrap();
    assert!(validated(&s.take_ops()), "validated again by hosts 2 and 3");
}

/// An established host takes audit copies and never reports them: the
/// audits under way do not count against `MAX_AUDITS`, so every later
/// validated unit is still audited (colluders cannot switch audits off by
/// sitting on them), and a request gets fresh work beside its audits.
#[test]
fn audits_a_host_sits_on_do_not_switch_auditing_off() {
    let policy = HostPolicy {
        established_age_ms: 0,
        audit_ppm: 1_000_000,
        in_flight_per_core: 64,
        ..HostPolicy::default()
    };
    let n = 3 * MAX_AUDITS as u64;
    let mut s = with_units_in(Scheduler::with(policy, 5), n, JobSettings::default());
    for h in 1..=3 {
        on_network(&mut s, h, &format!("10.0.{h}.1"), 8192);
        let mut old = s.standing(h).unwrap().clone();
        old.consecutive_valid = 50;
        s.host_joined(h, old);
    }
    let (mut validated, mut audits, mut sat_on, mut now) = (0, 0, 0, 1);
    while validated < n && now < 1000 {
        // Hosts 1 and 2 report every copy; host 3 sits on its audits.
        for host in [3, 1, 2] {
            let want = if host == 3 { 2000 } else { 1000 };
            let tasks = s.assign(host, want, usize::MAX, now);
            let audit = |t: &Task| s.units.get(&t.unit).is_some_and(|u| u.audit.is_some());
            let (audit_copies, others): (Vec<Task>, Vec<Task>) = tasks.into_iter().partition(audit);
            assert!(
                audit_copies.len() <= want as usize / 2,
                "{} audit copies in one request of {want}",
                audit_copies.len()
            );
            audits += audit_copies.len();
            let report = match host {
                3 => {
                    sat_on += audit_copies.len();
                    others
                }
                _ => audit_copies.into_iter().chain(others).collect(),
            };
            for t in report {
                s.report(host, t.unit, ok(1), 1, now).unwrap();
            }
        }
        validated += s
            .take_ops()
            .iter()
            .filter(|o| matches!(o, StoreOp::Validate { .. }))
            .count() as u64;
        now += 1;
    }
    assert_eq!(validated, n);
    assert!(sat_on > MAX_AUDITS, "host 3 sits on {sat_on} audits");
    assert_eq!(
        audits + s.audit_queue.len(),
        n as usize,
        "every validated unit audited or waiting for it"
    );
}

/// An audit whose first auditor failed waits its full time again for a
/// second one: the first wait's give-up, still in the deadlines, does not
/// end it early.
#[test]
fn a_retried_audit_waits_its_full_time_again() {
    let policy = HostPolicy {
        established_age_ms: 0,
        audit_ppm: 1_000_000,
        ..HostPolicy::default()
    };
    let settings = JobSettings::default();
    let wait = (2 * settings.deadline_secs + settings.grace_secs) * 1000;
    let mut s = with_units_in(Scheduler::with(policy, 9), 1, settings);
    for h in 1..=3 {
        on_network(&mut s, h, &format!("10.0.{h}.1"), 1);
        let mut old = s.standing(h).unwrap().clone();
        old.consecutive_valid = 50;
        s.host_joined(h, old);
    }
    s.assign(1, 1, usize::MAX, 0);
    s.assign(2, 1, usize::MAX, 0);
    s.report(1, 1, ok(7), 1, 0).unwrap();
    s.report(2, 1, ok(7), 1, 0).unwrap();
    assert_eq!(units_of(&s.assign(3, 1, usize::MAX, 1)), HashSet::from([1]));
    let failed_at = wait / 2;
    s.report(3, 1, CopyState::Error("trap".into()), 1, failed_at)
        .unwrap();
    s.expire(wait);
    assert!(
        s.auditing.contains(&1),
        "the first wait's end is not this one's"
    );
    s.expire(failed_at + wait);
    assert!(
        !s.auditing.contains(&1),
        "given up at the end of its own wait"
    );
}
