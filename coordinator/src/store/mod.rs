//! Durable state behind one trait, so the embedded SQLite default and a
//! later PostgreSQL backend share every line of scheduling and validation.
//!
//! **Architecture Invariant:** only `store::sqlite` speaks SQL. Everything
//! else sees the [`Store`] trait (the dashboard only its read-only half,
//! [`ReadStore`]), the row types below and [`StoreOp`]s, the changes the
//! scheduler decides and the writer applies in batches.

pub mod sqlite;

use peergrid_proto::spec::{JobSubmission, Plot};
use peergrid_proto::wire::{HostFacts, JobId, UnitId};
use peergrid_proto::{Hash, api};
use serde::Serialize;

use crate::credit::CreditTally;
pub use peergrid_core::model::{HostId, JobInfo, LoadedUnit, SEEN_EVERY_MS, StoreOp};
/// The HTTP API's job and failed-unit bodies are the rows the store reads.
pub use peergrid_proto::api::{ErrorLog, FailedUnit, FailedUnitLog, JobStatus, UnitLogs};

pub use sqlite::{AppliedStep, SCHEMA_VERSION, SchemaStatus, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database was made or upgraded by a newer release.
    #[error(
        "the database's schema is at version {found}, newer than this release knows (version {known}): \
         a newer peergrid-coordinator made or upgraded it; run that release, or restore a backup taken before the upgrade"
    )]
    NewerSchema { found: u32, known: u32 },
}

/// The end of a failed task's stderr, kept with its error result (the
/// `results` row of `unit` and `host`) but not in the scheduler's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StderrTail {
    pub unit: UnitId,
    pub host: HostId,
    /// Already cleaned and bounded by the grid.
    pub text: String,
}

/// A volunteer account as the coordinator knows it: an account is its
/// key, proved by the signature attaching each host (`wire::Attachment`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// The account key in lower-case hex ('' = anonymous): what bans,
    /// `distinct_volunteers` and the leaderboard count by.
    pub id: String,
    /// The name it shows (chosen by the volunteer; not unique).
    pub name: String,
    /// The team its attachment names ('' = none), already checked with
    /// `proto::text::volunteer_name`.
    pub team: String,
}

/// What the store keeps of a host's standing (see `trust.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredStanding {
    pub account: String,
    pub cores: u32,
    /// The host's first Hello (ms since the Unix epoch).
    pub first_seen_ms: u64,
    pub consecutive_valid: u64,
    /// `None`: never lowered, the full quota.
    pub quota: Option<u32>,
    /// Dataset rows of its single copies wait for a check before their
    /// credit is granted.
    pub pending_credit: bool,
}

/// Who an operator's ban is aimed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BanTarget {
    Host(HostId),
    /// Every host of a volunteer account.
    Account(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ban {
    pub target: BanTarget,
    pub reason: String,
    pub at_ms: u64,
}

/// Which units of a job the operator's `reissue` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReissueUnits {
    /// These units, by their numbers within the job.
    Numbers(Vec<u64>),
    /// Every failed unit of the job.
    Failed,
}

/// What `reissue` did with one unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reissued {
    /// The unit's number within its job.
    pub number: u64,
    /// Its state before: `failed`, `validated`, `active`, … (empty: no
    /// such unit).
    pub was: String,
    /// Why it was left alone; `None`: it is active again.
    pub refused: Option<String>,
}

impl Reissued {
    fn refused(number: u64, was: &str, why: impl Into<String>) -> Reissued {
        Reissued {
            number,
            was: was.to_string(),
            refused: Some(why.into()),
        }
    }
}

/// One row of the public dataset as stored: its provenance and its
/// output. The JSON routes show it as [`api::DatasetRow`] (without the
/// output); the export renders it whole (`dashboard::export`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetRow {
    pub job: JobId,
    /// The unit's number within its job, from 1 (not its project-wide id):
    /// what users see, and what pages of a job's dataset follow.
    pub unit: u64,
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
    /// What the unit's seed derives from with the job id (see
    /// `proto::api::DatasetRow::seed_unit`).
    pub seed_unit: u64,
    /// Empty where a query leaves outputs in the store.
    pub output: Vec<u8>,
}

