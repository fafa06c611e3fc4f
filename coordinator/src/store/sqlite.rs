//! The embedded SQLite store: one file in WAL mode, one writer connection
//! and a small pool of readers so HTTP reads never wait behind a batch.
//!
//! `synchronous = NORMAL` in WAL mode: a committed transaction survives
//! `kill -9` of the coordinator (it is in the WAL, in the OS page cache);
//! only a power cut may lose the last few commits. `--full-sync` trades
//! throughput for surviving that too.
//!
//! This file holds the connections and says which one each trait method
//! runs on; the SQL is in the submodules, by concern: `schema` (tables,
//! indexes, versioned migration steps), `apply` (every write), `load` (the scheduling
//! path's reads), `query` (the read-only [`ReadStore`] methods), `logs` (error
//! results and their stderr, read back) and `columns`
//! (column mapping, shared by the others, which import nothing else of
//! each other).

mod apply;
mod columns;
mod community;
mod load;
mod logs;
mod query;
mod schema;
mod writes;

pub use schema::{AppliedStep, SCHEMA_VERSION, SchemaStatus};

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use peergrid_proto::Hash;
use peergrid_proto::spec::{JobSubmission, Plot};
use peergrid_proto::wire::{HostFacts, JobId, UnitId};
use rusqlite::{Connection, config::DbConfig};

use super::{
    Account, Ban, BanTarget, Bucket, CreditGrant, DatasetRow, DatasetSize, DatasetStamp,
    FailedUnit, FailedUnitLog, HostId, HostRecord, HostSummary, HostTask, JobInfo, JobStatus,
    LoadedUnit, ReadStore, ReissueUnits, Reissued, StderrTail, Store, StoreError, StoreOp,
    StoredStanding, Team, UnitLogs,
};

/// How many read connections to keep open.
const READERS: usize = 4;

pub struct SqliteStore {
    path: PathBuf,
    /// The only connection that writes: SQLite allows one writer at a
    /// time, so queuing here is cheaper than `SQLITE_BUSY` retries.
    writer: Mutex<Connection>,
    /// Idle read connections; a reader opens a new one when none is idle.
    readers: Mutex<Vec<Connection>>,
    full_sync: bool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// Applies the schema's migration steps the database lacks (module
    /// `schema`), and refuses a database a newer release made or upgraded
    /// ([`StoreError::NewerSchema`]) without changing it.
    pub fn open(path: &Path, full_sync: bool) -> Result<SqliteStore, StoreError> {
        let mut conn = open_conn(path, full_sync)?;
        let before = schema::status(&conn)?;
        for version in schema::install(&mut conn)? {
            if before.has_tables {
                let summary = schema::MIGRATIONS
                    .iter()
                    .find(|m| m.version == version)
                    .map_or("", |m| m.summary);
                tracing::info!(path = %path.display(), "database migrated to schema version {version}: {summary}");
            }
        }
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            full_sync,
        })
    }

    /// Where the schema of the database at `path` stands, changing
    /// nothing (`peergrid-coordinator migrate --status`).
    pub fn schema_status(path: &Path) -> Result<SchemaStatus, StoreError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        schema::status(&conn)
    }

    /// Writes a consistent copy of the database at `path` to the new file
    /// `to`, while other processes may be writing to it (`VACUUM INTO`:
    /// one read transaction's view, compacted, synced before it returns).
    pub fn snapshot(path: &Path, to: &Path) -> Result<(), StoreError> {
        let target = to
            .to_str()
            .ok_or_else(|| StoreError::Corrupt(format!("{} is not UTF-8", to.display())))?;
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute("VACUUM INTO ?1", [target])?;
        Ok(())
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = peergrid_os::lock(&self.writer);
        f(&mut conn)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = peergrid_os::lock(&self.readers).pop();
        let conn = match idle {
            Some(c) => c,
            None => open_conn(&self.path, self.full_sync)?,
        };
        let out = f(&conn);
        let mut pool = peergrid_os::lock(&self.readers);
        if pool.len() < READERS {
            pool.push(conn);
        }
        out
    }
}

fn open_conn(path: &Path, full_sync: bool) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if full_sync { "FULL" } else { "NORMAL" },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A row `INSERT OR REPLACE` deletes fires its delete triggers, so
    // `job_counts` counts the replaced dataset row out (schema step 3).
    conn.pragma_update(None, "recursive_triggers", "ON")?;
    // Plans fixed at prepare time. Without this SQLite re-plans a cached
    // statement whenever some bound values change (a join keyed by `?`,
    // for one), and the writer spent over a third of its time in the
    // parser re-preparing the same statements.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

impl ReadStore for SqliteStore {
    fn job_info(&self, id: JobId) -> Result<Option<JobInfo>, StoreError> {
        self.read(|c| query::job_info(c, id))
    }

