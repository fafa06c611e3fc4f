//! The decision core's vocabulary: hosts, copies of units, jobs as the
//! scheduler sees them, and the changes it decides ([`StoreOp`]), which the
//! coordinator's writer applies to its store. Plain data, no I/O.

use peergrid_proto::Hash;
use peergrid_proto::spec::{JobSettings, Validator};
use peergrid_proto::wire::{JobId, UnitId};

/// A host's id in the coordinator's store.
pub type HostId = u64;

/// The state of one copy of a work unit, as far as validation cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyState {
    /// Sent to the host, which may still report until `deadline_ms` (the
    /// deadline the host was given plus the job's grace period).
    InProgress {
        deadline_ms: u64,
    },
    Success {
        output: Hash,
        fuel: u64,
        /// The engine configuration it ran under (names the architecture
        /// unless NaNs were canonicalized).
        engine: String,
        /// Resumed from a checkpoint: `fuel` is an estimate, not held to
        /// the replicas' figure.
        resumed: bool,
    },
    Error(String),
    /// The deadline passed with no report.
    TimedOut,
    /// Thrown out by the operator (the host was banned): counts for
    /// nothing, neither towards a quorum nor against the unit's caps.
    Voided(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    pub host: HostId,
    pub state: CopyState,
}

/// One change decided by the scheduler. A batch of them is applied in one
/// transaction, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Assign {
        unit: UnitId,
        host: HostId,
        sent_ms: u64,
        deadline_ms: u64,
        /// Adaptive replication sent it as the unit's only copy, to a
        /// trusted host.
        single: bool,
    },
    /// A host reported; successful outputs reach the store as blobs in the
    /// same batch.
    Report {
        unit: UnitId,
        host: HostId,
        state: CopyState,
        elapsed_ms: u64,
        received_ms: u64,
    },
    TimedOut {
        unit: UnitId,
        host: HostId,
    },
    /// The unit enters the dataset.
    Validate {
        unit: UnitId,
        output: Hash,
        fuel: u64,
        hosts: Vec<HostId>,
        at_ms: u64,
        /// An adaptive single copy, checked by no other host: its credit
        /// waits for the host's next spot check or an audit to pass
        /// ([`StoreOp::GrantCredit`]).
        pending_credit: bool,
    },
    /// A spot check or an audit of the host passed: the credit of its
    /// single copies that waited for one is granted.
    GrantCredit {
        host: HostId,
    },
    Fail {
        unit: UnitId,
        reason: String,
        at_ms: u64,
    },
    /// The operator banned the host: its copy counts for nothing.
    Void {
        unit: UnitId,
        host: HostId,
        reason: String,
    },
    /// The host was caught (a result invalid against a quorum, or a ban):
    /// every dataset row it helped validate is reopened (moved to the
    /// dataset's history with `reason`, its unit active again, the host's
    /// copy voided) and its units go out for fresh copies.
    Repair {
        host: HostId,
        reason: String,
        at_ms: u64,
    },
    /// An audit's result disagreed with the unit's dataset row: the row is
    /// moved to the history and the unit needs one more agreeing result
    /// than its quorum, so the losing side is caught either way.
    Dispute {
        unit: UnitId,
        at_ms: u64,
    },
    /// The researcher cancelled the job: its unfinished units (in the
    /// window or not) are marked cancelled with `reason` and their copies
    /// in progress voided; validated rows stay in the dataset.
    Cancel {
        job: JobId,
        reason: String,
        at_ms: u64,
    },
    /// A host's trust streak or quota changed (see `trust.rs`).
    Standing {
        host: HostId,
        consecutive_valid: u64,
        quota: u32,
    },
    /// A host exchanged at `at_ms`: keeps `hosts.last_seen_ms` fresh for
    /// the dashboard's "workers online". `Grid::exchange` sends at most one
    /// per host every [`SEEN_EVERY_MS`].
    Seen {
        host: HostId,
        at_ms: u64,
    },
}

/// How often a host's `last_seen_ms` is refreshed while it keeps
/// exchanging.
pub const SEEN_EVERY_MS: u64 = 10_000;

/// What the scheduler needs of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobInfo {
    pub id: JobId,
    pub name: String,
    pub module: Hash,
    pub args: Vec<String>,
    pub settings: JobSettings,
    pub signature: peergrid_proto::signing::ModuleSignature,
    pub validator: Validator,
}

/// An unfinished unit as loaded into the scheduler's window, with every
/// copy issued so far (so a restart resumes where the store left off).
#[derive(Clone, Debug)]
pub struct LoadedUnit {
    pub id: UnitId,
    pub job: JobId,
    /// What its seed derives from with the job id: its number within its
    /// job, from 1, or its id for a job submitted before units were
    /// numbered (`jobs.seed_by_number`).
    pub number: u64,
    /// The input's bytes, or none when the store withheld them (an input
    /// sent by reference: `input_len` is then its length).
    pub input: Vec<u8>,
    /// BLAKE3 of the input, as stored.
    pub input_hash: Hash,
    /// The input's length in bytes.
    pub input_len: u64,
    pub copies: Vec<Copy>,
    /// A copy was sent as the unit's single copy (adaptive replication).
    pub single: bool,
    /// An audit disagreed with the unit's validated output: it needs one
    /// more agreeing result than its job's quorum.
    pub disputed: bool,
}

/// Two different outputs of one unit that the scheduler needs compared
/// under its job's validator (a tolerance or the researcher's module)
/// before it can decide the unit. The shell compares them off the
/// scheduler's lock and answers with [`crate::scheduler::Scheduler::record_agreement`],
/// or with [`crate::scheduler::Scheduler::comparison_failed`] when it could
/// not (a store read failed): that is a retry, never a disagreement.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub unit: UnitId,
    pub job: std::sync::Arc<JobInfo>,
    /// The pair, smaller hash first.
    pub a: Hash,
    pub b: Hash,
}

impl Comparison {
    /// The pair `(a, b)` in canonical order.
    pub fn pair(a: Hash, b: Hash) -> (Hash, Hash) {
        if a <= b { (a, b) } else { (b, a) }
    }
}
