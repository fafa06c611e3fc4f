//! The embedded SQLite store: one file in WAL mode, one writer connection
//! and a small pool of readers so HTTP reads never wait behind a batch.
//!
//! `synchronous = NORMAL` in WAL mode: a committed transaction survives
//! `kill -9` of the coordinator (it is in the WAL, in the OS page cache);
//! only a power cut may lose the last few commits. `--full-sync` trades
//! throughput for surviving that too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use peergrid_proto::Hash;
use peergrid_proto::signing::ModuleSignature;
use peergrid_proto::spec::{JobSettings, JobSubmission};
use peergrid_proto::wire::{HostFacts, JobId, UnitId};
use rusqlite::{Connection, OptionalExtension, config::DbConfig, params};

use super::{
    Account, Ban, BanTarget, Bucket, CreditGrant, DatasetRow, DatasetSize, DatasetStamp,
    FailedUnit, HostId, HostRecord, HostSummary, JobInfo, JobStatus, LoadedUnit, Store, StoreError,
    StoreOp, StoredStanding,
};
use crate::credit::CreditTally;
use crate::quorum::{Copy, CopyState};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blobs (
    hash BLOB PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    module_hash BLOB NOT NULL,
    args_json TEXT NOT NULL,
    settings_json TEXT NOT NULL,
    signature_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    validator_json TEXT NOT NULL DEFAULT '{\"kind\":\"bitwise\"}'
);
CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    name TEXT NOT NULL,
    input_hash BLOB NOT NULL,
    -- 'active' until validated or failed
    state TEXT NOT NULL DEFAULT 'active',
    reason TEXT,
    -- when the unit was last reopened (a repair or a dispute moved its
    -- dataset row to dataset_history), in order: the feeder reloads units
    -- reopened after the last one it saw; 0 = never
    reopened_seq INTEGER NOT NULL DEFAULT 0,
    -- an audit disagreed with its row: one more agreeing result decides
    disputed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS units_job_state ON units(job_id, state);
