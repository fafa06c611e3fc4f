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
mod tests {
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
}
