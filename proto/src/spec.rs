//! The researcher's job spec (a TOML file) and the submission the CLI
//! makes of it once module and inputs are uploaded.
//!
//! ```toml
//! name = "lyapunov"
//! module = "lyapunov.wasm"          # relative to the spec file
//! args = ["--iterations", "4000"]
//! quorum = 2
//! deadline_secs = 300
//! memory_mb = 64
//! fuel = 50_000_000_000
//! # metering = "fixed"             # no fuel counted; then, per unit:
//! # credit = 40_000_000_000
//!
//! [inputs]
//! dir = "inputs"                    # one work unit per file, or:
//! # jsonl = "inputs.jsonl"          # one work unit per line
//!
//! [validator]                       # optional; bitwise by default
//! kind = "tolerance"                # or "bitwise", or "custom"
//! abs_epsilon = 1e-12
//! rel_epsilon = 1e-9
//! # kind = "custom"
//! # module = "compare.wasm"         # a WASI command, see docs/validation.md
//!
//! license = "CC-BY-4.0"             # optional: the dataset's SPDX licence
//! [citation]                        # optional: how to cite the dataset
//! authors = ["Lovelace, Ada"]
//! doi = "10.5281/zenodo.1234567"
//! ```
//!
//! The redundancy settings carry BOINC's names and meanings
//! (`min_quorum`, `target_nresults`, `max_error_results`,
//! `max_total_results`, `max_success_results`, `delay_bound`); `quorum`
//! and `deadline_secs` are accepted for the first and the last.

use serde::{Deserialize, Serialize};

pub mod plot;

pub use plot::{Plot, PlotKind, validate_plots};

use crate::Hash;
use crate::citation::{Citation, DatasetTerms, TermsError};
use crate::limits::{MAX_ARG_LEN, MAX_ARGS, MAX_TASK_FUEL, MAX_TASK_MEMORY, MAX_UNITS_PER_JOB};

/// A job spec as written by a researcher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    /// Path of the wasm32-wasip1 command module, relative to the spec file.
    pub module: String,
    pub inputs: InputSpec,
    #[serde(default)]
    pub args: Vec<String>,
    /// The dataset's licence: an SPDX expression ([`crate::citation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// How to cite the dataset (the `[citation]` table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citation: Option<Citation>,
    #[serde(flatten)]
    pub settings: JobSettings,
    /// How replicas are compared; `module` of a custom validator is a path
    /// relative to the spec file.
    #[serde(default)]
    pub validator: Validator<String>,
    /// Figures of the outputs drawn on the job's page (`[[plot]]`).
    #[serde(default, rename = "plot", skip_serializing_if = "Vec::is_empty")]
    pub plots: Vec<Plot>,
}

/// How two replicas' outputs are judged to agree. Identical bytes always
/// agree; the validator decides the rest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Validator<M = Hash> {
    /// Byte-for-byte equality: the default, and sound because the sandbox
    /// is deterministic.
    #[default]
    Bitwise,
    /// Both outputs are JSON; numbers agree when within `abs_epsilon` or
    /// within `rel_epsilon` of the larger magnitude, everything else
    /// (array lengths, object keys, strings) must be equal.
    Tolerance {
        #[serde(default)]
        abs_epsilon: f64,
        #[serde(default)]
        rel_epsilon: f64,
    },
    /// The researcher's own comparison, a wasm module run by the
    /// coordinator under the job's sandbox limits.
    Custom { module: M },
}

impl<M> Validator<M> {
    pub fn is_bitwise(&self) -> bool {
        matches!(self, Validator::Bitwise)
    }