CREATE INDEX IF NOT EXISTS units_active ON units(state, id);
CREATE TABLE IF NOT EXISTS results (
    unit_id INTEGER NOT NULL,
    host_id INTEGER NOT NULL,
    -- 'in_progress', 'success', 'error', 'timed_out' or 'voided'
    state TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    received_ms INTEGER,
    elapsed_ms INTEGER,
    output_hash BLOB,
    fuel INTEGER,
    engine TEXT,
    error TEXT,
    -- resumed from a checkpoint: fuel is an estimate
    resumed INTEGER NOT NULL DEFAULT 0,
    -- sent as the unit's single copy (adaptive replication)
    single INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_id, host_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dataset (
    unit_id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    output_hash BLOB NOT NULL,
    fuel INTEGER NOT NULL,
    hosts_json TEXT NOT NULL,
    -- engine configurations of the agreeing results, deduplicated
    engines_json TEXT NOT NULL,
    validated_ms INTEGER NOT NULL,
    -- 1: an adaptive single copy's row, its credit not yet granted
    credit_pending INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dataset_job ON dataset(job_id, unit_id);
-- Dataset rows replaced by a repair or a dispute, with when and why: the
-- dataset's history stays visible.
CREATE TABLE IF NOT EXISTS dataset_history (
    unit_id INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    output_hash BLOB NOT NULL,
    fuel INTEGER NOT NULL,
    hosts_json TEXT NOT NULL,
    engines_json TEXT NOT NULL,
    validated_ms INTEGER NOT NULL,
    replaced_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    -- 1: the row's credit had not been granted (a single copy unchecked)
    credit_pending INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dataset_history_job ON dataset_history(job_id, unit_id);
CREATE TABLE IF NOT EXISTS hosts (
    id INTEGER PRIMARY KEY,
    public_key BLOB NOT NULL UNIQUE,
    cores INTEGER NOT NULL,
    memory_bytes INTEGER NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    version TEXT NOT NULL,
    -- the volunteer account the host runs under: the account key in hex,
    -- proved by its signature on the host's attachment ('' = anonymous)
    account TEXT NOT NULL DEFAULT '',
    -- the account's display name, chosen by the volunteer
    account_name TEXT NOT NULL DEFAULT '',
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    -- trust streak and daily quota (NULL: the full quota), see trust.rs
    consecutive_valid INTEGER NOT NULL DEFAULT 0,
    daily_quota INTEGER,
    -- credit granted by dataset rows (credit.rs, CreditTally): the total,
    -- and the recent average as of the newest grant
    credit_total INTEGER NOT NULL DEFAULT 0,
    credit_recent REAL NOT NULL DEFAULT 0,
    credit_at_ms INTEGER NOT NULL DEFAULT 0
);
-- The operator's bans: kind 'host' (name = host id) or 'account'.
CREATE TABLE IF NOT EXISTS bans (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
-- The dashboard's throughput charts read the last hour of results, and a
-- host's page reads its copies: neither may scan every result. Copies not
-- yet received stay out of the first index.
CREATE INDEX IF NOT EXISTS results_received ON results(received_ms)
    WHERE received_ms IS NOT NULL;
-- By host and time sent: a host's page, and the count of tasks sent to a
-- host today that a restarted coordinator needs for its daily quota.
DROP INDEX IF EXISTS results_host;
CREATE INDEX IF NOT EXISTS results_host_sent ON results(host_id, sent_ms);
-- Which results and units name a blob: an output that lost its quorum is
-- deleted only when nothing else names its bytes.
-- (By the hash's first 8 bytes: a quarter of the index a whole hash
-- would make, on the hot path of every report.)
CREATE INDEX IF NOT EXISTS results_output ON results(substr(output_hash, 1, 8))
    WHERE output_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS units_input ON units(input_hash);
";

/// Deletes the bytes of every output of `unit`'s results other than its
/// validated `kept` one (results invalid against the quorum, and an
/// earlier row's output the unit no longer validates to), unless another
/// unit's result, any unit's input or any job's module or validator names
/// the same bytes. The results keep their output hashes: the record of
/// what each host claimed stays, its bytes do not.
///
/// Only for bitwise jobs: there every agreeing copy has `kept`'s bytes,
/// and audits and disputes compare hashes. A tolerance or custom
/// validator compares bytes, and its agreeing outputs differ.
fn delete_losing_outputs(
    tx: &rusqlite::Transaction<'_>,
    unit: UnitId,
    kept: &Hash,
) -> Result<(), StoreError> {
    // Usually none: every copy agreed. (One `DELETE … IN (SELECT …)`
    // scanned the whole blobs table per validated unit; `+unit_id` keeps
    // the planner on the primary key rather than the output index.)
    let losers: Vec<Vec<u8>> = tx
        .prepare_cached(
            "SELECT DISTINCT r.output_hash FROM results r
             JOIN units u ON u.id = r.unit_id JOIN jobs j ON j.id = u.job_id
             WHERE r.unit_id = ?1 AND +r.output_hash IS NOT NULL AND r.output_hash != ?2
               AND j.validator_json LIKE '%\"bitwise\"%'",
        )?
        .query_map(params![unit, &kept.0[..]], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for hash in losers {
        tx.prepare_cached(
            "DELETE FROM blobs WHERE hash = ?2
               AND NOT EXISTS (SELECT 1 FROM results WHERE output_hash IS NOT NULL
                               AND substr(output_hash, 1, 8) = substr(?2, 1, 8)
                               AND output_hash = ?2 AND unit_id != ?1)
               AND NOT EXISTS (SELECT 1 FROM units WHERE input_hash = ?2)
               AND NOT EXISTS (SELECT 1 FROM jobs WHERE module_hash = ?2
                               OR instr(validator_json, lower(hex(?2))) > 0)",
        )?
        .execute(params![unit, hash])?;
    }
    Ok(())
}

/// SQL true when dataset row `d`'s agreeing hosts include host `h`
/// (`hosts_json` holds quoted lower-case hex keys).
const HOST_AGREED: &str = "instr(d.hosts_json, '\"' || lower(hex(h.public_key)) || '\"') > 0";

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
    pub fn open(path: &Path, full_sync: bool) -> Result<SqliteStore, StoreError> {
        let conn = open_conn(path, full_sync)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            full_sync,
        })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => open_conn(&self.path, self.full_sync)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
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
    // Plans fixed at prepare time. Without this SQLite re-plans a cached
    // statement whenever some bound values change (a join keyed by `?`,
    // for one), and the writer spent over a third of its time in the
    // parser re-preparing the same statements.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// Columns added after the first release, for databases made before
/// them (`CREATE TABLE IF NOT EXISTS` leaves an old table as it was).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    (
        "jobs",
        "validator_json",
        "TEXT NOT NULL DEFAULT '{\"kind\":\"bitwise\"}'",
    ),
    ("results", "resumed", "INTEGER NOT NULL DEFAULT 0"),
    ("results", "single", "INTEGER NOT NULL DEFAULT 0"),
    ("hosts", "consecutive_valid", "INTEGER NOT NULL DEFAULT 0"),
    ("hosts", "daily_quota", "INTEGER"),
    ("hosts", "credit_total", "INTEGER NOT NULL DEFAULT 0"),
    ("hosts", "credit_recent", "REAL NOT NULL DEFAULT 0"),
    ("hosts", "credit_at_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("units", "reopened_seq", "INTEGER NOT NULL DEFAULT 0"),
    ("hosts", "account_name", "TEXT NOT NULL DEFAULT ''"),
    ("units", "disputed", "INTEGER NOT NULL DEFAULT 0"),
    ("dataset", "credit_pending", "INTEGER NOT NULL DEFAULT 0"),
    (
        "dataset_history",
        "credit_pending",
        "INTEGER NOT NULL DEFAULT 0",
    ),
];

/// Brings a database made by an older version up to this schema, in one
/// transaction: a crash halfway leaves it as it was, so the next start
/// migrates it again (and fills the credit tallies, which are filled only
/// when their columns are added).
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    let conn: &Connection = &tx;
    let mut added = Vec::new();
    for (table, column, ddl) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
            [column],
            |r| r.get(0),
        )?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ddl}"))?;
            added.push(*column);
        }
    }
    if added.contains(&"credit_total") {
        tally_credit(conn)?;
    }
    if added.contains(&"account_name") {
        // Accounts were self-chosen names, proved by nothing: keep them as
        // names only, the hosts anonymous until they attach with a key. A
        // ban of such a name becomes a ban of each host that ran under it.
        conn.execute_batch(
            "INSERT OR IGNORE INTO bans (kind, name, reason, at_ms)
               SELECT 'host', CAST(h.id AS TEXT), b.reason, b.at_ms
               FROM bans b JOIN hosts h ON h.account = b.name AND h.account != ''
               WHERE b.kind = 'account';
             DELETE FROM bans WHERE kind = 'account';
             UPDATE hosts SET account_name = account, account = '';",
        )?;
    }
    // Indexes on columns an older database gains above: made after them.
    // The leaderboard pages hosts by credit.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS units_reopened ON units(reopened_seq) WHERE reopened_seq > 0;
         CREATE INDEX IF NOT EXISTS hosts_credit ON hosts(credit_total DESC, id);
         CREATE INDEX IF NOT EXISTS dataset_pending ON dataset(hosts_json) WHERE credit_pending = 1;",
    )?;
    tx.commit()?;
    Ok(())
}

/// Fills every host's credit tally from the dataset: once, when a database
/// made before the tallies existed is opened.
fn tally_credit(conn: &Connection) -> Result<(), StoreError> {
    // The dataset names hosts by hex key.
    let mut tallies: HashMap<String, (HostId, CreditTally)> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT id, public_key FROM hosts")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let key = hex::encode(r.get::<_, Vec<u8>>(1)?);
            tallies.insert(key, (r.get(0)?, CreditTally::default()));
        }
    }
    {
        let mut stmt = conn.prepare(
            "SELECT fuel, hosts_json, validated_ms FROM dataset WHERE credit_pending = 0",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (fuel, at_ms): (u64, u64) = (r.get(0)?, r.get(2)?);
            let hosts: Vec<String> = json_col(&r.get::<_, String>(1)?)?;
            for host in &hosts {
                if let Some((_, tally)) = tallies.get_mut(&host.to_lowercase()) {
                    tally.grant(fuel, at_ms);
                }
            }
        }
    }
    for (host, tally) in tallies.values() {
        write_tally(conn, *host, tally)?;
    }
    Ok(())
}

/// A host's credit tally from three columns starting at `first`: total,
/// recent average, time of the newest grant.
fn tally_from(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<CreditTally> {
    Ok(CreditTally {
        total: r.get(first)?,
        recent: r.get(first + 1)?,
        at_ms: r.get(first + 2)?,
    })
}

/// The credit tallies a batch changes, read once and written once at its
/// end: a batch validates hundreds of units for a handful of hosts.
#[derive(Default)]
struct Tallies(HashMap<HostId, CreditTally>);

impl Tallies {
    fn get(&mut self, c: &Connection, host: HostId) -> Result<&mut CreditTally, StoreError> {
        use std::collections::hash_map::Entry;
        match self.0.entry(host) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let tally = c
                    .prepare_cached(
                        "SELECT credit_total, credit_recent, credit_at_ms FROM hosts WHERE id = ?1",
                    )?
                    .query_row([host], |r| tally_from(r, 0))
                    .optional()?
                    .unwrap_or_default();
                Ok(e.insert(tally))
            }
        }
    }

    fn write(self, c: &Connection) -> Result<(), StoreError> {
        for (host, tally) in &self.0 {
            write_tally(c, *host, tally)?;
        }
        Ok(())
    }
}

