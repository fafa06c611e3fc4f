//! The validation rule: a pure function from the results a unit has so far
//! to what happens next. No I/O, no clock; the [`crate::scheduler`] calls
//! it after every change to a unit.

use peergrid_proto::Hash;
use peergrid_proto::spec::JobSettings;

use crate::store::HostId;

/// The state of one copy of a work unit, as far as validation cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyState {
    /// Sent to the host, which may still report until `deadline_ms`.
    InProgress {
        deadline_ms: u64,
    },
    Success {
        output: Hash,
        fuel: u64,
        /// The engine configuration it ran under (names the architecture
        /// unless NaNs were canonicalized).
        engine: String,
    },
    Error(String),
    /// The deadline passed with no report.
    TimedOut,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    pub host: HostId,
    pub state: CopyState,
}

/// What to do with a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `quorum` hosts agree: `output` is canonical; `hosts` are all hosts
    /// whose output equals it.
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

/// Decides a unit's fate from its copies.
pub fn decide(copies: &[Copy], settings: &JobSettings) -> Verdict {
    // Largest group of successful copies that agree on the output bytes
    // *and* the fuel: the sandbox's fuel count is deterministic, so an
    // honest replica reports exactly the same figure and a host that
    // inflates its fuel (its credit) disagrees. Few copies per unit (at
    // most 64 by spec validation), so a quadratic scan is fine.
    let mut best: Option<(Hash, u64, Vec<HostId>)> = None;
    for c in copies {
        if let CopyState::Success { output, fuel, .. } = &c.state {
            let hosts: Vec<HostId> = copies
                .iter()
                .filter(|o| {
                    matches!(&o.state, CopyState::Success { output: h, fuel: f, .. } if h == output && f == fuel)
                })
                .map(|o| o.host)
                .collect();
            if best.as_ref().is_none_or(|(_, _, b)| hosts.len() > b.len()) {
                best = Some((*output, *fuel, hosts));
            }
        }
    }
    let best_len = best.as_ref().map_or(0, |(_, _, h)| h.len() as u32);
    if best_len >= settings.quorum {
        let (output, fuel, hosts) = best.expect("best_len > 0 implies a group");
        return Verdict::Validated {
            output,
            fuel,
            hosts,
        };
    }
    let errors = copies
        .iter()
        .filter(|c| matches!(c.state, CopyState::Error(_)))
        .count() as u32;
    if errors >= settings.max_error_results {
        let last = copies
            .iter()
            .rev()
            .find_map(|c| match &c.state {
                CopyState::Error(e) => Some(e.as_str()),
                _ => None,
            })
            .unwrap_or("");
        return Verdict::Failed(format!("{errors} error results; last: {last}"));
    }
    let in_progress = copies
        .iter()
        .filter(|c| matches!(c.state, CopyState::InProgress { .. }))
        .count() as u32;
    let issued = copies.len() as u32;
    let room = settings.max_total_results().saturating_sub(issued);
    let wanted = settings.quorum - best_len;
    let need = wanted.saturating_sub(in_progress).min(room);
    if need > 0 {
        return Verdict::NeedCopies(need);
    }
    if in_progress == 0 {
        return Verdict::Failed(format!(
            "no {} agreeing results after {issued} results (max_total_results)",
            settings.quorum
        ));
    }
    Verdict::Wait
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

    fn ok(host: HostId, out: u8) -> Copy {
        Copy {
            host,
            state: CopyState::Success {
                output: Hash([out; 32]),
                fuel: 10,
                engine: "e".into(),
            },
        }
    }
    fn running(host: HostId) -> Copy {
        Copy {
            host,
            state: CopyState::InProgress { deadline_ms: 0 },
        }
    }

    #[test]
    fn fresh_unit_needs_quorum_copies() {
        assert_eq!(decide(&[], &JobSettings::default()), Verdict::NeedCopies(2));
        assert_eq!(
            decide(&[running(1)], &JobSettings::default()),
            Verdict::NeedCopies(1)
        );
        assert_eq!(
            decide(&[running(1), running(2)], &JobSettings::default()),
            Verdict::Wait
        );
    }

    #[test]
    fn agreement_validates_and_disagreement_asks_for_a_tie_breaker() {
        let s = JobSettings::default();
        assert_eq!(
            decide(&[ok(1, 7), ok(2, 7)], &s),
            Verdict::Validated {
                output: Hash([7; 32]),
                fuel: 10,
                hosts: vec![1, 2]
            }
        );
        assert_eq!(decide(&[ok(1, 7), ok(2, 8)], &s), Verdict::NeedCopies(1));
        assert_eq!(
            decide(&[ok(1, 7), ok(2, 8), ok(3, 8)], &s),
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
        let inflated = Copy {
            host: 2,
            state: CopyState::Success {
                output: Hash([7; 32]),
                fuel: 11,
                engine: "e".into(),
            },
        };
        assert_eq!(decide(&[ok(1, 7), inflated], &s), Verdict::NeedCopies(1));
    }

    #[test]
    fn only_cross_engine_disagreement_asks_for_canonical_nans() {
        let on = |host, out: u8, engine: &str| Copy {
            host,
            state: CopyState::Success {
                output: Hash([out; 32]),
                fuel: 10,
                engine: engine.into(),
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
        let v = decide(&[ok(1, 1), ok(2, 2), ok(3, 3)], &s);
        assert!(matches!(v, Verdict::Failed(r) if r.contains("max_total_results")));
        let err = |h| Copy {
            host: h,
            state: CopyState::Error("trap".into()),
        };
        let v = decide(&[err(1), err(2), err(3)], &JobSettings::default());
        assert!(matches!(v, Verdict::Failed(r) if r.contains("3 error results")));
    }
}
