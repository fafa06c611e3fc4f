//! Prints the adversarial simulation's table (docs/validation.md):
//! wrong rows and replication overhead for populations with cheaters,
//! colluders (across networks, or Sybils on one /24 asking back to back),
//! hoarders, fuel inflaters and flaky hosts, with and without adaptive
//! replication, after audits and repairs have run.
//!
//!     cargo bench -p peergrid-coordinator --bench adversary
//!     SIM_UNITS=100000 cargo bench -p peergrid-coordinator --bench adversary

use peergrid_coordinator::sim::{SimConfig, run};

fn main() {
    let units: u64 = std::env::var("SIM_UNITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let base = SimConfig {
        units,
        ..SimConfig::default()
    };
    let mut rows: Vec<(String, SimConfig)> = vec![
        ("honest".into(), base),
        (
            "20 % independent cheaters".into(),
            SimConfig {
                cheaters: 0.20,
                ..base
            },
        ),
        (
            "20 % cheaters + 10 % flaky (50 % lost)".into(),
            SimConfig {
                cheaters: 0.20,
                flaky: 0.10,
                ..base
            },
        ),
    ];
    for c in [0.05, 0.10, 0.20] {
        rows.push((
            format!("{:.0} % colluders", c * 100.0),
            SimConfig {
                colluders: c,
                ..base
            },
        ));
    }
    rows.push((
        "30 % Sybils on one /24, back to back".into(),
        SimConfig {
            colluders: 0.30,
            colluders_one_network: true,
            colluders_adjacent: true,
            ..base
        },
    ));
    rows.push((
        "10 % colluders back to back".into(),
        SimConfig {
            colluders: 0.10,
            colluders_adjacent: true,
            ..base
        },
    ));
    rows.push((
        "5 % hoarders + 10 % fuel inflaters".into(),
        SimConfig {
            hoarders: 0.05,
            inflaters: 0.10,
            ..base
        },
    ));
    rows.push((
        "20 % colluders, quorum 3".into(),
        SimConfig {
            colluders: 0.20,
            quorum: 3,
            ..base
        },
    ));
    println!(
        "{} hosts, {units} units, quorum 2 unless noted, one task per host per simulated second\n",
        base.hosts
    );
    println!(
        "| population | adaptive | validated | failed | wrong rows | wrong % | tasks per validated unit | single-copy units | rows repaired | credit beyond limit | most held by a hoarder |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, config) in rows {
        for adaptive in [false, true] {
            let out = run(&SimConfig { adaptive, ..config });
            println!(
                "| {name} | {} | {} | {} | {} | {:.3} | {:.3} | {} | {} | {} | {} |",
                if adaptive { "on" } else { "off" },
                out.validated,
                out.failed,
                out.wrong,
                100.0 * out.wrong as f64 / out.validated.max(1) as f64,
                out.tasks_per_unit(),
                out.single,
                out.reopened,
                out.credit_beyond_limit,
                out.hoarded,
            );
        }
    }
}
