//! An adversarial simulation of a volunteer population, driving the real
//! [`Scheduler`] (no network, no store: its decisions are pure) through
//! simulated time. Used by `coordinator/tests/adversary.rs`, which checks
//! what must never happen, and `coordinator/benches/adversary.rs`, which
//! prints the figures in `docs/validation.md`.
//!
//! Hosts are honest, independent cheaters (each wrong answer their own),
//! colluders (every colluder returns the same wrong answer for a unit, so
//! two of them agree: one party's many identities), flaky (they never
//! report a share of their tasks), hoarders (they claim a thousand cores,
//! ask for as much as they are allowed and never report) or fuel
//! inflaters (right answers, fuel claimed far above the task's limit).
//! Each host has an IPv4 address: honest hosts each on their own /24;
//! colluders on one /24 (a Sybil pair or swarm on one machine or network)
//! or each on its own (a swarm across networks). Each round every host, in
//! a random order (colluders back to back when they pair by timing),
//! reports what it finished and asks for one task; a second of simulated
//! time passes.

use peergrid_proto::Hash;
use peergrid_proto::spec::JobSettings;
use peergrid_proto::wire::UnitId;

use std::collections::HashMap;

use crate::model::{HostId, JobInfo, LoadedUnit, StoreOp};
use crate::quorum::{Copy, CopyState};
use crate::scheduler::Scheduler;
use crate::trust::{HostPolicy, SplitMix64, Standing};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimConfig {
    pub hosts: u32,
    pub units: u64,
    /// Shares of the population (the rest is honest).
    pub cheaters: f64,
    pub colluders: f64,
    pub flaky: f64,
    pub hoarders: f64,
    pub inflaters: f64,
    /// Share of its tasks a flaky host never reports.
    pub flaky_loss: f64,
    /// Colluders share one /24 instead of each having its own network.
    pub colluders_one_network: bool,
    /// Colluders ask back to back in every round (request-timing pairing).
    pub colluders_adjacent: bool,
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
            hoarders: 0.0,
            inflaters: 0.0,
            flaky_loss: 0.5,
            colluders_one_network: false,
            colluders_adjacent: false,
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
    /// Credit granted beyond the task's fuel limit (per grant, summed;
    /// a single copy's counted when it validates, before its check).
    pub credit_beyond_limit: u64,
    /// Most copies one hoarder held at once.
    pub hoarded: u64,
    /// Dataset rows reopened by repairs and disputes (counted again when
    /// they validate anew).
    pub reopened: u64,
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
    Hoarder,
    Inflater,
}

fn truth(unit: UnitId) -> Hash {
    Hash::of(&unit.to_le_bytes())
}

const FUEL: u64 = 1_000_000;
/// The fuel limit of the simulated job's tasks.
const FUEL_LIMIT: u64 = 10 * FUEL;
const DEADLINE_SECS: u64 = 60;
/// Simulated time after which a run gives up.
const MAX_SECONDS: u64 = 7 * 86_400;

fn set_copy(copies: &mut HashMap<UnitId, Vec<Copy>>, unit: UnitId, host: HostId, state: CopyState) {
    if let Some(c) = copies
        .get_mut(&unit)
        .and_then(|cs| cs.iter_mut().find(|c| c.host == host))
    {
        c.state = state;
    }
}

/// Takes a reopened unit's row out of the tallies.
fn unvalidate(
    out: &mut SimOutcome,
    rows: &mut HashMap<UnitId, Vec<HostId>>,
    outputs: &mut HashMap<UnitId, Hash>,
    unit: UnitId,
) {
    if let Some(hosts) = rows.remove(&unit) {
        out.validated -= 1;
        if hosts.len() == 1 {
            out.single -= 1;
        }
    }
    if outputs.remove(&unit).is_some_and(|o| o != truth(unit)) {
        out.wrong -= 1;
    }
}

