//! Simulated misbehaviour, for the end-to-end tests of the coordinator's
//! validation (`peergrid-worker run --simulate-fault`).
//!
//! Compiled only with the `simulate-fault` feature, which `scripts/test`
//! turns on when it builds the binaries the tests start: the binary
//! volunteers install has no cheat modes.

use peergrid_proto::wire::{Outcome, Task, TaskReport};

/// A way to misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Report a plausible but wrong output for every successful task.
    WrongOutput,
    /// Behave like an honest host on another CPU architecture whose NaN
    /// bit patterns differ: a different engine id and, unless NaNs are
    /// canonicalized, a different output.
    ForeignArch,
    /// Report a billion more fuel than the task used, to claim credit.
    InflateFuel,
}

impl Fault {
    /// What a host with this fault reports instead of the honest `report`
    /// of `task`. Failed tasks are reported as they are.
    pub(super) fn tamper(self, task: &Task, mut report: TaskReport) -> TaskReport {
        if let Outcome::Success(out) = &mut report.outcome {
            match self {
                Fault::WrongOutput => out.extend_from_slice(b" (tampered)"),
                Fault::ForeignArch if !task.canonical_nan => {
                    report.engine = format!("{}/simulated-foreign-arch", report.engine);
                    out.extend_from_slice(b" (foreign NaN bits)");
                }
                Fault::ForeignArch => {}
                Fault::InflateFuel => {
                    report.fuel_used = report.fuel_used.saturating_add(1_000_000_000)
                }
            }
        }
        report
    }
}
