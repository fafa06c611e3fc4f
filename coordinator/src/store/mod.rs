//! Durable state behind one trait, so the embedded SQLite default and a
//! later PostgreSQL backend share every line of scheduling and validation.
//!
//! **Architecture Invariant:** only `store::sqlite` speaks SQL. Everything
//! else sees the [`Store`] trait, the row types below and [`StoreOp`]s, the
//! changes the scheduler decides and the writer applies in batches.

pub mod sqlite;

use peergrid_proto::Hash;
use peergrid_proto::spec::{JobSettings, JobSubmission};
use peergrid_proto::wire::{HostFacts, JobId, UnitId};
use serde::Serialize;

use crate::quorum::CopyState;

pub use sqlite::SqliteStore;

pub type HostId = u64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
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
    },
    Fail {
        unit: UnitId,
        reason: String,
        at_ms: u64,
    },
}

/// What the scheduler needs of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    pub id: JobId,
    pub name: String,
    pub module: Hash,
    pub args: Vec<String>,
    pub settings: JobSettings,
    pub signature: peergrid_proto::signing::ModuleSignature,
}

/// An unfinished unit as loaded into the scheduler's window, with every
/// copy issued so far (so a restart resumes where the store left off).
#[derive(Clone, Debug)]
pub struct LoadedUnit {
    pub id: UnitId,
    pub job: JobId,
    pub input: Vec<u8>,
    pub copies: Vec<crate::quorum::Copy>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
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
    /// Every unit is validated or failed.
    pub finished: bool,
}

/// One row of the public dataset, with its provenance.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
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
    #[serde(skip)]
    pub output: Vec<u8>,
}

/// A unit that could not be validated, with the reason.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FailedUnit {
    pub unit: UnitId,
    pub name: String,
    pub reason: String,
}

/// Durable state of one coordinator.
///
/// Methods block; async callers use `spawn_blocking`. Implementations are
/// shared between threads: the writer applies batches while HTTP handlers
/// read.
pub trait Store: Send + Sync + 'static {
    fn put_blob(&self, hash: &Hash, data: &[u8]) -> Result<(), StoreError>;
    fn get_blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError>;
    fn blob_len(&self, hash: &Hash) -> Result<Option<u64>, StoreError>;
    /// The subset of `hashes` the store does not hold.
    fn missing_blobs(&self, hashes: &[Hash]) -> Result<Vec<Hash>, StoreError>;

    /// Stores a job and its units atomically; every blob must already exist.
    fn create_job(&self, job: &JobSubmission, now_ms: u64) -> Result<JobId, StoreError>;
    fn job_info(&self, id: JobId) -> Result<Option<JobInfo>, StoreError>;
    fn job_status(&self, id: JobId) -> Result<Option<JobStatus>, StoreError>;
    fn jobs(&self) -> Result<Vec<JobStatus>, StoreError>;

    /// Registers a host or refreshes its facts; returns its id.
    fn upsert_host(
        &self,
        key: &[u8; 32],
        facts: &HostFacts,
        version: &str,
        now_ms: u64,
    ) -> Result<HostId, StoreError>;
    fn host_key(&self, id: HostId) -> Result<Option<[u8; 32]>, StoreError>;

    /// Applies a batch of scheduler decisions and output blobs in one
    /// transaction: all of it is durable, or none.
    fn apply(&self, ops: &[StoreOp], blobs: &[(Hash, Vec<u8>)]) -> Result<(), StoreError>;

    /// The highest unit id ever stored (0 when there is none).
    fn max_unit_id(&self) -> Result<UnitId, StoreError>;

    /// Unfinished units with id greater than `after`, in id order.
    fn load_active_units(&self, after: UnitId, limit: usize)
    -> Result<Vec<LoadedUnit>, StoreError>;

    /// Validated rows of a job with unit id greater than `after`, in id
    /// order: callers page through a dataset without holding it whole.
    fn dataset_page(
        &self,
        job: JobId,
        after: UnitId,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError>;
    fn failed_units(&self, job: JobId) -> Result<Vec<FailedUnit>, StoreError>;
}