fn write_tally(c: &Connection, host: HostId, t: &CreditTally) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE hosts SET credit_total = ?2, credit_recent = ?3, credit_at_ms = ?4 WHERE id = ?1",
    )?
    .execute(params![host, clamp_i64(t.total), t.recent, t.at_ms])?;
    Ok(())
}

/// A count as SQLite's `INTEGER` (an `i64`) holds it.
fn clamp_i64(n: u64) -> u64 {
    n.min(i64::MAX as u64)
}

fn hash_col(bytes: Vec<u8>) -> Result<Hash, StoreError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("hash column is not 32 bytes".into()))?;
    Ok(Hash(arr))
}

fn json_col<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn copy_from_row(r: &rusqlite::Row<'_>) -> Result<CopyState, StoreError> {
    let state: String = r.get(2)?;
    Ok(match state.as_str() {
        "in_progress" => CopyState::InProgress {
            deadline_ms: r.get(3)?,
        },
        "success" => CopyState::Success {
            output: hash_col(r.get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default())?,
            fuel: r.get::<_, Option<u64>>(5)?.unwrap_or(0),
            engine: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            resumed: r.get(8)?,
        },
        "error" => CopyState::Error(r.get::<_, Option<String>>(6)?.unwrap_or_default()),
        "timed_out" => CopyState::TimedOut,
        "voided" => CopyState::Voided(r.get::<_, Option<String>>(6)?.unwrap_or_default()),
        other => return Err(StoreError::Corrupt(format!("unknown result state {other}"))),
    })
}

fn status_row(conn: &Connection, id: JobId) -> Result<Option<JobStatus>, StoreError> {
    let head = conn
        .query_row(
            "SELECT name, module_hash, created_ms, settings_json, signature_json FROM jobs WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, u64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((name, module, created_ms, settings, signature)) = head else {
        return Ok(None);
    };
    let mut counts = [0u64; 3];
    let mut stmt =
        conn.prepare_cached("SELECT state, count(*) FROM units WHERE job_id = ?1 GROUP BY state")?;
    let rows = stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        match state.as_str() {
            "active" => counts[0] = n,
            "validated" => counts[1] = n,
            "failed" => counts[2] = n,
            _ => {}
        }
    }
    let in_progress: u64 = conn.query_row(
        "SELECT count(DISTINCT r.unit_id) FROM results r JOIN units u ON u.id = r.unit_id
         WHERE u.job_id = ?1 AND u.state = 'active' AND r.state = 'in_progress'",
        [id],
        |r| r.get(0),
    )?;
    let units_total = counts.iter().fold(0u64, |a, n| a.saturating_add(*n));
    Ok(Some(JobStatus {
        finished: counts[1].saturating_add(counts[2]) == units_total,
        id,
        name,
        module: hash_col(module)?,
        researcher: json_col::<ModuleSignature>(&signature)?.endorsement.name,
        created_ms,
        settings: json_col(&settings)?,
        units_total,
        validated: counts[1],
        failed: counts[2],
        in_progress,
        pending: counts[0] - in_progress.min(counts[0]),
    }))
}

