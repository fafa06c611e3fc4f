//! The validation rule: a pure function from the results a unit has so far
//! to what happens next. No I/O, no clock; the [`crate::scheduler`] calls
//! it after every change to a unit.

use peergrid_proto::Hash;
use peergrid_proto::spec::JobSettings;

pub use crate::model::{Copy, CopyState, HostId};

/// What to do with a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `quorum` hosts agree: `output` is canonical; `hosts` are all hosts
    /// whose output agrees with it.
    Validated {
        output: Hash,
        fuel: u64,
        hosts: Vec<HostId>,
    },
    /// The unit can never be validated within its caps.
    Failed(String),
    /// Issue this many more copies now.
    NeedCopies(u32),
    /// Enough copies are out; wait for their reports.
    Wait,
}

/// The redundancy rules of one unit: its job's settings, or a trusted
/// host's single-copy exception (adaptive replication).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub quorum: u32,
    pub target: u32,
    pub max_total: u32,
    pub max_error: u32,
    pub max_success: u32,
}

impl Rules {
    pub fn of(settings: &JobSettings) -> Rules {
        Rules {
            quorum: settings.quorum,
            target: settings.target_nresults(),
            max_total: settings.max_total_results(),
            max_error: settings.max_error_results,
            max_success: settings.max_success_results(),
        }
    }

    /// One result is enough: the unit went to a trusted host.
    pub fn single(self) -> Rules {
        Rules {
            quorum: 1,
            target: 1,
            ..self
        }
    }

    /// An audit disagreed with the validated output: one more agreeing
    /// result than the quorum decides between them, with room for the
    /// copies that takes.
    pub fn disputed(self) -> Rules {
        Rules {
            quorum: self.quorum + 1,
            target: self.target.max(self.quorum + 1),
            max_total: self.max_total + 2,
            max_success: self.max_success + 2,
            ..self
        }
    }
}

/// Whether two output hashes agree under the job's validator. Identical
/// hashes always agree and are never asked about.
pub type Agree<'a> = dyn FnMut(&Hash, &Hash) -> bool + 'a;

struct Success<'c> {
    host: HostId,
    output: &'c Hash,
    fuel: u64,
    resumed: bool,
}

/// Decides a unit's fate from its copies.
pub fn decide(copies: &[Copy], rules: &Rules, agree: &mut Agree<'_>) -> Verdict {
    let successes: Vec<Success<'_>> = copies
        .iter()
        .filter_map(|c| match &c.state {
            CopyState::Success {
                output,
                fuel,
                resumed,
                ..
            } => Some(Success {
                host: c.host,
                output,
                fuel: *fuel,
                resumed: *resumed,
            }),
            _ => None,
        })
        .collect();
    // Largest group of results that agree with one of them on the output
    // *and* the fuel: the sandbox's fuel count is deterministic, so an
    // honest replica reports exactly the same figure and a host that
    // inflates its fuel (its credit) disagrees. Few copies per unit (at
    // most 64 by spec validation), so a quadratic scan is fine.
    let mut best: Option<(usize, Vec<usize>)> = None;
    for (i, c) in successes.iter().enumerate() {
        let group: Vec<usize> = successes
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                (o.fuel == c.fuel || o.resumed || c.resumed)
                    && (o.output == c.output || agree(c.output, o.output))
            })
            .map(|(j, _)| j)
            .collect();
        let better = match &best {
            None => true,
            Some((b, g)) => {
                group.len() > g.len()
                    || (group.len() == g.len() && successes[*b].resumed && !c.resumed)
            }
        };
        if better {
            best = Some((i, group));
        }
    }
    let best_len = best.as_ref().map_or(0, |(_, g)| g.len() as u32);
    if let Some((canonical, group)) = best
        && best_len >= rules.quorum
    {
        // Credit is the fuel of a result that was not resumed, when the
        // group has one: only those figures are exact.
        let fuel = group
            .iter()
            .map(|&j| &successes[j])
            .find(|s| !s.resumed)
            .map(|s| s.fuel)
            .unwrap_or_else(|| group.iter().map(|&j| successes[j].fuel).min().unwrap_or(0));
        return Verdict::Validated {
            output: *successes[canonical].output,
            fuel,
            hosts: group.iter().map(|&j| successes[j].host).collect(),
        };
    }
    let count = |f: fn(&CopyState) -> bool| copies.iter().filter(|c| f(&c.state)).count() as u32;
    let errors = count(|s| matches!(s, CopyState::Error(_)));
    if errors >= rules.max_error {
        let last = copies
            .iter()
            .rev()
            .find_map(|c| match &c.state {
                CopyState::Error(e) => Some(e.as_str()),
                _ => None,
            })
            .unwrap_or("");
        return Verdict::Failed(format!(
            "{errors} error results (max_error_results); last: {last}"
        ));
    }
    let succeeded = successes.len() as u32;
    if succeeded >= rules.max_success {
        return Verdict::Failed(format!(
            "{succeeded} successful results without {} agreeing (max_success_results)",
            rules.quorum
        ));
    }
    let in_progress = count(|s| matches!(s, CopyState::InProgress { .. }));
    let issued = count(|s| !matches!(s, CopyState::Voided(_)));
    let room = rules.max_total.saturating_sub(issued);
    let wanted = (rules.quorum - best_len).max(rules.target.saturating_sub(succeeded));
    let need = wanted.saturating_sub(in_progress).min(room);
    if need > 0 {
        return Verdict::NeedCopies(need);
    }
    if in_progress == 0 {
        return Verdict::Failed(format!(
            "no {} agreeing results after {issued} results (max_total_results)",
            rules.quorum
        ));
    }
    Verdict::Wait
}

/// Bitwise agreement: only identical outputs agree.
pub fn bitwise(_: &Hash, _: &Hash) -> bool {
    false
}

/// Whether the unit's replicas must be re-run with canonical NaNs:
/// two successful copies disagree *and* ran under different engine
/// configurations (architectures). Only then can NaN bit patterns, not a
/// wrong host, explain the difference; re-runs with canonicalization are
/// comparable on every architecture, so a correct result is never
/// rejected for good. Agreement stays bitwise, so a wrong result is never
/// accepted because of this rule.
pub fn needs_canonical_nan(copies: &[Copy]) -> bool {
    let successes: Vec<(&Hash, &u64, &String)> = copies
        .iter()
        .filter_map(|c| match &c.state {
            CopyState::Success {
                output,
                fuel,
                engine,
                ..
            } => Some((output, fuel, engine)),
            _ => None,
        })
        .collect();
    successes.iter().enumerate().any(|(i, a)| {
        successes[i + 1..]
            .iter()
            .any(|b| (a.0, a.1) != (b.0, b.1) && a.2 != b.2)
    })
}

#[cfg(test)]
mod tests;
