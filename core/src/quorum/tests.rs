use super::*;

fn d(copies: &[Copy], settings: &JobSettings) -> Verdict {
    decide(copies, &Rules::of(settings), &mut bitwise)
}

fn success(host: HostId, out: u8, fuel: u64, resumed: bool) -> Copy {
    Copy {
        host,
        state: CopyState::Success {
            output: Hash([out; 32]),
            fuel,
            engine: "e".into(),
            resumed,
        },
    }
}

fn ok(host: HostId, out: u8) -> Copy {
    success(host, out, 10, false)
}
fn running(host: HostId) -> Copy {
    Copy {
        host,
        state: CopyState::InProgress { deadline_ms: 0 },
    }
}

#[test]
fn fresh_unit_needs_quorum_copies() {
    assert_eq!(d(&[], &JobSettings::default()), Verdict::NeedCopies(2));
    assert_eq!(
        d(&[running(1)], &JobSettings::default()),
        Verdict::NeedCopies(1)
    );
    assert_eq!(
        d(&[running(1), running(2)], &JobSettings::default()),
        Verdict::Wait
    );
}

#[test]
fn agreement_validates_and_disagreement_asks_for_a_tie_breaker() {
    let s = JobSettings::default();
    assert_eq!(
        d(&[ok(1, 7), ok(2, 7)], &s),
        Verdict::Validated {
            output: Hash([7; 32]),
            fuel: 10,
            hosts: vec![1, 2]
        }
    );
    assert_eq!(d(&[ok(1, 7), ok(2, 8)], &s), Verdict::NeedCopies(1));
    assert_eq!(
        d(&[ok(1, 7), ok(2, 8), ok(3, 8)], &s),
        Verdict::Validated {
            output: Hash([8; 32]),
            fuel: 10,
            hosts: vec![2, 3]
        }
    );
}

#[test]
fn a_replica_that_misreports_fuel_disagrees() {
    let s = JobSettings::default();
    let inflated = success(2, 7, 11, false);
    assert_eq!(d(&[ok(1, 7), inflated], &s), Verdict::NeedCopies(1));
}

#[test]
fn only_cross_engine_disagreement_asks_for_canonical_nans() {
    let on = |host, out: u8, engine: &str| Copy {
        host,
        state: CopyState::Success {
            output: Hash([out; 32]),
            fuel: 10,
            engine: engine.into(),
            resumed: false,
        },
    };
    assert!(!needs_canonical_nan(&[on(1, 1, "x86"), on(2, 1, "arm")]));
    assert!(!needs_canonical_nan(&[on(1, 1, "x86"), on(2, 2, "x86")]));
    assert!(needs_canonical_nan(&[on(1, 1, "x86"), on(2, 2, "arm")]));
}

#[test]
fn caps_fail_the_unit_with_a_reason() {
    let s = JobSettings {
        max_total_results: Some(3),
        ..JobSettings::default()
    };
    let err = |h| Copy {
        host: h,
        state: CopyState::Error("trap".into()),
    };
    let v = d(&[ok(1, 1), ok(2, 2), err(3)], &s);
    assert!(matches!(v, Verdict::Failed(r) if r.contains("max_total_results")));
    let v = d(&[err(1), err(2), err(3)], &JobSettings::default());
    assert!(matches!(v, Verdict::Failed(r) if r.contains("3 error results")));
}

#[test]
fn target_nresults_issues_extra_copies_up_front_and_replaces_errors() {
    let s = JobSettings {
        target_nresults: Some(3),
        ..JobSettings::default()
    };
    assert_eq!(d(&[], &s), Verdict::NeedCopies(3));
    let err = Copy {
        host: 1,
        state: CopyState::Error("trap".into()),
    };
    assert_eq!(
        d(&[err, running(2), running(3)], &s),
        Verdict::NeedCopies(1)
    );
    assert!(matches!(
        d(&[ok(1, 7), ok(2, 7), running(3)], &s),
        Verdict::Validated { .. }
    ));
}

#[test]
fn too_many_disagreeing_successes_fail_the_unit() {
    let s = JobSettings {
        max_success_results: Some(3),
        ..JobSettings::default()
    };
    let v = d(&[ok(1, 1), ok(2, 2), ok(3, 3)], &s);
    assert!(matches!(v, Verdict::Failed(r) if r.contains("max_success_results")));
}

#[test]
fn a_resumed_replica_agrees_on_output_and_credit_comes_from_an_exact_one() {
    let resumed = success(2, 7, 12, true);
    assert_eq!(
        d(&[resumed.clone(), ok(1, 7)], &JobSettings::default()),
        Verdict::Validated {
            output: Hash([7; 32]),
            fuel: 10,
            hosts: vec![2, 1]
        }
    );
    let wrong = success(3, 8, 10, true);
    assert_eq!(
        d(&[wrong, ok(1, 7)], &JobSettings::default()),
        Verdict::NeedCopies(1)
    );
}

#[test]
fn a_validator_may_accept_different_bytes_but_never_unequal_fuel() {
    let mut lenient = |_: &Hash, _: &Hash| true;
    let rules = Rules::of(&JobSettings::default());
    assert!(matches!(
        decide(&[ok(1, 7), ok(2, 8)], &rules, &mut lenient),
        Verdict::Validated { output, .. } if output == Hash([7; 32])
    ));
    let other_fuel = success(2, 8, 99, false);
    assert_eq!(
        decide(&[ok(1, 7), other_fuel], &rules, &mut lenient),
        Verdict::NeedCopies(1)
    );
}

#[test]
fn single_copy_rules_validate_one_result_and_voided_copies_count_for_nothing() {
    let rules = Rules::of(&JobSettings::default()).single();
    assert_eq!(decide(&[], &rules, &mut bitwise), Verdict::NeedCopies(1));
    assert!(matches!(
        decide(&[ok(1, 7)], &rules, &mut bitwise),
        Verdict::Validated { .. }
    ));
    let void = |h| Copy {
        host: h,
        state: CopyState::Voided("banned".into()),
    };
    let s = JobSettings {
        max_total_results: Some(2),
        ..JobSettings::default()
    };
    assert_eq!(d(&[void(1), void(2)], &s), Verdict::NeedCopies(2));
}