impl Store for SqliteStore {
    fn put_blob(&self, hash: &Hash, data: &[u8]) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT OR IGNORE INTO blobs (hash, data) VALUES (?1, ?2)",
                params![&hash.0[..], data],
            )?;
            Ok(())
        })
    }

    fn get_blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT data FROM blobs WHERE hash = ?1",
                [&hash.0[..]],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    fn blob_len(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT length(data) FROM blobs WHERE hash = ?1",
                [&hash.0[..]],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    fn missing_blobs(&self, hashes: &[Hash]) -> Result<Vec<Hash>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT 1 FROM blobs WHERE hash = ?1")?;
            let mut missing = Vec::new();
            for h in hashes {
                if !stmt.exists([&h.0[..]])? {
                    missing.push(*h);
                }
            }
            Ok(missing)
        })
    }

    fn create_job(&self, job: &JobSubmission, now_ms: u64) -> Result<JobId, StoreError> {
        let args =
            serde_json::to_string(&job.args).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let settings =
            serde_json::to_string(&job.settings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let signature = serde_json::to_string(&job.signature)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let validator = serde_json::to_string(&job.validator)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO jobs (name, module_hash, args_json, settings_json, signature_json, created_ms, validator_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![job.name, &job.module.0[..], args, settings, signature, now_ms, validator],
            )?;
            let id = tx.last_insert_rowid() as JobId;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO units (job_id, name, input_hash) VALUES (?1, ?2, ?3)",
                )?;
                for u in &job.units {
                    stmt.execute(params![id, u.name, &u.input.0[..]])?;
                }
            }
            tx.commit()?;
            Ok(id)
        })
    }

    fn job_info(&self, id: JobId) -> Result<Option<JobInfo>, StoreError> {
        self.read(|c| {
            let row = c
                .query_row(
                    "SELECT name, module_hash, args_json, settings_json, signature_json, validator_json
                     FROM jobs WHERE id = ?1",
                    [id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                        ))
                    },
                )
                .optional()?;
            let Some((name, module, args, settings, signature, validator)) = row else {
                return Ok(None);
            };
            Ok(Some(JobInfo {
                id,
                name,
                module: hash_col(module)?,
                args: json_col(&args)?,
                settings: json_col::<JobSettings>(&settings)?,
                signature: json_col(&signature)?,
                validator: json_col(&validator)?,
            }))
        })
    }

    fn job_status(&self, id: JobId) -> Result<Option<JobStatus>, StoreError> {
        self.read(|c| status_row(c, id))
    }

    fn jobs(&self) -> Result<Vec<JobStatus>, StoreError> {
        self.read(|c| {
            let ids: Vec<JobId> = c
                .prepare("SELECT id FROM jobs ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(s) = status_row(c, id)? {
                    out.push(s);
                }
            }
            Ok(out)
        })
    }

    fn upsert_host_in(
        &self,
        key: &[u8; 32],
        facts: &HostFacts,
        version: &str,
        account: &Account,
        now_ms: u64,
    ) -> Result<HostId, StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO hosts (public_key, cores, memory_bytes, os, arch, version, first_seen_ms, last_seen_ms, account, account_name)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)
                 ON CONFLICT(public_key) DO UPDATE SET cores = ?2, memory_bytes = ?3, os = ?4,
                   arch = ?5, version = ?6, last_seen_ms = ?7,
                   -- a Hello without an attachment does not detach a host
                   -- from its account (nor from a ban on it)
                   account = CASE WHEN ?8 = '' THEN account ELSE ?8 END,
                   account_name = CASE WHEN ?8 = '' THEN account_name ELSE ?9 END",
                params![&key[..], facts.cores, facts.memory_bytes, facts.os, facts.arch, version, now_ms, account.id, account.name],
            )?;
            Ok(c.query_row("SELECT id FROM hosts WHERE public_key = ?1", [&key[..]], |r| {
                r.get(0)
            })?)
        })
    }

    fn host_standing(&self, id: HostId) -> Result<Option<StoredStanding>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT account, cores, consecutive_valid, daily_quota, first_seen_ms,
                        EXISTS (SELECT 1 FROM dataset WHERE credit_pending = 1
                                AND hosts_json = '[\"' || lower(hex(public_key)) || '\"]')
                 FROM hosts WHERE id = ?1",
                [id],
                |r| {
                    Ok(StoredStanding {
                        account: r.get(0)?,
                        cores: r.get(1)?,
                        consecutive_valid: r.get(2)?,
                        quota: r.get(3)?,
                        first_seen_ms: r.get(4)?,
                        pending_credit: r.get(5)?,
                    })
                },
            )
            .optional()?)
        })
    }

    fn tasks_sent_since(&self, host: HostId, since_ms: u64) -> Result<u32, StoreError> {
        self.read(|c| {
            let n: u64 = c
                .prepare_cached(
                    "SELECT count(*) FROM results WHERE host_id = ?1 AND sent_ms >= ?2",
                )?
                .query_row(params![host, since_ms], |r| r.get(0))?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
    }

    fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT kind, name, reason, at_ms FROM bans ORDER BY at_ms")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, name, reason, at_ms) = row?;
                let target = match kind.as_str() {
                    "host" => BanTarget::Host(
                        name.parse()
                            .map_err(|_| StoreError::Corrupt(format!("banned host id {name}")))?,
                    ),
                    "account" => BanTarget::Account(name),
                    other => return Err(StoreError::Corrupt(format!("ban kind {other}"))),
                };
                out.push(Ban {
                    target,
                    reason,
                    at_ms,
                });
            }
            Ok(out)
        })
    }

    fn set_ban(
        &self,
        target: &BanTarget,
        reason: Option<&str>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (kind, name) = match target {
            BanTarget::Host(id) => ("host", id.to_string()),
            BanTarget::Account(a) => ("account", a.clone()),
        };
        self.write(|c| {
            let changed = match reason {
                Some(reason) => c.execute(
                    "INSERT OR REPLACE INTO bans (kind, name, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![kind, name, reason, now_ms],
                )?,
                None => c.execute(
                    "DELETE FROM bans WHERE kind = ?1 AND name = ?2",
                    params![kind, name],
                )?,
            };
            Ok(changed > 0)
        })
    }

    fn host_key(&self, id: HostId) -> Result<Option<[u8; 32]>, StoreError> {
        self.read(|c| {
            let key: Option<Vec<u8>> = c
                .query_row("SELECT public_key FROM hosts WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            key.map(|k| hash_col(k).map(|h| h.0)).transpose()
        })
    }

    fn apply(&self, ops: &[StoreOp], blobs: &[(Hash, Vec<u8>)]) -> Result<(), StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            {
                let mut put_blob =
                    tx.prepare_cached("INSERT OR IGNORE INTO blobs (hash, data) VALUES (?1, ?2)")?;
                for (h, data) in blobs {
                    put_blob.execute(params![&h.0[..], data])?;
                }
            }
            let mut tallies = Tallies::default();
            for op in ops {
                apply_op(&tx, op, &mut tallies)?;
            }
            tallies.write(&tx)?;
            // After every op of the batch: a later report in the same
            // transaction may name the bytes a validation would delete.
            for op in ops {
                if let StoreOp::Validate { unit, output, .. } = op {
                    delete_losing_outputs(&tx, *unit, output)?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn max_unit_id(&self) -> Result<UnitId, StoreError> {
        self.read(|c| Ok(c.query_row("SELECT coalesce(max(id), 0) FROM units", [], |r| r.get(0))?))
    }

    fn load_active_units(
        &self,
        after: UnitId,
        limit: usize,
    ) -> Result<Vec<LoadedUnit>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.job_id, b.data, u.disputed FROM units u JOIN blobs b ON b.hash = u.input_hash
                 WHERE u.state = 'active' AND u.id > ?1 ORDER BY u.id LIMIT ?2",
            )?;
            let mut units: Vec<LoadedUnit> = stmt
                .query_map(params![after, limit as i64], |r| {
                    Ok(LoadedUnit {
                        id: r.get(0)?,
                        job: r.get(1)?,
                        input: r.get(2)?,
                        copies: Vec::new(),
                        single: false,
                        disputed: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let (Some(first), Some(last)) = (units.first(), units.last()) else {
                return Ok(units);
            };
            let (lo, hi) = (first.id, last.id);
            let mut stmt = c.prepare_cached(
                "SELECT unit_id, host_id, state, deadline_ms, output_hash, fuel, error, engine, resumed,
                        single
                 FROM results WHERE unit_id BETWEEN ?1 AND ?2 ORDER BY unit_id, sent_ms",
            )?;
            let mut rows = stmt.query(params![lo, hi])?;
            let mut i = 0;
            while let Some(r) = rows.next()? {
                let unit: UnitId = r.get(0)?;
                while i < units.len() && units[i].id < unit {
                    i += 1;
                }
                if i == units.len() {
                    break;
                }
                if units[i].id != unit {
                    continue;
                }
                let state = copy_from_row(r)?;
                // Rows come in the order sent: the flag of the latest
                // assignment is the unit's, as in the scheduler's memory.
                units[i].single = r.get::<_, bool>(9)?;
                units[i].copies.push(Copy {
                    host: r.get(1)?,
                    state,
                });
            }
            Ok(units)
        })
    }

    fn load_reopened_units(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, LoadedUnit)>, StoreError> {
        self.read(|c| {
            // `+u.state`: through the partial index of reopened units.
            // With `u.state` SQLite chose the (state, id) index and read
            // every active unit with its input on each feeder wake (a
            // third of the grid's throughput).
            let mut stmt = c.prepare_cached(
                "SELECT u.reopened_seq, u.id, u.job_id, b.data, u.disputed
                 FROM units u JOIN blobs b ON b.hash = u.input_hash
                 WHERE u.reopened_seq > 0 AND u.reopened_seq > ?1 AND +u.state = 'active'
                 ORDER BY u.reopened_seq LIMIT ?2",
            )?;
            let mut units: Vec<(u64, LoadedUnit)> = stmt
                .query_map(params![after_seq, limit as i64], |r| {
                    Ok((
                        r.get(0)?,
                        LoadedUnit {
                            id: r.get(1)?,
                            job: r.get(2)?,
                            input: r.get(3)?,
                            copies: Vec::new(),
                            single: false,
                            disputed: r.get(4)?,
                        },
                    ))
                })?
                .collect::<Result<_, _>>()?;
            let mut stmt = c.prepare_cached(
                "SELECT unit_id, host_id, state, deadline_ms, output_hash, fuel, error, engine, resumed,
                        single
                 FROM results WHERE unit_id = ?1 ORDER BY sent_ms",
            )?;
            for (_, unit) in &mut units {
                let mut rows = stmt.query([unit.id])?;
                while let Some(r) = rows.next()? {
                    let state = copy_from_row(r)?;
                    unit.single = r.get::<_, bool>(9)?;
                    unit.copies.push(Copy {
                        host: r.get(1)?,
                        state,
                    });
                }
            }
            Ok(units)
        })
    }

    fn dataset_page(
        &self,
        job: JobId,
        after: UnitId,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.unit_id, u.name, u.input_hash, j.module_hash, d.output_hash, d.hosts_json,
                        d.fuel, d.validated_ms, b.data, d.engines_json
                 FROM dataset d JOIN units u ON u.id = d.unit_id JOIN jobs j ON j.id = d.job_id
                 JOIN blobs b ON b.hash = d.output_hash
                 WHERE d.job_id = ?1 AND d.unit_id > ?2 ORDER BY d.unit_id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![job, after, limit as i64], |r| {
                Ok((
                    r.get::<_, UnitId>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, u64>(6)?,
                    r.get::<_, u64>(7)?,
                    r.get::<_, Vec<u8>>(8)?,
                    r.get::<_, String>(9)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (
                    unit,
                    name,
                    input,
                    module,
                    output_hash,
                    hosts,
                    fuel,
                    validated_ms,
                    output,
                    engines,
                ) = row?;
                out.push(DatasetRow {
                    job,
                    unit,
                    name,
                    input_hash: hash_col(input)?,
                    module_hash: hash_col(module)?,
                    output_hash: hash_col(output_hash)?,
                    hosts: json_col(&hosts)?,
                    engines: json_col(&engines)?,
                    fuel,
                    validated_ms,
                    output,
                });
            }
            Ok(out)
        })
    }

    fn failed_units(&self, job: JobId) -> Result<Vec<FailedUnit>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, reason FROM units WHERE job_id = ?1 AND state = 'failed' ORDER BY id",
            )?;
            let rows = stmt.query_map([job], |r| {
                Ok(FailedUnit {
                    unit: r.get(0)?,
                    name: r.get(1)?,
                    reason: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn hosts_seen_since(&self, since_ms: u64) -> Result<u64, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM hosts WHERE last_seen_ms >= ?1",
                [since_ms],
                |r| r.get(0),
            )?)
        })
    }

    fn hosts(&self) -> Result<Vec<HostSummary>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY id"))?;
            Ok(stmt
                .query_map([], host_from_row)?
                .collect::<Result<_, _>>()?)
        })
    }

    fn host(&self, id: HostId) -> Result<Option<HostSummary>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?1"),
                [id],
                host_from_row,
            )
            .optional()?)
        })
    }

    fn host_by_key(&self, key_hex: &str) -> Result<Option<HostId>, StoreError> {
        let Ok(key) = hex::decode(key_hex) else {
            return Ok(None);
        };
        self.read(|c| {
            Ok(
                c.query_row("SELECT id FROM hosts WHERE public_key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
    }

    fn host_record(&self, id: HostId) -> Result<HostRecord, StoreError> {
        self.read(|c| {
            let sql = format!(
                "SELECT
                   coalesce(sum(r.state = 'success' AND d.unit_id IS NOT NULL AND {HOST_AGREED}), 0),
                   coalesce(sum(r.state = 'success' AND d.unit_id IS NOT NULL AND NOT {HOST_AGREED}), 0),
                   coalesce(sum(r.state = 'success' AND d.unit_id IS NULL), 0),
                   coalesce(sum(r.state = 'error'), 0),
                   coalesce(sum(r.state = 'timed_out'), 0),
                   coalesce(sum(r.state = 'in_progress'), 0)
                 FROM results r JOIN hosts h ON h.id = r.host_id
                 LEFT JOIN dataset d ON d.unit_id = r.unit_id
                 WHERE r.host_id = ?1"
            );
            Ok(c.query_row(&sql, [id], |r| {
                Ok(HostRecord {
                    valid: r.get(0)?,
                    invalid: r.get(1)?,
                    unvalidated: r.get(2)?,
                    errors: r.get(3)?,
                    timeouts: r.get(4)?,
                    in_progress: r.get(5)?,
                })
            })?)
        })
    }

    fn result_buckets(&self, since_ms: u64, width_ms: u64) -> Result<Vec<Bucket>, StoreError> {
        let width = width_ms.max(1);
        self.read(|c| {
            buckets(
                c,
                &format!(
                    "SELECT (received_ms / ?2) * ?2 AS b, count(*), {}
                     FROM results WHERE received_ms >= ?1 AND state = 'success'
                     GROUP BY b ORDER BY b",
                    saturating_sum("fuel")
                ),
                params![since_ms, width],
            )
        })
    }

    fn validated_buckets(&self, job: JobId, width_ms: u64) -> Result<Vec<Bucket>, StoreError> {
        let width = width_ms.max(1);
        self.read(|c| {
            buckets(
                c,
                &format!(
                    "SELECT (validated_ms / ?2) * ?2 AS b, count(*), {}
                     FROM dataset WHERE job_id = ?1 GROUP BY b ORDER BY b",
                    saturating_sum("fuel")
                ),
                params![job, width],
            )
        })
    }

    fn dataset_size(&self, job: Option<JobId>) -> Result<DatasetSize, StoreError> {
        self.read(|c| {
            let select = format!(
                "SELECT count(*), {}
                 FROM dataset d JOIN blobs b ON b.hash = d.output_hash",
                saturating_sum("length(b.data)")
            );
            let map = |r: &rusqlite::Row<'_>| {
                Ok(DatasetSize {
                    rows: r.get(0)?,
                    bytes: join_halves(r.get(1)?, r.get(2)?),
                })
            };
            Ok(match job {
                Some(job) => c.query_row(&format!("{select} WHERE d.job_id = ?1"), [job], map)?,
                None => c.query_row(&select, [], map)?,
            })
        })
    }

    fn dataset_browse(
        &self,
        job: Option<JobId>,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError> {
        self.read(|c| Self::dashboard_dataset_browse(c, job, offset, limit))
    }

    fn credit_page(
        &self,
        host: Option<&str>,
        after: UnitId,
        limit: usize,
    ) -> Result<Vec<CreditGrant>, StoreError> {
        self.read(|c| {
            let map = |r: &rusqlite::Row<'_>| {
                Ok((
                    r.get::<_, UnitId>(0)?,
                    r.get::<_, JobId>(1)?,
                    r.get::<_, u64>(2)?,
                    r.get::<_, u64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            };
            let select = "SELECT unit_id, job_id, fuel, validated_ms, hosts_json FROM dataset";
            let raw: Vec<_> = match host {
                Some(key) => c
                    .prepare_cached(&format!(
                        "{select} WHERE unit_id > ?1 AND instr(hosts_json, ?3) > 0
                           AND credit_pending = 0 ORDER BY unit_id LIMIT ?2"
                    ))?
                    .query_map(
                        params![after, limit as i64, format!("\"{}\"", key.to_lowercase())],
                        map,
                    )?
                    .collect::<Result<_, _>>()?,
                None => c
                    .prepare_cached(&format!(
                        "{select} WHERE unit_id > ?1 AND credit_pending = 0
                         ORDER BY unit_id LIMIT ?2"
                    ))?
                    .query_map(params![after, limit as i64], map)?
                    .collect::<Result<_, _>>()?,
            };
            raw.into_iter()
                .map(|(unit, job, fuel, validated_ms, hosts)| {
                    Ok(CreditGrant {
                        job,
                        unit,
                        fuel,
                        validated_ms,
                        hosts: json_col(&hosts)?,
                    })
                })
                .collect()
        })
    }
    fn dataset_page_within(
        &self,
        job: JobId,
        after: UnitId,
        max_rows: usize,
        max_bytes: u64,
    ) -> Result<Vec<DatasetRow>, StoreError> {
        self.read(|c| {
            // One snapshot for the rows and their outputs.
            let tx = c.unchecked_transaction()?;
            let mut page = Vec::new();
            let mut bytes = 0u64;
            for (mut row, len) in dataset_meta(&tx, job, after, max_rows)? {
                bytes = bytes.saturating_add(len);
                if !page.is_empty() && bytes > max_bytes {
                    break;
                }
                row.output = tx
                    .prepare_cached("SELECT data FROM blobs WHERE hash = ?1")?
                    .query_row([&row.output_hash.0[..]], |r| r.get(0))?;
                page.push(row);
            }
            tx.finish()?;
            Ok(page)
        })
    }

    fn dataset_index(
        &self,
        job: JobId,
        after: UnitId,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError> {
        self.read(|c| {
            Ok(dataset_meta(c, job, after, limit)?
                .into_iter()
                .map(|(row, _)| row)
                .collect())
        })
    }

    fn dataset_stamp(&self, job: JobId) -> Result<DatasetStamp, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT count(*), coalesce(max(unit_id), 0), coalesce(max(validated_ms), 0)
                 FROM dataset WHERE job_id = ?1",
                [job],
                |r| {
                    Ok(DatasetStamp {
                        rows: r.get(0)?,
                        last_unit: r.get(1)?,
                        last_validated_ms: r.get(2)?,
                    })
                },
            )?)
        })
    }

    fn hosts_after(&self, after: HostId, limit: usize) -> Result<Vec<HostSummary>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {HOST_COLUMNS} FROM hosts WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            Ok(stmt
                .query_map(params![after, limit as i64], host_from_row)?
                .collect::<Result<_, _>>()?)
        })
    }

    fn hosts_by_credit(&self, offset: u64, limit: usize) -> Result<Vec<HostSummary>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {HOST_COLUMNS} FROM hosts ORDER BY credit_total DESC, id LIMIT ?1 OFFSET ?2"
            ))?;
            Ok(stmt
                .query_map(params![limit as i64, offset], host_from_row)?
                .collect::<Result<_, _>>()?)
        })
    }
}