/// Runs one simulated population until every unit is validated or failed.
pub fn run(config: &SimConfig) -> SimOutcome {
    let mut rng = SplitMix64(config.seed);
    let settings = JobSettings {
        quorum: config.quorum,
        deadline_secs: DEADLINE_SECS,
        adaptive_replication: config.adaptive,
        fuel: FUEL_LIMIT,
        ..JobSettings::default()
    };
    // Simulated hosts ask once a second, so identities come of age in a
    // simulated minute rather than a day.
    let policy = HostPolicy {
        established_age_ms: 60_000,
        established_idle_ms: 60_000,
        ..HostPolicy::default()
    };
    let mut s = Scheduler::with(policy, config.seed);
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
                number: id,
                input: Vec::new(),
                input_hash: Hash::of(&[]),
                input_len: 0,
                copies: Vec::new(),
                single: false,
                disputed: false,
            },
            0,
        );
    }
    let n = config.hosts as usize;
    let cut = |share: f64| (share * n as f64).round() as usize;
    let mut kinds = Vec::with_capacity(n);
    for (kind, share) in [
        (Kind::Cheater, config.cheaters),
        (Kind::Colluder, config.colluders),
        (Kind::Flaky, config.flaky),
        (Kind::Hoarder, config.hoarders),
        (Kind::Inflater, config.inflaters),
    ] {
        kinds.extend(std::iter::repeat_n(kind, cut(share)));
    }
    kinds.resize(n, Kind::Honest);
    kinds.truncate(n);
    for (i, kind) in kinds.iter().enumerate() {
        let host = i as HostId + 1;
        let (cores, addr) = match kind {
            Kind::Hoarder => (u32::MAX, [10, 200, 0, i as u8]),
            Kind::Colluder if config.colluders_one_network => (1, [192, 0, 2, i as u8]),
            _ => (1, [10, (i >> 8) as u8, i as u8, 1]),
        };
        let mut standing = Standing::new(format!("volunteer-{host}"), cores, &policy);
        standing.addr = Some(std::net::IpAddr::from(addr));
        s.host_joined(host, standing);
    }
    let mut held: Vec<Vec<UnitId>> = vec![Vec::new(); n];
    let mut out = SimOutcome::default();
    let mut finished = 0u64;
    let mut order: Vec<usize> = (0..n).collect();
    let mut now_ms = 0u64;
    // What the store would hold: every unit's copies, the dataset's rows
    // and the rows each host helped validate, so repairs and disputes
    // reopen units as the real store does.
    let mut copies: HashMap<UnitId, Vec<Copy>> = HashMap::new();
    let mut rows: HashMap<UnitId, Vec<HostId>> = HashMap::new();
    let mut by_host: HashMap<HostId, Vec<UnitId>> = HashMap::new();
    let mut outputs: HashMap<UnitId, Hash> = HashMap::new();
    // Until every unit is finished and every audit has run.
    while (finished < config.units || s.active_units() > 0) && now_ms < MAX_SECONDS * 1000 {
        // Fisher-Yates: a fresh random order of hosts every round.
        for i in (1..n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        if config.colluders_adjacent {
            // Colluders go one right after another, where the first is.
            let first = order.iter().position(|&i| kinds[i] == Kind::Colluder);
            let (colluders, mut rest): (Vec<usize>, Vec<usize>) =
                order.iter().partition(|&&i| kinds[i] == Kind::Colluder);
            let at = first.unwrap_or(0).min(rest.len());
            rest.splice(at..at, colluders);
            order = rest;
        }
        for &i in &order {
            let host = i as HostId + 1;
            if kinds[i] == Kind::Hoarder {
                let got = s.assign(host, u32::MAX, usize::MAX, now_ms);
                out.hoarded = out.hoarded.max(s.in_flight(host) as u64);
                drop(got);
                continue;
            }
            for unit in std::mem::take(&mut held[i]) {
                let output = match kinds[i] {
                    Kind::Honest | Kind::Inflater | Kind::Hoarder => truth(unit),
                    Kind::Flaky if rng.unit() < config.flaky_loss => continue,
                    Kind::Flaky => truth(unit),
                    Kind::Cheater => Hash::of(&[unit.to_le_bytes(), host.to_le_bytes()].concat()),
                    Kind::Colluder => Hash::of(&[&unit.to_le_bytes()[..], b"collude"].concat()),
                };
                let fuel = match kinds[i] {
                    Kind::Inflater => 4_000_000_000_000_000_000,
                    _ => FUEL,
                };
                let state = CopyState::Success {
                    output,
                    fuel,
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
                StoreOp::Assign {
                    unit,
                    host,
                    deadline_ms,
                    ..
                } => {
                    out.issued += 1;
                    copies.entry(unit).or_default().push(Copy {
                        host,
                        state: CopyState::InProgress { deadline_ms },
                    });
                }
                StoreOp::Report {
                    unit, host, state, ..
                } => set_copy(&mut copies, unit, host, state),
                StoreOp::TimedOut { unit, host } => {
                    set_copy(&mut copies, unit, host, CopyState::TimedOut)
                }
                StoreOp::Void { unit, host, reason } => {
                    set_copy(&mut copies, unit, host, CopyState::Voided(reason))
                }
                StoreOp::Validate {
                    unit,
                    output,
                    hosts,
                    fuel,
                    ..
                } => {
                    let beyond = fuel.saturating_sub(FUEL_LIMIT);
                    out.credit_beyond_limit = out
                        .credit_beyond_limit
                        .saturating_add(beyond.saturating_mul(hosts.len() as u64));
                    out.validated += 1;
                    finished += 1;
                    if output != truth(unit) {
                        out.wrong += 1;
                    }
                    if hosts.len() == 1 {
                        out.single += 1;
                    }
                    for h in &hosts {
                        by_host.entry(*h).or_default().push(unit);
                    }
                    rows.insert(unit, hosts);
                    outputs.insert(unit, output);
                }
                StoreOp::Fail { .. } => {
                    out.failed += 1;
                    finished += 1;
                }
                StoreOp::Repair { host, reason, .. } => {
                    for unit in by_host.remove(&host).unwrap_or_default() {
                        if !rows.get(&unit).is_some_and(|h| h.contains(&host)) {
                            continue;
                        }
                        unvalidate(&mut out, &mut rows, &mut outputs, unit);
                        finished -= 1;
                        out.reopened += 1;
                        set_copy(&mut copies, unit, host, CopyState::Voided(reason.clone()));
                        let unit_copies = copies.get(&unit).cloned().unwrap_or_default();
                        s.load(
                            LoadedUnit {
                                id: unit,
                                job: 1,
                                number: unit,
                                input: Vec::new(),
                                input_hash: Hash::of(&[]),
                                input_len: 0,
                                copies: unit_copies,
                                single: false,
                                disputed: false,
                            },
                            now_ms,
                        );
                    }
                }
                StoreOp::Dispute { unit, .. } => {
                    // The unit is still in the scheduler's window.
                    unvalidate(&mut out, &mut rows, &mut outputs, unit);
                    finished -= 1;
                    out.reopened += 1;
                }
                _ => {}
            }
        }
    }
    out.unfinished = config.units - finished;
    out.seconds = now_ms / 1000;
    out
}
