//! The JSON bodies of the coordinator's HTTP API that the researcher's
//! client reads: one definition each, serialized by the coordinator and
//! deserialized by `peergrid`, so the two cannot drift apart in a field
//! name. Routes and their documents are in `docs/protocol.md` and the
//! coordinator's OpenAPI document (`dashboard/openapi.rs`).
//!
//! Serde types only; no I/O.

use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::citation::DatasetTerms;
use crate::signing::ModuleSignature;
use crate::spec::{JobSettings, Plot, Validator};
use crate::wire::{JobId, UnitId};

/// The body of every error answer: `{"error": "<message>"}`, a message
/// that says what went wrong and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `201` to `POST /api/v1/blobs` (a batch of blobs, `crate::batch`): how
/// many blobs the body held and the bytes of those blobs (frame headers
/// not counted); all are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobsStored {
    pub blobs: u64,
    pub bytes: u64,
}

/// `201` to `POST /api/v1/jobs`: the new job's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    pub job_id: JobId,
}

/// A job's counts and settings: an element of `GET /api/v1/jobs`, the
/// core of `GET /api/v1/jobs/{id}`, and the dashboard's jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: JobId,
    pub name: String,
    pub module: Hash,
    /// The endorsed name of the researcher who signed the job.
    pub researcher: String,
    pub created_ms: u64,
    pub settings: JobSettings,
    pub units_total: u64,
    pub validated: u64,
    pub failed: u64,
    /// Unfinished units with at least one copy out on a host.
    pub in_progress: u64,
    /// Unfinished units with no copy out.
    pub pending: u64,
    /// Units left unfinished when the job was cancelled.
    #[serde(default)]
    pub cancelled: u64,
    /// When the researcher cancelled the job (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_ms: Option<u64>,
    /// Every unit is validated, failed or cancelled.
    pub finished: bool,
    /// The dataset's licence and citation (`license`, `citation`), when
    /// the job names them.
    #[serde(flatten)]
    pub terms: DatasetTerms,
}

/// `POST /api/v1/jobs/{id}/cancel`'s body: the job's researcher's
/// signature over `signing::cancel_message(id, endorsement)`, in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub signature: String,
}

/// `POST /api/v1/jobs/{id}/cancel`: what cancelling did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    pub job: JobId,
    /// Units that were unfinished and are now cancelled.
    pub cancelled: u64,
    /// Validated units, whose rows stay in the dataset.
    pub validated: u64,
    /// The job had been cancelled before (nothing changed).
    pub already: bool,
}

/// A unit that could not be validated, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedUnit {
    pub unit: UnitId,
    pub name: String,
    pub reason: String,
}

/// One error result of a unit: the host that ran it, its error message,
/// and the end of the task's stderr (BOINC's `stderr_txt`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorLog {
    /// The coordinator's id for the host.
    pub host: u64,
    /// Hex of the host's public key, as the dataset's provenance names it.
    pub host_key: String,
    /// When the coordinator received the report (ms since the Unix epoch).
    pub received_ms: u64,
    /// What the worker said went wrong (a trap, a limit, an exit status).
    pub error: String,
    /// The last bytes the task wrote to stderr (at most
    /// [`MAX_STDERR_TAIL`](crate::limits::MAX_STDERR_TAIL), control
    /// characters removed); absent when it wrote none, or when its worker
    /// predates stderr reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

/// A failed unit with its last error result, if it had one (a unit that
/// failed on disagreeing successes has none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedUnitLog {
    pub unit: UnitId,
    pub name: String,
    /// Why the unit failed, as in [`FailedUnit`].
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorLog>,
}

/// `GET /api/v1/jobs/{id}/logs`: one page of a job's failed units, in
/// unit order, each with its last error and stderr.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogs {
    pub job: JobId,
    pub failed_units: Vec<FailedUnitLog>,
    /// More failed units follow: ask again with `?after=` this unit id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<UnitId>,
}

/// `GET /api/v1/jobs/{id}/logs/{unit}`: every error result of one unit,
/// oldest first, whatever became of the unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitLogs {
    pub job: JobId,
    pub unit: UnitId,
    pub name: String,
    /// `active`, `validated` or `failed`.
    pub state: String,
    /// Why the unit failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub errors: Vec<ErrorLog>,
}

/// `GET /api/v1/jobs/{id}`: the job's [`JobStatus`] (its fields at the
/// top level), its failed units, and what anyone needs to re-run one of
/// its units (`peergrid verify`): arguments, signature and validator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub status: JobStatus,
    pub failed_units: Vec<FailedUnit>,
    /// Why the unfinished units are not going out, when the scheduler
    /// knows; absent once the job is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub args: Vec<String>,
    pub signature: ModuleSignature,
    pub validator: Validator,
    /// The plots the job's spec declares (`[[plot]]`), drawn on its page;
    /// absent when none (and from older servers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plots: Vec<Plot>,
}