const HOST_COLUMNS: &str = "id, public_key, cores, memory_bytes, os, arch, version, first_seen_ms, \
     last_seen_ms, account, credit_total, credit_recent, credit_at_ms, account_name";

fn host_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HostSummary> {
    Ok(HostSummary {
        id: r.get(0)?,
        public_key: hex::encode(r.get::<_, Vec<u8>>(1)?),
        cores: r.get(2)?,
        memory_bytes: r.get(3)?,
        os: r.get(4)?,
        arch: r.get(5)?,
        version: r.get(6)?,
        first_seen_ms: r.get(7)?,
        last_seen_ms: r.get(8)?,
        account: r.get(9)?,
        credit: tally_from(r, 10)?,
        account_name: r.get(13)?,
    })
}

/// Two SQL columns whose values [`join_halves`] turns into the sum of the
/// non-negative integer expression `expr`, saturating at `u64::MAX`.
///
/// SQLite's `sum()` fails the whole query with "integer overflow" once a
/// sum passes `i64::MAX`, which forged fuel reaches with two rows, and
/// `total()` loses exactness past 2^53. Summing the high and low 32 bits
/// apart cannot overflow before 2^31 rows, and is exact.
fn saturating_sum(expr: &str) -> String {
    format!("coalesce(sum(max({expr}, 0) >> 32), 0), coalesce(sum(max({expr}, 0) & 4294967295), 0)")
}