    fn job_status(&self, id: JobId) -> Result<Option<JobStatus>, StoreError> {
        self.read(|c| query::job_status(c, id))
    }

    fn jobs(&self) -> Result<Vec<JobStatus>, StoreError> {
        self.read(query::jobs)
    }

    fn failed_units(&self, job: JobId) -> Result<Vec<FailedUnit>, StoreError> {
        self.read(|c| query::failed_units(c, job))
    }

    fn failed_unit_logs(
        &self,
        job: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FailedUnitLog>, StoreError> {
        self.read(|c| logs::failed_unit_logs(c, job, after, limit))
    }

    fn unit_logs(&self, job: JobId, unit: u64) -> Result<Option<UnitLogs>, StoreError> {
        self.read(|c| logs::unit_logs(c, job, unit))
    }

    fn host_standing(&self, id: HostId) -> Result<Option<StoredStanding>, StoreError> {
        self.read(|c| query::host_standing(c, id))
    }

    fn hosts_seen_since(&self, since_ms: u64) -> Result<u64, StoreError> {
        self.read(|c| query::hosts_seen_since(c, since_ms))
    }

    fn hosts(&self) -> Result<Vec<HostSummary>, StoreError> {
        self.read(query::hosts)
    }

    fn host(&self, id: HostId) -> Result<Option<HostSummary>, StoreError> {
        self.read(|c| query::host(c, id))
    }

    fn host_by_key(&self, key_hex: &str) -> Result<Option<HostId>, StoreError> {
        let Ok(key) = hex::decode(key_hex) else {
            return Ok(None);
        };
        self.read(|c| query::host_by_key(c, &key))
    }

    fn host_record(&self, id: HostId) -> Result<HostRecord, StoreError> {
        self.read(|c| query::host_record(c, id))
    }

    fn hosts_after(&self, after: HostId, limit: usize) -> Result<Vec<HostSummary>, StoreError> {
        self.read(|c| query::hosts_after(c, after, limit))
    }

    fn hosts_by_credit(&self, offset: u64, limit: usize) -> Result<Vec<HostSummary>, StoreError> {
        self.read(|c| query::hosts_by_credit(c, offset, limit))
    }

    fn host_tasks(
        &self,
        host: HostId,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<HostTask>, StoreError> {
        self.read(|c| community::host_tasks(c, host, offset, limit))
    }

    fn host_task_count(&self, host: HostId) -> Result<u64, StoreError> {
        self.read(|c| community::host_task_count(c, host))
    }

    fn teams(&self) -> Result<Vec<Team>, StoreError> {
        self.read(community::teams)
    }

    fn team(&self, id: u64) -> Result<Option<Team>, StoreError> {
        self.read(|c| community::team(c, id))
    }

    fn team_by_name(&self, name: &str) -> Result<Option<Team>, StoreError> {
        self.read(|c| community::team_by_name(c, name))
    }

    fn team_hosts(&self, team: Option<u64>) -> Result<Vec<HostSummary>, StoreError> {
        self.read(|c| community::team_hosts(c, team))
    }

    fn result_buckets(&self, since_ms: u64, width_ms: u64) -> Result<Vec<Bucket>, StoreError> {
        self.read(|c| query::result_buckets(c, since_ms, width_ms))
    }

    fn validated_buckets(&self, job: JobId, width_ms: u64) -> Result<Vec<Bucket>, StoreError> {
        self.read(|c| query::validated_buckets(c, job, width_ms))
    }

    fn dataset_page(
        &self,
        job: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError> {
        self.read(|c| query::dataset_page(c, job, after, limit))
    }

    fn dataset_page_within(
        &self,
        job: JobId,
        after: u64,
        max_rows: usize,
        max_bytes: u64,
    ) -> Result<Vec<DatasetRow>, StoreError> {
        self.read(|c| query::dataset_page_within(c, job, after, max_rows, max_bytes))
    }

    fn dataset_index(
        &self,
        job: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError> {
        self.read(|c| query::dataset_index(c, job, after, limit))
    }

    fn dataset_browse(
        &self,
        job: Option<JobId>,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError> {
        self.read(|c| query::dataset_browse(c, job, offset, limit))
    }

    fn dataset_size(&self, job: Option<JobId>) -> Result<DatasetSize, StoreError> {
        self.read(|c| query::dataset_size(c, job))
    }

    fn dataset_stamp(&self, job: JobId) -> Result<DatasetStamp, StoreError> {
        self.read(|c| query::dataset_stamp(c, job))
    }

    fn dataset_sample_within(
        &self,
        job: JobId,
        every: u64,
        after: u64,
        max_rows: usize,
        max_bytes: u64,
    ) -> Result<Vec<DatasetRow>, StoreError> {
        self.read(|c| query::dataset_sample_within(c, job, every, after, max_rows, max_bytes))
    }

    fn job_plots(&self, id: JobId) -> Result<Option<Vec<Plot>>, StoreError> {
        self.read(|c| query::job_plots(c, id))
    }

    fn credit_page(
        &self,
        host: Option<&str>,
        after: UnitId,
        limit: usize,
    ) -> Result<Vec<CreditGrant>, StoreError> {
        self.read(|c| query::credit_page(c, host, after, limit))
    }

    fn job_count(&self) -> Result<u64, StoreError> {
        self.read(query::job_count)
    }

    fn jobs_newest_first(&self, offset: u64, limit: usize) -> Result<Vec<JobStatus>, StoreError> {
        self.read(|c| query::jobs_newest_first(c, offset, limit))
    }

    fn blob_prefix(&self, hash: &Hash, max: usize) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        self.read(|c| query::blob_prefix(c, hash, max))
    }

    fn units_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(query::units_by_state)
    }
}

impl Store for SqliteStore {
    fn put_blob(&self, hash: &Hash, data: &[u8]) -> Result<(), StoreError> {
        self.write(|c| writes::put_blob(c, hash, data, peergrid_os::now_ms()))
    }

    fn put_blobs(&self, blobs: &[(Hash, Vec<u8>)]) -> Result<(), StoreError> {
        self.write(|c| writes::put_blobs(c, blobs, peergrid_os::now_ms()))
    }

    fn touch_uploads(&self, hashes: &[Hash], now_ms: u64) -> Result<(), StoreError> {
        self.write(|c| writes::touch_uploads(c, hashes, now_ms))
    }

    fn collect_blobs(&self, before_ms: u64, limit: usize) -> Result<Vec<Hash>, StoreError> {
        self.write(|c| writes::collect_blobs(c, before_ms, limit))
    }

    fn get_blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| load::get_blob(c, hash))
    }

    fn blob_len(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        self.read(|c| load::blob_len(c, hash))
    }

    fn missing_blobs(&self, hashes: &[Hash]) -> Result<Vec<Hash>, StoreError> {
        self.read(|c| load::missing_blobs(c, hashes))
    }

    fn job_blobs_after(&self, after: Option<&Hash>, limit: usize) -> Result<Vec<Hash>, StoreError> {
        self.read(|c| load::job_blobs_after(c, after, limit))
    }

    fn create_job(&self, job: &JobSubmission, now_ms: u64) -> Result<JobId, StoreError> {
        let columns = writes::JobColumns::of(job)?;
        self.write(|c| writes::create_job(c, job, &columns, now_ms))
    }

    fn upsert_host_in(
        &self,
        key: &[u8; 32],
        facts: &HostFacts,
        version: &str,
        account: &Account,
        now_ms: u64,
    ) -> Result<HostId, StoreError> {
        self.write(|c| writes::upsert_host_in(c, key, facts, version, account, now_ms))
    }

    fn host_key(&self, id: HostId) -> Result<Option<[u8; 32]>, StoreError> {
        self.read(|c| load::host_key(c, id))
    }

    fn tasks_sent_since(&self, host: HostId, since_ms: u64) -> Result<u32, StoreError> {
        self.read(|c| load::tasks_sent_since(c, host, since_ms))
    }

    fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        self.read(load::bans)
    }

