//! The adversarial simulation's guarantees (figures: `cargo bench -p
//! peergrid-coordinator --bench adversary`, recorded in docs/validation.md).

use peergrid_coordinator::sim::{SimConfig, run};

#[test]
fn independent_cheaters_never_reach_the_dataset() {
    for seed in 1..=3 {
        let out = run(&SimConfig {
            units: 5_000,
            cheaters: 0.20,
            flaky: 0.10,
            seed,
            ..SimConfig::default()
        });
        assert_eq!(out.wrong, 0, "seed {seed}: {out:?}");
        assert_eq!(out.unfinished, 0, "seed {seed}: every unit ends: {out:?}");
        assert_eq!(out.validated + out.failed, 5_000);
        assert!(out.failed < 50, "seed {seed}: few units fail: {out:?}");
    }
}

#[test]
fn adaptive_replication_cuts_redundancy_for_an_honest_population() {
    let base = SimConfig {
        units: 20_000,
        ..SimConfig::default()
    };
    let plain = run(&base);
    let adaptive = run(&SimConfig {
        adaptive: true,
        ..base
    });
    assert_eq!(plain.wrong + adaptive.wrong, 0);
    assert_eq!(plain.validated, 20_000);
    assert_eq!(adaptive.validated, 20_000);
    assert!((plain.tasks_per_unit() - 2.0).abs() < 1e-9, "{plain:?}");
    assert!(
        adaptive.tasks_per_unit() < 1.5,
        "trusted hosts run most units alone: {adaptive:?}"
    );
    assert!(adaptive.single > 10_000, "{adaptive:?}");
}

#[test]
fn adaptive_replication_keeps_catching_cheaters() {
    let out = run(&SimConfig {
        units: 10_000,
        cheaters: 0.20,
        adaptive: true,
        ..SimConfig::default()
    });
    assert_eq!(out.wrong, 0, "a cheater never earns trust: {out:?}");
    assert_eq!(out.unfinished, 0);
}

#[test]
fn colluders_get_in_only_when_they_pair_up() {
    let out = run(&SimConfig {
        units: 10_000,
        colluders: 0.10,
        ..SimConfig::default()
    });
    // Quorum 2 without adaptive replication: a wrong row needs both copies
    // on colluders, about 1 % of units at 10 % collusion; far fewer once
    // their losses against honest hosts shrink their quota.
    assert!(
        out.wrong > 0,
        "the simulation does model collusion: {out:?}"
    );
    assert!(out.wrong < 200, "{out:?}");
}
