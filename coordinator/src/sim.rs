//! An adversarial simulation of a volunteer population, driving the real
//! [`Scheduler`] (no network, no store: its decisions are pure) through
//! simulated time. Used by `coordinator/tests/adversary.rs`, which checks
//! what must never happen, and `coordinator/benches/adversary.rs`, which
//! prints the figures in `docs/validation.md`.
//!
//! Hosts are honest, independent cheaters (each wrong answer their own),
//! colluders (every colluder returns the same wrong answer for a unit, so
//! two of them agree), or flaky (they never report a share of their
//! tasks). Each round every host, in a random order, reports what it
//! finished and asks for one task; a second of simulated time passes.

use peergrid_proto::Hash;
use peergrid_proto::spec::JobSettings;
use peergrid_proto::wire::UnitId;

use crate::quorum::CopyState;
use crate::scheduler::Scheduler;
use crate::store::{HostId, JobInfo, LoadedUnit, StoreOp};
use crate::trust::{QuotaPolicy, SplitMix64, Standing};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimConfig {
    pub hosts: u32,
    pub units: u64,
    /// Shares of the population (the rest is honest).
    pub cheaters: f64,
    pub colluders: f64,
    pub flaky: f64,
    /// Share of its tasks a flaky host never reports.
    pub flaky_loss: f64,
    pub quorum: u32,
    pub adaptive: bool,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            hosts: 200,
            units: 20_000,
            cheaters: 0.0,
            colluders: 0.0,
            flaky: 0.0,
            flaky_loss: 0.5,
            quorum: 2,
            adaptive: false,
            seed: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SimOutcome {
    pub validated: u64,
    /// Validated units whose canonical output is wrong.
    pub wrong: u64,
    pub failed: u64,
    /// Units neither validated nor failed when the simulation stopped.
    pub unfinished: u64,
    /// Copies sent, of every unit.
    pub issued: u64,
    /// Validated units that ran as a single copy on a trusted host.
    pub single: u64,
    /// Simulated seconds until every unit finished.
    pub seconds: u64,
}

impl SimOutcome {
    /// Copies sent per validated unit: 2.0 is plain quorum-2 replication,
    /// 1.0 no redundancy at all.
    pub fn tasks_per_unit(&self) -> f64 {
        self.issued as f64 / self.validated.max(1) as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Honest,
    Cheater,
    Colluder,
    Flaky,
}

fn truth(unit: UnitId) -> Hash {
    Hash::of(&unit.to_le_bytes())
}

const FUEL: u64 = 1_000_000;
const DEADLINE_SECS: u64 = 60;
/// Simulated time after which a run gives up.
const MAX_SECONDS: u64 = 7 * 86_400;

/// Runs one simulated population until every unit is validated or failed.
pub fn run(config: &SimConfig) -> SimOutcome {
    let mut rng = SplitMix64(config.seed);
    let settings = JobSettings {
        quorum: config.quorum,
        deadline_secs: DEADLINE_SECS,
        adaptive_replication: config.adaptive,
        ..JobSettings::default()
    };
    let policy = QuotaPolicy::default();
    let mut s = Scheduler::with(policy, Box::new(crate::scheduler::BitwiseOnly), config.seed);
    s.add_job(JobInfo {
        id: 1,
        name: "sim".into(),
        module: Hash([0; 32]),
        args: vec![],
        settings,
        signature: peergrid_proto::signing::ModuleSignature {
            endorsement: peergrid_proto::signing::Endorsement {
                researcher_key: String::new(),
                name: "sim".into(),
                project_signature: String::new(),
            },
            signature: String::new(),
        },
        validator: Default::default(),
    });
    for id in 1..=config.units {
        s.load(
            LoadedUnit {
                id,
                job: 1,
                input: Vec::new(),
                copies: Vec::new(),
                single: false,
            },
            0,
        );
    }
    let n = config.hosts as usize;
    let cut = |share: f64| (share * n as f64).round() as usize;
    let (c1, c2, c3) = (
        cut(config.cheaters),
        cut(config.cheaters) + cut(config.colluders),
        cut(config.cheaters) + cut(config.colluders) + cut(config.flaky),
    );
    let kinds: Vec<Kind> = (0..n)
        .map(|i| match i {
            i if i < c1 => Kind::Cheater,
            i if i < c2 => Kind::Colluder,
            i if i < c3 => Kind::Flaky,
            _ => Kind::Honest,
        })
        .collect();
    for (i, _) in kinds.iter().enumerate() {
        let host = i as HostId + 1;
        s.host_joined(host, Standing::new(format!("volunteer-{host}"), 1, &policy));
    }
    let mut held: Vec<Vec<UnitId>> = vec![Vec::new(); n];
    let mut out = SimOutcome::default();
    let mut finished = 0u64;
    let mut order: Vec<usize> = (0..n).collect();
    let mut now_ms = 0u64;
    while finished < config.units && now_ms < MAX_SECONDS * 1000 {
        // Fisher-Yates: a fresh random order of hosts every round.
        for i in (1..n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &i in &order {
            let host = i as HostId + 1;
            for unit in std::mem::take(&mut held[i]) {
                let output = match kinds[i] {
                    Kind::Honest => truth(unit),
                    Kind::Flaky if rng.unit() < config.flaky_loss => continue,
                    Kind::Flaky => truth(unit),
                    Kind::Cheater => Hash::of(&[unit.to_le_bytes(), host.to_le_bytes()].concat()),
                    Kind::Colluder => Hash::of(&[&unit.to_le_bytes()[..], b"collude"].concat()),
                };
                let state = CopyState::Success {
                    output,
                    fuel: FUEL,
                    engine: "sim".into(),
                    resumed: false,
                };
                let _ = s.report(host, unit, state, 1000, now_ms);
            }
            for t in s.assign(host, 1, usize::MAX, now_ms) {
                held[i].push(t.unit);
            }
        }
        now_ms += 1000;
        s.expire(now_ms);
        for op in s.take_ops() {
            match op {
                StoreOp::Assign { .. } => out.issued += 1,
                StoreOp::Validate {
                    unit,
                    output,
                    hosts,
                    ..
                } => {
                    out.validated += 1;
                    finished += 1;
                    if output != truth(unit) {
                        out.wrong += 1;
                    }
                    if hosts.len() == 1 {
                        out.single += 1;
                    }
                }
                StoreOp::Fail { .. } => {
                    out.failed += 1;
                    finished += 1;
                }
                _ => {}
            }
        }
    }
    out.unfinished = config.units - finished;
    out.seconds = now_ms / 1000;
    out
}