    fn set_ban(
        &self,
        target: &BanTarget,
        reason: Option<&str>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.write(|c| writes::set_ban(c, target, reason, now_ms))
    }

    fn reissue(
        &self,
        job: JobId,
        which: &ReissueUnits,
        reason: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<Reissued>>, StoreError> {
        self.write(|c| writes::reissue(c, job, which, reason, now_ms))
    }

    fn apply_with_stderr(
        &self,
        ops: &[StoreOp],
        blobs: &[(Hash, Vec<u8>)],
        stderr: &[StderrTail],
    ) -> Result<(), StoreError> {
        self.write(|c| apply::apply(c, ops, blobs, stderr))
    }

    fn max_unit_id(&self) -> Result<UnitId, StoreError> {
        self.read(load::max_unit_id)
    }

    fn load_active_units(
        &self,
        after: UnitId,
        limit: usize,
        bytes_below: usize,
    ) -> Result<Vec<LoadedUnit>, StoreError> {
        self.read(|c| load::load_active_units(c, after, limit, bytes_below))
    }

    fn load_reopened_units(
        &self,
        after_seq: u64,
        limit: usize,
        bytes_below: usize,
    ) -> Result<Vec<(u64, LoadedUnit)>, StoreError> {
        self.read(|c| load::load_reopened_units(c, after_seq, limit, bytes_below))
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod dashboard_tests;

#[cfg(test)]
mod blob_tests;
#[cfg(test)]
mod community_tests;
#[cfg(test)]
mod count_tests;
#[cfg(test)]
mod job_tests;