/// One row of the public dataset with its provenance, as the JSON routes
/// show it (`GET /api/v1/jobs/{id}/dataset/{unit}`, the rows of
/// `GET /api/v1/dataset`). The output is not in it: it is the blob named
/// by `output_hash` (`GET /api/v1/blob/{hash}`), and the export carries it
/// inline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRow {
    pub job: JobId,
    pub unit: UnitId,
    /// The researcher's name for the unit: input file name or line number.
    pub name: String,
    pub input_hash: Hash,
    pub module_hash: Hash,
    pub output_hash: Hash,
    /// Hex public keys of the hosts whose outputs agreed.
    pub hosts: Vec<String>,
    /// The engine configurations the agreeing results ran under.
    pub engines: Vec<String>,
    pub fuel: u64,
    pub validated_ms: u64,
    /// With `job`, what the unit's randomness seed derives from
    /// (`unit_seed(job, seed_unit)`): `unit` for jobs submitted since units
    /// were numbered within their job, the unit's project-wide id for
    /// older ones. 0 from a server that predates it: use `unit`.
    #[serde(default)]
    pub seed_unit: u64,
}

impl DatasetRow {
    /// Whether the agreeing results ran with canonical NaNs: an engine id
    /// names its NaN mode by a `nancanon` segment (the sandbox's
    /// `CANONICAL_ENGINE_ID`), so re-running the unit must use that mode.
    pub fn canonical_nan(&self) -> bool {
        self.engines
            .iter()
            .any(|e| e.split('/').any(|part| part == "nancanon"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::signing::Endorsement;

    fn status() -> JobStatus {
        JobStatus {
            id: 3,
            name: "lyapunov".into(),
            module: Hash([7; 32]),
            researcher: "Ada".into(),
            created_ms: 1,
            settings: JobSettings::default(),
            units_total: 4,
            validated: 2,
            failed: 1,
            in_progress: 1,
            pending: 0,
            cancelled: 0,
            cancelled_ms: None,
            finished: false,
            terms: DatasetTerms::default(),
        }
    }

    /// The job route's fields sit at the top level beside the status's,
    /// `waiting` only when there is a reason, and the body reads back.
    #[test]
    fn job_detail_flattens_its_status_and_reads_back() {
        let detail = JobDetail {
            status: status(),
            failed_units: vec![FailedUnit {
                unit: 9,
                name: "b".into(),
                reason: "too many errors".into(),
            }],
            waiting: None,
            args: vec!["--scale".into(), "2".into()],
            signature: ModuleSignature {
                endorsement: Endorsement {
                    researcher_key: "00".repeat(32),
                    name: "Ada".into(),
                    project_signature: "00".repeat(64),
                },
                signature: "00".repeat(64),
            },
            validator: Validator::default(),
            plots: Vec::new(),
        };
        let v = serde_json::to_value(&detail).unwrap();
        assert!(v.get("plots").is_none(), "{v}");
        assert_eq!(v["id"], 3);
        assert_eq!(v["module"], Hash([7; 32]).to_hex());
        assert_eq!(v["failed_units"][0]["reason"], "too many errors");
        assert_eq!(v["validator"]["kind"], "bitwise");
        assert!(v.get("waiting").is_none(), "{v}");
        assert!(v.get("status").is_none(), "{v}");
        let back: JobDetail = serde_json::from_value(v).unwrap();
        assert_eq!(back, detail);

        let waiting = JobDetail {
            waiting: Some("waiting for a host".into()),
            ..detail
        };
        let v = serde_json::to_value(&waiting).unwrap();
        assert_eq!(v["waiting"], "waiting for a host");
        assert_eq!(serde_json::from_value::<JobDetail>(v).unwrap(), waiting);
    }

    #[test]
    fn canonical_nan_reads_the_engine_ids_nan_segment() {
        let row = |engines: &[&str]| DatasetRow {
            job: 1,
            unit: 2,
            name: "u".into(),
            input_hash: Hash([1; 32]),
            module_hash: Hash([2; 32]),
            output_hash: Hash([3; 32]),
            hosts: vec![],
            engines: engines.iter().map(|e| e.to_string()).collect(),
            fuel: 5,
            validated_ms: 6,
            seed_unit: 2,
        };
        assert!(!row(&["wasmtime-48/cranelift-speed/nocanon/nothreads/x86_64"]).canonical_nan());
        assert!(
            row(&[
                "wasmtime-48/nocanon/aarch64",
                "wasmtime-48/cranelift-speed/nancanon/nothreads"
            ])
            .canonical_nan()
        );
        assert!(!row(&["wasmtime/notnancanon"]).canonical_nan());
        assert!(!row(&[]).canonical_nan());
    }
}