/// The sum [`saturating_sum`]'s columns stand for.
fn join_halves(high: u64, low: u64) -> u64 {
    let sum = (u128::from(high) << 32) + u128::from(low);
    u64::try_from(sum).unwrap_or(u64::MAX)
}

fn buckets(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Bucket>, StoreError> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(p, |r| {
        Ok(Bucket {
            start_ms: r.get(0)?,
            count: r.get(1)?,
            fuel: join_halves(r.get(2)?, r.get(3)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A dataset row's columns without its output, and the output's length
/// (which SQLite reads without loading the blob).
const DATASET_META: &str =
    "SELECT d.unit_id, u.name, u.input_hash, j.module_hash, d.output_hash, d.hosts_json,
            d.fuel, d.validated_ms, d.engines_json, length(b.data)
     FROM dataset d JOIN units u ON u.id = d.unit_id JOIN jobs j ON j.id = d.job_id
     JOIN blobs b ON b.hash = d.output_hash
     WHERE d.job_id = ?1 AND d.unit_id > ?2 ORDER BY d.unit_id LIMIT ?3";

/// Up to `limit` rows of a job's dataset after unit `after`, without
/// outputs, each with its output's length.
fn dataset_meta(
    c: &Connection,
    job: JobId,
    after: UnitId,
    limit: usize,
) -> Result<Vec<(DatasetRow, u64)>, StoreError> {
    let mut stmt = c.prepare_cached(DATASET_META)?;
    let mut rows = stmt.query(params![job, after, limit as i64])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let row = DatasetRow {
            job,
            unit: r.get(0)?,
            name: r.get(1)?,
            input_hash: hash_col(r.get(2)?)?,
            module_hash: hash_col(r.get(3)?)?,
            output_hash: hash_col(r.get(4)?)?,
            hosts: json_col(&r.get::<_, String>(5)?)?,
            fuel: r.get(6)?,
            validated_ms: r.get(7)?,
            engines: json_col(&r.get::<_, String>(8)?)?,
            output: Vec::new(),
        };
        out.push((row, r.get(9)?));
    }
    Ok(out)
}

/// Dashboard queries: read-only, on reader connections.
impl SqliteStore {
    fn dashboard_dataset_browse(
        c: &Connection,
        job: Option<JobId>,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<DatasetRow>, StoreError> {
        let select =
            "SELECT d.unit_id, d.job_id, u.name, u.input_hash, j.module_hash, d.output_hash,
                        d.hosts_json, d.engines_json, d.fuel, d.validated_ms
                 FROM dataset d JOIN units u ON u.id = d.unit_id JOIN jobs j ON j.id = d.job_id";
        let map = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, UnitId>(0)?,
                r.get::<_, JobId>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, u64>(8)?,
                r.get::<_, u64>(9)?,
            ))
        };
        let raw: Vec<_> = match job {
            Some(job) => c
                .prepare_cached(&format!(
                    "{select} WHERE d.job_id = ?1 ORDER BY d.unit_id LIMIT ?2 OFFSET ?3"
                ))?
                .query_map(params![job, limit as i64, offset], map)?
                .collect::<Result<_, _>>()?,
            None => c
                .prepare_cached(&format!("{select} ORDER BY d.unit_id LIMIT ?1 OFFSET ?2"))?
                .query_map(params![limit as i64, offset], map)?
                .collect::<Result<_, _>>()?,
        };
        raw.into_iter()
            .map(
                |(unit, job, name, input, module, output, hosts, engines, fuel, validated_ms)| {
                    Ok(DatasetRow {
                        job,
                        unit,
                        name,
                        input_hash: hash_col(input)?,
                        module_hash: hash_col(module)?,
                        output_hash: hash_col(output)?,
                        hosts: json_col(&hosts)?,
                        engines: json_col(&engines)?,
                        fuel,
                        validated_ms,
                        output: Vec::new(),
                    })
                },
            )
            .collect()
    }
}

fn apply_op(
    tx: &rusqlite::Transaction<'_>,
    op: &StoreOp,
    tallies: &mut Tallies,
) -> Result<(), StoreError> {
    match op {
        StoreOp::Assign {
            unit,
            host,
            sent_ms,
            deadline_ms,
            single,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO results (unit_id, host_id, state, sent_ms, deadline_ms, single)
                 VALUES (?1, ?2, 'in_progress', ?3, ?4, ?5)",
            )?
            .execute(params![unit, host, sent_ms, deadline_ms, single])?;
        }
        StoreOp::Report {
            unit,
            host,
            state,
            elapsed_ms,
            received_ms,
        } => {
            let (name, output, fuel, engine, error) = match state {
                CopyState::Success {
                    output,
                    fuel,
                    engine,
                    ..
                } => (
                    "success",
                    Some(output.0.to_vec()),
                    Some(*fuel),
                    Some(engine.as_str()),
                    None,
                ),
                CopyState::Error(e) => ("error", None, None, None, Some(e.as_str())),
                CopyState::Voided(e) => ("voided", None, None, None, Some(e.as_str())),
                CopyState::TimedOut => ("timed_out", None, None, None, None),
                CopyState::InProgress { .. } => ("in_progress", None, None, None, None),
            };
            let resumed = matches!(state, CopyState::Success { resumed: true, .. });
            tx.prepare_cached(
                "UPDATE results SET state = ?3, received_ms = ?4, elapsed_ms = ?5,
                   output_hash = ?6, fuel = ?7, error = ?8, engine = ?9, resumed = ?10
                 WHERE unit_id = ?1 AND host_id = ?2",
            )?
            .execute(params![
                unit,
                host,
                name,
                received_ms,
                elapsed_ms,
                output,
                fuel,
                error,
                engine,
                resumed
            ])?;
        }
        StoreOp::TimedOut { unit, host } => {
            tx.prepare_cached(
                "UPDATE results SET state = 'timed_out' WHERE unit_id = ?1 AND host_id = ?2
                 AND state = 'in_progress'",
            )?
            .execute(params![unit, host])?;
        }
        StoreOp::Validate {
            unit,
            output,
            fuel,
            hosts,
            at_ms,
            pending_credit,
        } => {
            // A verdict that replaces an earlier row takes its grants back.
            revoke_row(tx, tallies, *unit)?;
            let mut keys = Vec::with_capacity(hosts.len());
            let mut engines: Vec<String> = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT h.public_key, coalesce(r.engine, '') FROM hosts h
                     LEFT JOIN results r ON r.host_id = h.id AND r.unit_id = ?2 WHERE h.id = ?1",
                )?;
                for h in hosts {
                    let (k, e): (Vec<u8>, String) =
                        stmt.query_row(params![h, unit], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    keys.push(hex::encode(k));
                    if !engines.contains(&e) {
                        engines.push(e);
                    }
                    if !pending_credit {
                        tallies.get(tx, *h)?.grant(*fuel, *at_ms);
                    }
                }
            }
            let hosts_json =
                serde_json::to_string(&keys).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let engines_json =
                serde_json::to_string(&engines).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO dataset
                   (unit_id, job_id, output_hash, fuel, hosts_json, engines_json, validated_ms,
                    credit_pending)
                 SELECT id, job_id, ?2, ?3, ?4, ?6, ?5, ?7 FROM units WHERE id = ?1",
            )?
            .execute(params![
                unit,
                &output.0[..],
                fuel,
                hosts_json,
                at_ms,
                engines_json,
                pending_credit
            ])?;
            tx.prepare_cached("UPDATE units SET state = 'validated' WHERE id = ?1")?
                .execute([unit])?;
        }
        StoreOp::GrantCredit { host } => {
            let key: Option<Vec<u8>> = tx
                .prepare_cached("SELECT public_key FROM hosts WHERE id = ?1")?
                .query_row([host], |r| r.get(0))
                .optional()?;
            let Some(key) = key else { return Ok(()) };
            let hosts_json = serde_json::to_string(&[hex::encode(key)])
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let rows: Vec<(UnitId, u64, u64)> = tx
                .prepare_cached(
                    "SELECT unit_id, fuel, validated_ms FROM dataset
                     WHERE credit_pending = 1 AND hosts_json = ?1",
                )?
                .query_map([&hosts_json], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let tally = tallies.get(tx, *host)?;
            for (_, fuel, at_ms) in &rows {
                tally.grant(*fuel, *at_ms);
            }
            let mut clear =
                tx.prepare_cached("UPDATE dataset SET credit_pending = 0 WHERE unit_id = ?1")?;
            for (unit, _, _) in &rows {
                clear.execute([unit])?;
            }
        }
        StoreOp::Fail {
            unit,
            reason,
            at_ms: _,
        } => {
            tx.prepare_cached("UPDATE units SET state = 'failed', reason = ?2 WHERE id = ?1")?
                .execute(params![unit, reason])?;
        }
        StoreOp::Repair {
            host,
            reason,
            at_ms,
        } => {
            let key: Option<Vec<u8>> = tx
                .prepare_cached("SELECT public_key FROM hosts WHERE id = ?1")?
                .query_row([host], |r| r.get(0))
                .optional()?;
            let Some(key) = key else { return Ok(()) };
            let quoted = format!("\"{}\"", hex::encode(key));
            // Its successful copies of validated units whose row names it.
            let units: Vec<UnitId> = tx
                .prepare_cached(
                    "SELECT d.unit_id FROM results r JOIN dataset d ON d.unit_id = r.unit_id
                     WHERE r.host_id = ?1 AND r.state = 'success' AND instr(d.hosts_json, ?2) > 0",
                )?
                .query_map(params![host, quoted], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for unit in units {
                reopen(tx, tallies, unit, reason, *at_ms, false)?;
                tx.prepare_cached(
                    "UPDATE results SET state = 'voided', error = ?3 WHERE unit_id = ?1 AND host_id = ?2",
                )?
                .execute(params![unit, host, reason])?;
            }
            // Its other results count for nothing either.
            tx.prepare_cached(
                "UPDATE results SET state = 'voided', error = ?2 WHERE host_id = ?1 AND state = 'success'",
            )?
            .execute(params![host, reason])?;
        }
        StoreOp::Dispute { unit, at_ms } => {
            reopen(
                tx,
                tallies,
                *unit,
                "an audit disagreed with this row",
                *at_ms,
                true,
            )?;
        }
        StoreOp::Void { unit, host, reason } => {
            tx.prepare_cached(
                "UPDATE results SET state = 'voided', error = ?3 WHERE unit_id = ?1 AND host_id = ?2",
            )?
            .execute(params![unit, host, reason])?;
        }
        StoreOp::Standing {
            host,
            consecutive_valid,
            quota,
        } => {
            tx.prepare_cached(
                "UPDATE hosts SET consecutive_valid = ?2, daily_quota = ?3 WHERE id = ?1",
            )?
            .execute(params![
                host,
                consecutive_valid.min(&(i64::MAX as u64)),
                quota
            ])?;
        }
        StoreOp::Seen { host, at_ms } => {
            tx.prepare_cached(
                "UPDATE hosts SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1",
            )?
            .execute(params![host, at_ms])?;
        }
    }
    Ok(())
}

/// Moves a unit's dataset row to the history (replaced at `at_ms` for
/// `reason`) and makes the unit active again, next in the feeder's order of
/// reopened units.
/// Takes back the credit a unit's dataset row granted (none while it
/// waits for a check), from every host it names: the row is replaced or
/// reopened.
fn revoke_row(
    tx: &rusqlite::Transaction<'_>,
    tallies: &mut Tallies,
    unit: UnitId,
) -> Result<(), StoreError> {
    let row: Option<(u64, String, u64, bool)> = tx
        .prepare_cached(
            "SELECT fuel, hosts_json, validated_ms, credit_pending FROM dataset WHERE unit_id = ?1",
        )?
        .query_row([unit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((fuel, hosts, at_ms, false)) = row else {
        return Ok(());
    };
    let hosts: Vec<String> = json_col(&hosts)?;
    for key in hosts.iter().filter_map(|h| hex::decode(h).ok()) {
        let id: Option<HostId> = tx
            .prepare_cached("SELECT id FROM hosts WHERE public_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        if let Some(id) = id {
            tallies.get(tx, id)?.revoke(fuel, at_ms);
        }
    }
    Ok(())
}

/// Moves a unit's dataset row to the history and makes the unit active
/// again; the credit the row granted is taken back from all its hosts
/// (honest ones are credited again when the unit validates anew).
fn reopen(
    tx: &rusqlite::Transaction<'_>,
    tallies: &mut Tallies,
    unit: UnitId,
    reason: &str,
    at_ms: u64,
    disputed: bool,
) -> Result<(), StoreError> {
    revoke_row(tx, tallies, unit)?;
    let moved = tx
        .prepare_cached(
            "INSERT INTO dataset_history (unit_id, job_id, output_hash, fuel, hosts_json, engines_json,
                                          validated_ms, replaced_ms, reason, credit_pending)
             SELECT unit_id, job_id, output_hash, fuel, hosts_json, engines_json, validated_ms, ?2, ?3,
                    credit_pending
             FROM dataset WHERE unit_id = ?1",
        )?
        .execute(params![unit, at_ms, reason])?;
    if moved == 0 {
        return Ok(());
    }
    tx.prepare_cached("DELETE FROM dataset WHERE unit_id = ?1")?
        .execute([unit])?;
    // The next in the feeder's order (the partial index finds the last).
    tx.prepare_cached(
        "UPDATE units SET state = 'active', reason = NULL, disputed = max(disputed, ?2),
           reopened_seq = (SELECT coalesce(max(reopened_seq), 0) + 1 FROM units WHERE reopened_seq > 0)
         WHERE id = ?1",
    )?
    .execute(params![unit, disputed])?;
    // Copies still out when the unit finished were forgotten by the
    // scheduler: they must not come back as running copies.
    tx.prepare_cached(
        "UPDATE results SET state = 'voided', error = 'the unit finished before this copy reported'
         WHERE unit_id = ?1 AND state = 'in_progress'",
    )?
    .execute([unit])?;
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod dashboard_tests;
