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
    // Quorum 2, plus the 2 % of validated units audited.
    assert!((2.0..2.05).contains(&plain.tasks_per_unit()), "{plain:?}");
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

/// Colluders each on their own network (a swarm across networks) pair up
/// now and then while no host is established; every such forged row is
/// reopened once a colluder is caught against an honest host, and no
/// forged row is left when the run ends.
#[test]
fn colluding_swarms_are_caught_and_their_rows_repaired() {
    for adaptive in [false, true] {
        let out = run(&SimConfig {
            units: 10_000,
            colluders: 0.10,
            adaptive,
            ..SimConfig::default()
        });
        assert!(
            out.reopened > 0,
            "the simulation does model collusion: {out:?}"
        );
        assert_eq!(out.wrong, 0, "adaptive {adaptive}: {out:?}");
        assert_eq!(out.unfinished, 0, "{out:?}");
    }
}

/// Any number of identities on one /24, asking back to back: never two
/// copies of a unit on that network, so never a forged row.
#[test]
fn sybils_on_one_network_never_validate_a_forgery() {
    for adaptive in [false, true] {
        let out = run(&SimConfig {
            units: 10_000,
            colluders: 0.30,
            colluders_one_network: true,
            colluders_adjacent: true,
            adaptive,
            ..SimConfig::default()
        });
        assert_eq!(out.wrong, 0, "{out:?}");
        assert_eq!(out.reopened, 0, "nothing forged even for a while: {out:?}");
        assert_eq!(out.unfinished, 0, "{out:?}");
    }
}

/// Hoarders claim a thousand cores and never report: each holds at most a
/// young host's share; fuel inflaters earn no credit beyond the limit.
#[test]
fn hoarders_are_capped_and_inflated_fuel_is_never_credited() {
    let out = run(&SimConfig {
        units: 5_000,
        hoarders: 0.05,
        inflaters: 0.10,
        adaptive: true,
        ..SimConfig::default()
    });
    assert!(out.hoarded > 0 && out.hoarded <= 16, "{out:?}");
    assert_eq!(out.credit_beyond_limit, 0, "{out:?}");
    assert_eq!(out.wrong, 0, "{out:?}");
    assert_eq!(out.unfinished, 0, "{out:?}");
}