impl From<DatasetRow> for api::DatasetRow {
    fn from(row: DatasetRow) -> api::DatasetRow {
        api::DatasetRow {
            job: row.job,
            unit: row.unit,
            name: row.name,
            input_hash: row.input_hash,
            module_hash: row.module_hash,
            output_hash: row.output_hash,
            hosts: row.hosts,
            engines: row.engines,
            fuel: row.fuel,
            validated_ms: row.validated_ms,
            seed_unit: row.seed_unit,
        }
    }
}

/// A registered volunteer host, as the dashboard shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HostSummary {
    pub id: HostId,
    /// Hex of the host's Ed25519 public key: the name the dataset's
    /// provenance (`DatasetRow::hosts`) knows it by.
    pub public_key: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub os: String,
    pub arch: String,
    pub version: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// The volunteer account it runs under: the account key in hex
    /// ('' = anonymous).
    pub account: String,
    /// The account's display name.
    pub account_name: String,
    /// The name the volunteer chose for the host ('' = unnamed; see
    /// [`HostSummary::display_name`]).
    pub name: String,
    /// The CPU's model name ('' = unknown).
    pub cpu_model: String,
    /// Tasks it runs at once: the cores it gives the grid (0 = its worker
    /// did not say).
    pub slots: u32,
    /// Its account's team, by id and name (`None` and '' = none).
    pub team_id: Option<u64>,
    pub team: String,
    /// Credit granted to it, kept up to date with every dataset row.
    #[serde(skip)]
    pub credit: CreditTally,
}

impl HostSummary {
    /// What pages call the host: its chosen name, else `host-` and the
    /// first 8 hex digits of its key (a whole word, never cut mid-name).
    pub fn display_name(&self) -> String {
        if self.name.is_empty() {
            format!(
                "host-{}",
                self.public_key.get(..8).unwrap_or(&self.public_key)
            )
        } else {
            self.name.clone()
        }
    }
}

/// One copy a host was sent, as its page lists it (BOINC's "tasks" page).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HostTask {
    pub job: JobId,
    pub job_name: String,
    /// The unit's number within its job.
    pub unit: u64,
    pub unit_name: String,
    /// `in_progress`, `valid` (in the agreeing set of the unit's dataset
    /// row), `invalid` (a success that disagreed with it, or whose unit
    /// failed), `pending` (a success awaiting validation), `error`,
    /// `timed_out` (not reported by its deadline and grace) or `voided`
    /// (given back, or its job cancelled, without charge).
    pub state: String,
    pub sent_ms: u64,
    pub deadline_ms: u64,
    pub received_ms: Option<u64>,
    pub elapsed_ms: Option<u64>,
    pub fuel: Option<u64>,
    /// Credit the copy earned: its dataset row's fuel when valid and
    /// granted, else 0.
    pub credit: u64,
    /// An error result's message (its first line, at most 200 bytes).
    pub error: Option<String>,
}

/// A team as stored: its name, founder and when it was made.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Team {
    pub id: u64,
    pub name: String,
    /// The founding account's key (hex).
    pub founder: String,
    pub created_ms: u64,
}

/// How a host's finished copies fared.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct HostRecord {
    /// Successful copies in the agreeing set of a validated unit.
    pub valid: u64,
    /// Successful copies of a validated unit that disagreed with its
    /// agreeing set.
    pub invalid: u64,
    /// Successful copies of units not validated (yet, or ever).
    pub unvalidated: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub in_progress: u64,
}

/// One time bucket of a series: how many things happened in
/// `[start_ms, start_ms + width)` and the fuel they carried.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Bucket {
    pub start_ms: u64,
    pub count: u64,
    pub fuel: u64,
}

/// The credit-relevant part of one dataset row: the fuel it granted to
/// each of its agreeing hosts, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditGrant {
    pub job: JobId,
    /// The unit's id, project-wide: the order credit pages follow.
    pub unit: UnitId,
    /// Its number within its job (what users see).
    pub number: u64,
    pub fuel: u64,
    pub validated_ms: u64,
    /// Hex public keys of the agreeing hosts.
    pub hosts: Vec<String>,
}