    /// The same validator with its module reference mapped.
    pub fn map_module<N>(self, f: impl FnOnce(M) -> N) -> Validator<N> {
        match self {
            Validator::Bitwise => Validator::Bitwise,
            Validator::Tolerance {
                abs_epsilon,
                rel_epsilon,
            } => Validator::Tolerance {
                abs_epsilon,
                rel_epsilon,
            },
            Validator::Custom { module } => Validator::Custom { module: f(module) },
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if let Validator::Tolerance {
            abs_epsilon,
            rel_epsilon,
        } = self
        {
            let ok = |e: &f64| e.is_finite() && *e >= 0.0;
            if !ok(abs_epsilon) || !ok(rel_epsilon) {
                return Err(invalid(
                    "validator",
                    "epsilons must be finite and not negative",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// A folder whose files are the work units, in name order.
    pub dir: Option<String>,
    /// A JSON-lines file, each non-empty line a work unit.
    pub jsonl: Option<String>,
}

/// How a job is run and validated. Field meanings follow BOINC's
/// work-unit parameters of the same names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Agreeing results (from distinct hosts) needed to accept a unit
    /// (BOINC's `min_quorum`).
    #[serde(default = "defaults::quorum", alias = "min_quorum")]
    pub quorum: u32,
    /// Copies issued at first (default: `quorum`); more than the quorum
    /// hedges against slow or failing hosts.
    #[serde(default)]
    pub target_nresults: Option<u32>,
    /// Most copies of one unit ever issued before it is failed.
    #[serde(default)]
    pub max_total_results: Option<u32>,
    /// Most error results of one unit before it is failed.
    #[serde(default = "defaults::max_error_results")]
    pub max_error_results: u32,
    /// Most successful results without a quorum before the unit is failed
    /// (the outputs keep disagreeing). Default: `max_total_results`.
    #[serde(default)]
    pub max_success_results: Option<u32>,
    /// Seconds a host has to return a task (BOINC's `delay_bound`).
    #[serde(default = "defaults::deadline_secs", alias = "delay_bound")]
    pub deadline_secs: u64,
    /// Seconds after the deadline before a copy counts as timed out and
    /// is reissued; a report within the grace counts as on time. Reports
    /// later still count while the unit is unfinished.
    #[serde(default)]
    pub grace_secs: u64,
    /// Copies of one unit go to distinct volunteer accounts, not only to
    /// distinct hosts (anonymous hosts each count as their own volunteer).
    #[serde(default)]
    pub distinct_volunteers: bool,
    /// Let a trusted host's unit run as a single copy (BOINC's adaptive
    /// replication; see docs/validation.md).
    #[serde(default)]
    pub adaptive_replication: bool,
    /// Linear memory cap per task, in MiB.
    #[serde(default = "defaults::memory_mb")]
    pub memory_mb: u64,
    /// Fuel (roughly, wasm instructions) per task: the deterministic cap
    /// of a `fuel`-metered job (ignored by a `fixed` one).
    #[serde(default = "defaults::fuel")]
    pub fuel: u64,
    /// How tasks are metered: `fuel` (the default) counts instructions in
    /// the generated code, `fixed` counts nothing and grants `credit`.
    /// Left out when `fuel`, so a spec or submission without it reads as
    /// before on older coordinators and clients.
    #[serde(default, skip_serializing_if = "Metering::is_fuel")]
    pub metering: Metering,
    /// Credit granted per validated unit of a `fixed` job, in fuel's unit
    /// (about one wasm instruction); required by `fixed`, refused by
    /// `fuel`, whose credit is the agreed fuel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<u64>,
    /// Copies of one unit go to hosts on distinct networks: addresses that
    /// share this many leading bits (IPv4) are one network. 0 turns the
    /// rule off for IPv4.
    #[serde(default = "defaults::network_prefix_v4")]
    pub network_prefix_v4: u8,
    /// The same for IPv6 (default /48, a site).
    #[serde(default = "defaults::network_prefix_v6")]
    pub network_prefix_v6: u8,
}

/// How a job's tasks are metered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metering {
    /// Fuel counted in the generated code: exact, deterministic credit that
    /// replicas must agree on, and a deterministic instruction cap.
    #[default]
    Fuel,
    /// Nothing counted in the generated code: the job declares the credit
    /// of a unit, so no host can inflate it, and the wall-clock deadline
    /// stops a runaway module on every host (the unit then fails).
    Fixed,
}

impl Metering {
    /// The generated code counts fuel.
    pub fn fueled(self) -> bool {
        self == Metering::Fuel
    }

    fn is_fuel(&self) -> bool {
        self.fueled()
    }
}

mod defaults {
    pub fn quorum() -> u32 {
        2
    }
    pub fn max_error_results() -> u32 {
        3
    }
    pub fn deadline_secs() -> u64 {
        600
    }
    pub fn memory_mb() -> u64 {
        256
    }
    pub fn fuel() -> u64 {
        100_000_000_000
    }
    pub fn network_prefix_v4() -> u8 {
        24
    }
    pub fn network_prefix_v6() -> u8 {
        48
    }
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            quorum: defaults::quorum(),
            target_nresults: None,
            max_total_results: None,
            max_error_results: defaults::max_error_results(),
            max_success_results: None,
            deadline_secs: defaults::deadline_secs(),
            grace_secs: 0,
            distinct_volunteers: false,
            adaptive_replication: false,
            memory_mb: defaults::memory_mb(),
            fuel: defaults::fuel(),
            metering: Metering::Fuel,
            credit: None,
            network_prefix_v4: defaults::network_prefix_v4(),
            network_prefix_v6: defaults::network_prefix_v6(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("job spec is not valid TOML: {0}")]
    Toml(String),
    /// A top-level key the spec does not have. Told apart before serde
    /// sees the spec: the flattened settings would otherwise report it
    /// for the whole file, at line 1, column 1.
    #[error("unknown field `{field}`{}; the valid fields are {}", line.map(|l| format!(" on line {l}")).unwrap_or_default(), FIELDS.join(", "))]
    UnknownField { field: String, line: Option<usize> },
    /// The same inside the `plot`-th `[[plot]]` table (from 1).
    #[error("unknown field `{field}` in [[plot]] number {plot}{}; a plot's fields are {}", line.map(|l| format!(" on line {l}")).unwrap_or_default(), crate::spec::plot::PLOT_FIELDS.join(", "))]
    UnknownPlotField {
        plot: usize,
        field: String,
        line: Option<usize>,
    },
    #[error("`{field}` {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// Every top-level key of a job spec: [`JobSpec`]'s own fields, then the
/// flattened [`JobSettings`] (a test keeps this list true).
pub const FIELDS: &[&str] = &[
    "name",
    "module",
    "inputs",
    "args",
    "license",
    "citation",
    "validator",
    "plot",
    "quorum",
    "min_quorum",
    "target_nresults",
    "max_total_results",
    "max_error_results",
    "max_success_results",
    "deadline_secs",
    "delay_bound",
    "grace_secs",
    "distinct_volunteers",
    "adaptive_replication",
    "memory_mb",
    "fuel",
    "metering",
    "credit",
    "network_prefix_v4",
    "network_prefix_v6",
];

/// The first unknown top-level key of a spec that is valid TOML, with the
/// line that sets it when a plain look finds it.
fn unknown_field(text: &str) -> Option<SpecError> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let Some(field) = table.keys().find(|k| !FIELDS.contains(&k.as_str())) else {
        return plot::unknown_plot_field(&table, text);
    };
    let sets = |line: &str| {
        let line = line.trim_start().trim_start_matches('[').trim_start();
        let line = line
            .strip_prefix(field.as_str())
            .or_else(|| line.strip_prefix(&format!("\"{field}\"")));
        line.is_some_and(|rest| rest.trim_start().starts_with(['=', '.', ']']))
    };
    Some(SpecError::UnknownField {
        field: field.clone(),
        line: text.lines().position(sets).map(|i| i + 1),
    })
}

impl JobSpec {
    /// Parses and checks a spec file's text.
    pub fn from_toml(text: &str) -> Result<JobSpec, SpecError> {
        if let Some(e) = unknown_field(text) {
            return Err(e);
        }
        let spec: JobSpec = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(invalid("name", "must be 1 to 200 characters"));
        }
        if self.module.trim().is_empty() {
            return Err(invalid("module", "must name a .wasm file"));
        }
        match (&self.inputs.dir, &self.inputs.jsonl) {
            (Some(_), Some(_)) => {
                return Err(invalid("inputs", "takes either `dir` or `jsonl`, not both"));
            }
            (None, None) => {
                return Err(invalid(
                    "inputs",
                    "needs `dir` (one unit per file) or `jsonl` (one unit per line)",
                ));
            }
            _ => {}
        }
        validate_args(&self.args)?;
        if matches!(&self.validator, Validator::Custom { module } if module.trim().is_empty()) {
            return Err(invalid("validator", "`module` must name a .wasm file"));
        }
        self.validator.validate()?;
        validate_plots(&self.plots)?;
        self.terms()?;
        self.settings.validate()
    }

    /// The dataset's licence (in SPDX's spelling) and citation, checked,
    /// as the submission carries them.
    pub fn terms(&self) -> Result<DatasetTerms, SpecError> {
        let mut terms = DatasetTerms {
            license: self.license.clone(),
            citation: self.citation.clone(),
        };
        terms.normalise()?;
        Ok(terms)
    }
}

impl From<TermsError> for SpecError {
    fn from(e: TermsError) -> SpecError {
        SpecError::Invalid {
            field: e.field,
            problem: e.problem,
        }
    }
}

pub fn validate_args(args: &[String]) -> Result<(), SpecError> {
    if args.len() > MAX_ARGS {
        return Err(invalid("args", format!("has more than {MAX_ARGS} entries")));
    }
    if args
        .iter()
        .any(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
    {
        return Err(invalid(
            "args",
            format!("entries must be at most {MAX_ARG_LEN} bytes, without NUL"),
        ));
    }
    Ok(())
}

impl JobSettings {
    /// The cap on copies of one unit: as given, or enough for the quorum
    /// plus a few disagreements.
    pub fn max_total_results(&self) -> u32 {
        self.max_total_results
            .unwrap_or(self.quorum.saturating_mul(2).saturating_add(2))
    }

    /// The credit a validated unit grants each agreeing host: its agreed
    /// `fuel`, or a `fixed` job's declared credit.
    pub fn credit_of(&self, fuel: u64) -> u64 {
        match self.metering {
            Metering::Fuel => fuel,
            Metering::Fixed => self.credit.unwrap_or(0),
        }
    }

    /// The most fuel an honest host reports for one task: the cap of a
    /// `fuel` job, 0 for a `fixed` one (it counts none).
    pub fn fuel_limit(&self) -> u64 {
        match self.metering {
            Metering::Fuel => self.fuel,
            Metering::Fixed => 0,
        }
    }

    /// Copies to have out before any result is in.
    pub fn target_nresults(&self) -> u32 {
        self.target_nresults.unwrap_or(self.quorum).max(self.quorum)
    }

    /// The cap on successful results that never reach a quorum.
    pub fn max_success_results(&self) -> u32 {
        self.max_success_results
            .unwrap_or_else(|| self.max_total_results())
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if !(1..=16).contains(&self.quorum) {
            return Err(invalid("quorum", "must be between 1 and 16"));
        }
        if self.max_total_results() < self.quorum {
            return Err(invalid("max_total_results", "must be at least `quorum`"));
        }
        if self.max_total_results() > 64 {
            return Err(invalid("max_total_results", "must be at most 64"));
        }
        if !(1..=30 * 86_400).contains(&self.deadline_secs) {
            return Err(invalid(
                "deadline_secs",
                "must be between 1 and 2592000 (30 days)",
            ));
        }
        if let Some(t) = self.target_nresults
            && !(self.quorum..=self.max_total_results()).contains(&t)
        {
            return Err(invalid(
                "target_nresults",
                "must be between `min_quorum` and `max_total_results`",
            ));
        }
        if self.max_success_results() < self.quorum {
            return Err(invalid(
                "max_success_results",
                "must be at least `min_quorum`",
            ));
        }
        if self.grace_secs > 30 * 86_400 {
            return Err(invalid("grace_secs", "must be at most 2592000 (30 days)"));
        }
        if self.max_error_results == 0 {
            return Err(invalid("max_error_results", "must be at least 1"));
        }
        if self.memory_mb == 0 || self.memory_mb > MAX_TASK_MEMORY / (1024 * 1024) {
            return Err(invalid(
                "memory_mb",
                format!("must be between 1 and {}", MAX_TASK_MEMORY / 1024 / 1024),
            ));
        }
        if self.fuel == 0 || self.fuel > MAX_TASK_FUEL {
            return Err(invalid(
                "fuel",
                format!("must be between 1 and {MAX_TASK_FUEL}"),
            ));
        }
        match (self.metering, self.credit) {
            (Metering::Fixed, None) => {
                return Err(invalid(
                    "credit",
                    "is required with `metering = \"fixed\"`: the credit of one validated unit",
                ));
            }
            (Metering::Fixed, Some(c)) if c == 0 || c > MAX_TASK_FUEL => {
                return Err(invalid(
                    "credit",
                    format!("must be between 1 and {MAX_TASK_FUEL}"),
                ));
            }
            (Metering::Fuel, Some(_)) => {
                return Err(invalid(
                    "credit",
                    "is only for `metering = \"fixed\"`: a fuel-metered unit's credit is its agreed fuel",
                ));
            }
            _ => {}
        }
        if self.network_prefix_v4 > 32 {
            return Err(invalid("network_prefix_v4", "must be between 0 and 32"));
        }
        if self.network_prefix_v6 > 128 {
            return Err(invalid("network_prefix_v6", "must be between 0 and 128"));
        }
        Ok(())
    }
}

/// One work unit of a submission: a name for the researcher (file name or
/// line number) and its input, already uploaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSpec {
    pub name: String,
    pub input: Hash,
}

/// What `peergrid job submit` posts once every blob is on the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSubmission {
    pub name: String,
    pub module: Hash,
    pub args: Vec<String>,
    pub settings: JobSettings,
    pub units: Vec<UnitSpec>,
    /// How replicas are compared (a custom validator's module is a blob
    /// uploaded with the job).
    pub validator: Validator,
    /// The researcher's signature on `module` and `args`, with their
    /// endorsement by the project key.
    pub signature: crate::signing::ModuleSignature,
    /// The spec's `[[plot]]`s (absent from older clients: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plots: Vec<Plot>,
    /// The dataset's licence and citation (`license`, `citation`; absent
    /// from older clients' submissions).
    #[serde(flatten)]
    pub terms: DatasetTerms,
}

impl JobSubmission {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(invalid("name", "must be 1 to 200 characters"));
        }
        if self.units.is_empty() {
            return Err(invalid(
                "units",
                "is empty: a job needs at least one work unit",
            ));
        }
        if self.units.len() > MAX_UNITS_PER_JOB {
            return Err(invalid(
                "units",
                format!("has more than {MAX_UNITS_PER_JOB} work units"),
            ));
        }
        validate_args(&self.args)?;
        self.validator.validate()?;
        validate_plots(&self.plots)?;
        self.terms.validate()?;
        self.settings.validate()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod terms_tests;