/// Size of a dataset: rows and the bytes of their outputs.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DatasetSize {
    pub rows: u64,
    pub bytes: u64,
}

/// What a job's dataset looks like from outside, cheaply: rows, the
/// highest unit id and the latest validation. A row added or replaced
/// moves it, so caches of things computed over the dataset key on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatasetStamp {
    pub rows: u64,
    pub last_unit: UnitId,
    pub last_validated_ms: u64,
}

/// Read-only queries of durable state: jobs and their status, hosts and
/// their records, the dataset in pages, and the dashboard's counts and
/// buckets. The dashboard and the exports need nothing more; the
/// scheduling path reaches these through [`Store`], which extends it.
///
/// Methods block; async callers use `spawn_blocking`. Implementations
/// read on connections of their own, never waiting behind a write.
pub trait ReadStore: Send + Sync + 'static {
    fn job_info(&self, id: JobId) -> Result<Option<JobInfo>, StoreError>;
    fn job_status(&self, id: JobId) -> Result<Option<JobStatus>, StoreError>;
    fn jobs(&self) -> Result<Vec<JobStatus>, StoreError>;
    fn failed_units(&self, job: JobId) -> Result<Vec<FailedUnit>, StoreError>;
    /// Failed units of a job numbered above `after`, in number order, at
    /// most `limit`, each with its last error result and stderr.
    fn failed_unit_logs(
        &self,
        job: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FailedUnitLog>, StoreError>;
    /// Unit number `unit` of a job with every error result it received,
    /// oldest first; `None` when the job has no such unit.
    fn unit_logs(&self, job: JobId, unit: u64) -> Result<Option<UnitLogs>, StoreError>;

    /// The trust and quota kept for a host, with its account and cores.
    fn host_standing(&self, id: HostId) -> Result<Option<StoredStanding>, StoreError>;
    /// Hosts seen at or after `since_ms`.
    fn hosts_seen_since(&self, since_ms: u64) -> Result<u64, StoreError>;
    /// Every registered host, by id.
    fn hosts(&self) -> Result<Vec<HostSummary>, StoreError>;
    fn host(&self, id: HostId) -> Result<Option<HostSummary>, StoreError>;
    /// The id of the host with this public key (hex), if registered.
    fn host_by_key(&self, key_hex: &str) -> Result<Option<HostId>, StoreError>;
    /// Counts of a host's copies by outcome.
    fn host_record(&self, id: HostId) -> Result<HostRecord, StoreError>;
    /// Hosts with id greater than `after`, by id.
    fn hosts_after(&self, after: HostId, limit: usize) -> Result<Vec<HostSummary>, StoreError>;
    /// One page of the hosts by total credit, highest first (ties by id).
    fn hosts_by_credit(&self, offset: u64, limit: usize) -> Result<Vec<HostSummary>, StoreError>;
    /// One page of the copies a host was sent, newest first, skipping the
    /// `offset` newest; the count of them all is [`ReadStore::host_record`]'s
    /// sum (plus voided copies: [`ReadStore::host_task_count`]).
    fn host_tasks(
        &self,
        host: HostId,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<HostTask>, StoreError>;
    /// How many copies a host was sent, whatever became of them.
    fn host_task_count(&self, host: HostId) -> Result<u64, StoreError>;
    /// Every team, by id.
    fn teams(&self) -> Result<Vec<Team>, StoreError>;
    fn team(&self, id: u64) -> Result<Option<Team>, StoreError>;
    /// A team by name, regardless of ASCII case.
    fn team_by_name(&self, name: &str) -> Result<Option<Team>, StoreError>;
    /// The hosts in a team, or with `None` in any team, by id.
    fn team_hosts(&self, team: Option<u64>) -> Result<Vec<HostSummary>, StoreError>;

    /// Successful copies received at or after `since_ms`, grouped in
    /// buckets of `width_ms` aligned to multiples of it; empty buckets are
    /// left out.
    fn result_buckets(&self, since_ms: u64, width_ms: u64) -> Result<Vec<Bucket>, StoreError>;
    /// A job's validated units grouped by `validated_ms` in buckets of
    /// `width_ms` aligned to multiples of it; empty buckets are left out.
    fn validated_buckets(&self, job: JobId, width_ms: u64) -> Result<Vec<Bucket>, StoreError>;

    /// Validated rows of a job with unit number greater than `after`, in
    /// unit order: callers page through a dataset without holding it whole.
    fn dataset_page(
        &self,
        job: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError>;
    /// Like [`ReadStore::dataset_page`], but the page also stops before its
    /// outputs pass `max_bytes` (its first row is always there, whatever
    /// its size): exports read outputs of any size in bounded memory.
    fn dataset_page_within(
        &self,
        job: JobId,
        after: u64,
        max_rows: usize,
        max_bytes: u64,
    ) -> Result<Vec<DatasetRow>, StoreError>;
    /// Validated rows of a job with unit number greater than `after`, in
    /// unit order, without their outputs (`output` left empty).
    fn dataset_index(
        &self,
        job: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError>;
    /// One page (by offset, in unit order) of one job's dataset or of all
    /// of them, for browsing. `output` is left empty: outputs stay in the
    /// store unless exported.
    fn dataset_browse(
        &self,
        job: Option<JobId>,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError>;
    /// Rows and output bytes of one job's dataset, or of all of them.
    fn dataset_size(&self, job: Option<JobId>) -> Result<DatasetSize, StoreError>;
    /// The job's [`DatasetStamp`].
    fn dataset_stamp(&self, job: JobId) -> Result<DatasetStamp, StoreError>;
    /// Like [`ReadStore::dataset_page_within`], but only every `every`-th
    /// unit's row: a uniform sample of a large dataset (the job's plots).
    fn dataset_sample_within(
        &self,
        job: JobId,
        every: u64,
        after: u64,
        max_rows: usize,
        max_bytes: u64,
    ) -> Result<Vec<DatasetRow>, StoreError>;
    /// A job's declared plots; `None` when there is no such job.
    fn job_plots(&self, id: JobId) -> Result<Option<Vec<Plot>>, StoreError>;
    /// Dataset rows with unit id greater than `after`, over every job, as
    /// credit grants: callers sum credit page by page. With `host`, only
    /// rows whose agreeing hosts include that hex key.
    fn credit_page(
        &self,
        host: Option<&str>,
        after: UnitId,
        limit: usize,
    ) -> Result<Vec<CreditGrant>, StoreError>;
    /// How many jobs there are.
    fn job_count(&self) -> Result<u64, StoreError>;
    /// Up to `limit` jobs, newest first, skipping the `offset` newest.
    fn jobs_newest_first(&self, offset: u64, limit: usize) -> Result<Vec<JobStatus>, StoreError>;
    /// The first `max` bytes of a blob and its whole length.
    fn blob_prefix(&self, hash: &Hash, max: usize) -> Result<Option<(Vec<u8>, u64)>, StoreError>;
    /// Units by state (`active`, `validated`, `failed`) over every job.
    fn units_by_state(&self) -> Result<Vec<(String, u64)>, StoreError>;
}

/// Durable state of one coordinator: the [`ReadStore`] reads, and what the
/// scheduling path needs besides (blobs, job creation, host registration,
/// bans, the writer's batches and the feeder's loads).
///
/// Methods block; async callers use `spawn_blocking`. Implementations are
/// shared between threads: the writer applies batches while HTTP handlers
/// read.
pub trait Store: ReadStore {
    /// Stores an uploaded blob. One new to the store is a loose upload
    /// until a job claims it ([`Store::create_job`]), and garbage once it
    /// has been loose for a grace period ([`Store::collect_blobs`]).
    fn put_blob(&self, hash: &Hash, data: &[u8]) -> Result<(), StoreError>;
    /// Stores many uploaded blobs in one transaction (an upload batch);
    /// each must already be checked against its hash.
    fn put_blobs(&self, blobs: &[(Hash, Vec<u8>)]) -> Result<(), StoreError>;
    /// Loose uploads among `hashes` count as uploaded at `now_ms` afresh
    /// (a submission is about to claim them).
    fn touch_uploads(&self, hashes: &[Hash], now_ms: u64) -> Result<(), StoreError>;
    /// Deletes at most `limit` loose uploads from before `before_ms` that
    /// nothing names; returns their hashes.
    fn collect_blobs(&self, before_ms: u64, limit: usize) -> Result<Vec<Hash>, StoreError>;
    fn get_blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError>;
    fn blob_len(&self, hash: &Hash) -> Result<Option<u64>, StoreError>;
    /// The subset of `hashes` the store does not hold.
    fn missing_blobs(&self, hashes: &[Hash]) -> Result<Vec<Hash>, StoreError>;
    /// What blob mirrors hold, in hash order, after `after` and at most
    /// `limit` of them: every job's module and custom validator module, and
    /// every unit's input.
    fn job_blobs_after(&self, after: Option<&Hash>, limit: usize) -> Result<Vec<Hash>, StoreError>;

    /// Stores a job and its units atomically, claiming its blobs (they are
    /// loose uploads no more); every blob must already exist.
    fn create_job(&self, job: &JobSubmission, now_ms: u64) -> Result<JobId, StoreError>;

    /// Registers a host (attached to `account`) or refreshes its facts
    /// and account; returns its id.
    fn upsert_host_in(
        &self,
        key: &[u8; 32],
        facts: &HostFacts,
        version: &str,
        account: &Account,
        now_ms: u64,
    ) -> Result<HostId, StoreError>;
    /// [`Store::upsert_host_in`] for an anonymous host.
    fn upsert_host(
        &self,
        key: &[u8; 32],
        facts: &HostFacts,
        version: &str,
        now_ms: u64,
    ) -> Result<HostId, StoreError> {
        self.upsert_host_in(key, facts, version, &Account::default(), now_ms)
    }
    fn host_key(&self, id: HostId) -> Result<Option<[u8; 32]>, StoreError>;
    /// Tasks sent to a host at or after `since_ms` (its quota's day so far).
    fn tasks_sent_since(&self, host: HostId, since_ms: u64) -> Result<u32, StoreError>;

    /// Every ban in force, oldest first.
    fn bans(&self) -> Result<Vec<Ban>, StoreError>;
    /// Bans `target` with `reason`, or lifts its ban when `reason` is
    /// `None`; returns whether anything changed.
    fn set_ban(
        &self,
        target: &BanTarget,
        reason: Option<&str>,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// The operator's `reissue` of failed units of `job`: computed afresh,
    /// their earlier copies moved to `retired_results`; one entry per unit
    /// named (or failed), in order. `None`: there is no such job.
    fn reissue(
        &self,
        job: JobId,
        which: &ReissueUnits,
        reason: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<Reissued>>, StoreError>;

    /// Applies a batch of scheduler decisions and output blobs in one
    /// transaction: all of it is durable, or none.
    fn apply(&self, ops: &[StoreOp], blobs: &[(Hash, Vec<u8>)]) -> Result<(), StoreError> {
        self.apply_with_stderr(ops, blobs, &[])
    }
    /// [`Store::apply`], and the stderr tails of the batch's error reports
    /// written to their results in the same transaction.
    fn apply_with_stderr(
        &self,
        ops: &[StoreOp],
        blobs: &[(Hash, Vec<u8>)],
        stderr: &[StderrTail],
    ) -> Result<(), StoreError>;

    /// The highest unit id ever stored (0 when there is none).
    fn max_unit_id(&self) -> Result<UnitId, StoreError>;

    /// Unfinished units with id greater than `after`, in id order. Inputs
    /// of `bytes_below` bytes or more come without their bytes (they go
    /// to workers by reference).
    fn load_active_units(
        &self,
        after: UnitId,
        limit: usize,
        bytes_below: usize,
    ) -> Result<Vec<LoadedUnit>, StoreError>;

    /// Active units reopened (by a repair or a dispute) after `after_seq`,
    /// in order, with their copies: `(reopened_seq, unit)`; inputs as for
    /// [`Store::load_active_units`].
    fn load_reopened_units(
        &self,
        after_seq: u64,
        limit: usize,
        bytes_below: usize,
    ) -> Result<Vec<(u64, LoadedUnit)>, StoreError>;
}
