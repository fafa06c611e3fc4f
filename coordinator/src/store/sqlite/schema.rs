//! The SQLite store's schema and its versions.
//!
//! A database records the migration steps applied to it in
//! `schema_version` (one row per step: its number, when, what it did); its
//! version is the highest number there, 0 for a database without the table
//! (new and empty, or made by a release from before versions). Opening a
//! database applies the steps it lacks, in order, each in its own
//! transaction with its row, so a crash or a failing step leaves the
//! database at the last step that completed. A database whose version is
//! above [`SCHEMA_VERSION`] was made or upgraded by a newer release and is
//! refused untouched.
//!
//! Step 1 makes the layout of 2026-12 ([`SCHEMA`]) and brings a database of
//! any earlier release up to it (the columns those releases added one by
//! one, [`ADDED_COLUMNS`]). [`SCHEMA`] and step 1 are frozen from now on: a
//! change to the schema is a new step at the end of [`MIGRATIONS`].

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior};

use super::columns::{json_col, write_tally};
use crate::credit::CreditTally;
use crate::store::{HostId, StoreError};

/// One step of the schema's history.
pub(crate) struct Migration {
    /// Its number: the database's version once it is applied. Steps are
    /// numbered 1, 2, … in the order they apply.
    pub(crate) version: u32,
    /// What it does, in a line (`peergrid-coordinator migrate` prints it,
    /// and `schema_version` keeps it).
    pub(crate) summary: &'static str,
    apply: fn(&Connection) -> Result<(), StoreError>,
}

/// Every step, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        summary: "the layout of 2026-12: every table and index, and a database of an earlier release brought up to it",
        apply: layout_of_2026_12,
    },
    Migration {
        version: 2,
        summary: "loose uploads: blob_uploads lists the blobs no job or result names yet, with when they came, for garbage collection",
        apply: loose_uploads,
    },
    Migration {
        version: 3,
        summary: "kept counts: job_counts (each job's units by state, its dataset's rows and bytes), result_minutes and job_minutes (successful copies received and dataset rows by minute), kept as rows change, so no page counts rows",
        apply: job_counts,
    },
];

/// The version this build's schema is at: the last step's number.
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// A step applied to a database, as `schema_version` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedStep {
    pub version: u32,
    pub at_ms: u64,
    pub summary: String,
}

/// Where a database's schema stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The highest step applied; 0 for none (empty, or from before
    /// versions).
    pub version: u32,
    /// Whether the database holds any table (0 and false: a new file).
    pub has_tables: bool,
    /// The steps applied, oldest first.
    pub applied: Vec<AppliedStep>,
    /// The steps this build would apply, in order: number and summary.
    pub pending: Vec<(u32, &'static str)>,
}

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_ms INTEGER NOT NULL,
    summary TEXT NOT NULL
)";

/// Where `conn`'s schema stands; changes nothing.
pub(super) fn status(conn: &Connection) -> Result<SchemaStatus, StoreError> {
    let (has_tables, versioned): (bool, bool) = conn.query_row(
        "SELECT count(*) > 0, coalesce(sum(name = 'schema_version'), 0) > 0
         FROM sqlite_schema WHERE type = 'table'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut applied = Vec::new();
    if versioned {
        let mut stmt = conn
            .prepare("SELECT version, applied_ms, summary FROM schema_version ORDER BY version")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            applied.push(AppliedStep {
                version: r.get(0)?,
                at_ms: r.get(1)?,
                summary: r.get(2)?,
            });
        }
    }
    let version = applied.last().map_or(0, |s| s.version);
    let pending = MIGRATIONS
        .iter()
        .filter(|m| m.version > version)
        .map(|m| (m.version, m.summary))
        .collect();
    Ok(SchemaStatus {
        version,
        has_tables,
        applied,
        pending,
    })
}

/// Applies the steps `conn`'s database lacks ([`MIGRATIONS`]); returns
/// those it applied. Refuses a database from a newer release, unchanged.
pub(super) fn install(conn: &mut Connection) -> Result<Vec<u32>, StoreError> {
    migrate_with(conn, MIGRATIONS, peergrid_os::now_ms())
}

/// [`install`] with the steps and the clock given: the tests' way in.
pub(super) fn migrate_with(
    conn: &mut Connection,
    steps: &[Migration],
    at_ms: u64,
) -> Result<Vec<u32>, StoreError> {
    let known = steps.last().map_or(0, |m| m.version);
    // A read first: a database already at this version is opened without
    // taking the write lock (so a read-only file opens, and a command
    // beside a running `serve` does not wait for it).
    let found = status(conn)?.version;
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    let mut applied = Vec::new();
    if found == known {
        return Ok(applied);
    }
    for step in steps {
        // IMMEDIATE: the write lock first, so two processes opening one
        // file at once apply each step once (the second sees it done).
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(VERSION_TABLE)?;
        let version: u32 = tx
            .query_row("SELECT max(version) FROM schema_version", [], |r| {
                r.get::<_, Option<u32>>(0)
            })
            .optional()?
            .flatten()
            .unwrap_or(0);
        if version > known {
            return Err(StoreError::NewerSchema {
                found: version,
                known,
            });
        }
        if version >= step.version {
            continue;
        }
        (step.apply)(&tx)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_ms, summary) VALUES (?1, ?2, ?3)",
            rusqlite::params![step.version, at_ms, step.summary],
        )?;
        tx.commit()?;
        applied.push(step.version);
    }
    Ok(applied)
}

/// Step 1: creates the tables and indexes a database lacks, then brings
/// what an older release made up to them ([`add_columns`]).
fn layout_of_2026_12(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA)?;
    add_columns(conn)
}

/// Step 2: `blob_uploads`, the uploaded blobs nothing names yet (a job
/// claims its blobs when it is stored; garbage collection deletes those
/// left loose past a grace period). A database's blobs that nothing
/// names when the step runs count as uploaded then: one pass over every
/// blob, with each output table read once.
fn loose_uploads(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS blob_uploads (
             hash BLOB PRIMARY KEY,
             at_ms INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )?;
    conn.execute(
        "INSERT OR IGNORE INTO blob_uploads (hash, at_ms)
         SELECT b.hash, ?1 FROM blobs b
         WHERE NOT EXISTS (SELECT 1 FROM units WHERE input_hash = b.hash)
           AND b.hash NOT IN (SELECT output_hash FROM results WHERE output_hash IS NOT NULL)
           AND b.hash NOT IN (SELECT output_hash FROM retired_results WHERE output_hash IS NOT NULL)
           AND b.hash NOT IN (SELECT output_hash FROM dataset)
           AND b.hash NOT IN (SELECT output_hash FROM dataset_history)
           AND b.hash NOT IN (SELECT module_hash FROM jobs)
           -- last: a scan of the jobs, for the few blobs still in question
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE instr(validator_json, lower(hex(b.hash))) > 0)",
        [peergrid_os::now_ms()],
    )?;
    Ok(())
}

/// Step 3: kept counts, so no page or status call counts rows.
/// `job_counts` holds each job's units by state and its dataset's rows,
/// bytes and latest validation; `job_minutes` each job's dataset rows by
/// the minute they were validated. Triggers keep them in step with
/// `units` and `dataset` (so every path that changes those counts, and a
/// `REPLACE` counts its deletion too: connections set
/// `recursive_triggers`); `create_job` starts a job's counts with its
/// units. `result_minutes` holds the successful copies received by minute,
/// which `apply` adds once per batch (a copy voided later stays counted:
/// it was received). Filled once from the rows. And `results_out`, the copies in
/// progress, which a job's count of units in progress reads.
fn job_counts(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS job_counts (
             job_id INTEGER PRIMARY KEY,
             active INTEGER NOT NULL DEFAULT 0,
             validated INTEGER NOT NULL DEFAULT 0,
             failed INTEGER NOT NULL DEFAULT 0,
             cancelled INTEGER NOT NULL DEFAULT 0,
             dataset_rows INTEGER NOT NULL DEFAULT 0,
             -- the rows' output bytes
             dataset_bytes INTEGER NOT NULL DEFAULT 0,
             -- the latest validated_ms of a row added (never lowered)
             last_validated_ms INTEGER NOT NULL DEFAULT 0
         );
         DELETE FROM job_counts;
         INSERT INTO job_counts (job_id) SELECT id FROM jobs;
         UPDATE job_counts SET
             active = (SELECT count(*) FROM units u WHERE u.job_id = job_counts.job_id AND u.state = 'active'),
             validated = (SELECT count(*) FROM units u WHERE u.job_id = job_counts.job_id AND u.state = 'validated'),
             failed = (SELECT count(*) FROM units u WHERE u.job_id = job_counts.job_id AND u.state = 'failed'),
             cancelled = (SELECT count(*) FROM units u WHERE u.job_id = job_counts.job_id AND u.state = 'cancelled'),
             dataset_rows = (SELECT count(*) FROM dataset d WHERE d.job_id = job_counts.job_id),
             dataset_bytes = (SELECT coalesce(sum(length(b.data)), 0) FROM dataset d
                              JOIN blobs b ON b.hash = d.output_hash WHERE d.job_id = job_counts.job_id),
             last_validated_ms = (SELECT coalesce(max(validated_ms), 0) FROM dataset d
                                  WHERE d.job_id = job_counts.job_id);
         -- successful copies by the minute they came (ms / 60 000), as
         -- received: `apply` adds each batch's, once per minute (a
         -- trigger per result cost the writer most of its time)
         CREATE TABLE IF NOT EXISTS result_minutes (
             minute INTEGER PRIMARY KEY,
             count INTEGER NOT NULL DEFAULT 0,
             fuel INTEGER NOT NULL DEFAULT 0
         );
         DELETE FROM result_minutes;
         INSERT INTO result_minutes (minute, count, fuel)
           SELECT received_ms / 60000, count(*), CAST(min(total(fuel), 9223372036854775807) AS INTEGER)
           FROM (SELECT received_ms, fuel FROM results
                 WHERE received_ms IS NOT NULL AND output_hash IS NOT NULL
                 UNION ALL
                 SELECT received_ms, fuel FROM retired_results
                 WHERE received_ms IS NOT NULL AND output_hash IS NOT NULL)
           GROUP BY 1;
         -- each job's dataset rows by the minute they were validated
         CREATE TABLE IF NOT EXISTS job_minutes (
             job_id INTEGER NOT NULL,
             minute INTEGER NOT NULL,
             count INTEGER NOT NULL DEFAULT 0,
             fuel INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (job_id, minute)
         ) WITHOUT ROWID;
         DELETE FROM job_minutes;
         INSERT INTO job_minutes (job_id, minute, count, fuel)
           SELECT job_id, validated_ms / 60000, count(*), CAST(min(total(fuel), 9223372036854775807) AS INTEGER)
           FROM dataset GROUP BY 1, 2;
         -- the copies out: how many units of a job are in progress is
         -- read along these, not along every active unit
         CREATE INDEX IF NOT EXISTS results_out ON results(unit_id) WHERE state = 'in_progress';
         -- copies of finished units still marked out: the scheduler forgot
         -- them (`apply` now voids them as their unit finishes)
         UPDATE results SET state = 'voided', error = 'the unit finished before this copy reported'
           WHERE state = 'in_progress' AND unit_id IN (SELECT id FROM units WHERE state != 'active');
         CREATE TRIGGER IF NOT EXISTS units_state_counted AFTER UPDATE OF state ON units
           WHEN OLD.state IS NOT NEW.state
         BEGIN
           UPDATE job_counts SET
             active = active + (NEW.state = 'active') - (OLD.state = 'active'),
             validated = validated + (NEW.state = 'validated') - (OLD.state = 'validated'),
             failed = failed + (NEW.state = 'failed') - (OLD.state = 'failed'),
             cancelled = cancelled + (NEW.state = 'cancelled') - (OLD.state = 'cancelled')
           WHERE job_id = NEW.job_id;
         END;
         CREATE TRIGGER IF NOT EXISTS dataset_row_counted AFTER INSERT ON dataset
         BEGIN
           UPDATE job_counts SET
             dataset_rows = dataset_rows + 1,
             dataset_bytes = dataset_bytes
               + coalesce((SELECT length(data) FROM blobs WHERE hash = NEW.output_hash), 0),
             last_validated_ms = max(last_validated_ms, NEW.validated_ms)
           WHERE job_id = NEW.job_id;
           INSERT OR IGNORE INTO job_minutes (job_id, minute) VALUES (NEW.job_id, NEW.validated_ms / 60000);
           UPDATE job_minutes SET count = count + 1,
             fuel = CAST(min(fuel + NEW.fuel, 9223372036854775807) AS INTEGER)
           WHERE job_id = NEW.job_id AND minute = NEW.validated_ms / 60000;
         END;
         CREATE TRIGGER IF NOT EXISTS dataset_row_uncounted AFTER DELETE ON dataset
         BEGIN
           UPDATE job_counts SET
             dataset_rows = dataset_rows - 1,
             dataset_bytes = dataset_bytes
               - coalesce((SELECT length(data) FROM blobs WHERE hash = OLD.output_hash), 0)
           WHERE job_id = OLD.job_id;
           UPDATE job_minutes SET count = count - 1, fuel = max(fuel - OLD.fuel, 0)
           WHERE job_id = OLD.job_id AND minute = OLD.validated_ms / 60000;
         END;",
    )?;
    Ok(())
}

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
    validator_json TEXT NOT NULL DEFAULT '{\"kind\":\"bitwise\"}',
    -- when the researcher cancelled it (its unfinished units are then
    -- 'cancelled'); NULL while it is not
    cancelled_ms INTEGER,
    -- 1: its units' seeds derive from their numbers within the job (jobs
    -- submitted since units were numbered); 0: from their project-wide
    -- ids, as when the job ran, so its results stay reproducible
    seed_by_number INTEGER NOT NULL DEFAULT 0,
    -- the spec's [[plot]]s, drawn on the job's page
    plots_json TEXT NOT NULL DEFAULT '[]',
    -- the dataset's licence and citation (`DatasetTerms` as JSON); NULL
    -- when the job names neither
    terms_json TEXT
);
CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    name TEXT NOT NULL,
    input_hash BLOB NOT NULL,
    -- 'active' until 'validated', 'failed' or 'cancelled' 
    state TEXT NOT NULL DEFAULT 'active',
    reason TEXT,
    -- when the unit was last reopened (a repair or a dispute moved its
    -- dataset row to dataset_history), in order: the feeder reloads units
    -- reopened after the last one it saw; 0 = never
    reopened_seq INTEGER NOT NULL DEFAULT 0,
    -- an audit disagreed with its row: one more agreeing result decides
    disputed INTEGER NOT NULL DEFAULT 0,
    -- the unit's number within its job, from 1 in submission order: the
    -- number users see (CLI, API, pages, exports) and the one its
    -- randomness seed derives from; `id` is the project-wide key
    number INTEGER NOT NULL DEFAULT 0
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
    -- an error result: the end of the task's stderr, as its worker sent it
    stderr TEXT,
    PRIMARY KEY (unit_id, host_id)
) WITHOUT ROWID;
-- copies of units the operator reissued (`reissue`): on record, no
-- longer counted; a host may hold a copy of the unit in `results` again
CREATE TABLE IF NOT EXISTS retired_results (
    unit_id INTEGER NOT NULL,
    host_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    received_ms INTEGER,
    elapsed_ms INTEGER,
    output_hash BLOB,
    fuel INTEGER,
    engine TEXT,
    error TEXT,
    resumed INTEGER NOT NULL,
    single INTEGER NOT NULL,
    stderr TEXT,
    retired_ms INTEGER NOT NULL,
    reason TEXT NOT NULL
);
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
    credit_at_ms INTEGER NOT NULL DEFAULT 0,
    -- the name the volunteer chose for the host ('' = unnamed), its CPU
    -- model ('' = unknown) and the tasks it runs at once (0 = not said:
    -- a worker older than these columns)
    name TEXT NOT NULL DEFAULT '',
    cpu_model TEXT NOT NULL DEFAULT '',
    slots INTEGER NOT NULL DEFAULT 0,
    -- the team (teams.id) its account's attachment names (NULL = none)
    team_id INTEGER
);
-- Teams: made when an account first names one (its founder), deleted when
-- its last host leaves, so there are never more teams than hosts. Names
-- are unique regardless of ASCII case: `Rust` and `rust` are one team,
-- shown as its founder spelled it.
CREATE TABLE IF NOT EXISTS teams (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    -- the founding account's key (hex)
    founder TEXT NOT NULL,
    created_ms INTEGER NOT NULL
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
    ("results", "stderr", "TEXT"),
    ("units", "number", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "cancelled_ms", "INTEGER"),
    ("jobs", "seed_by_number", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "plots_json", "TEXT NOT NULL DEFAULT '[]'"),
    ("jobs", "terms_json", "TEXT"),
    ("hosts", "name", "TEXT NOT NULL DEFAULT ''"),
    ("hosts", "cpu_model", "TEXT NOT NULL DEFAULT ''"),
    ("hosts", "slots", "INTEGER NOT NULL DEFAULT 0"),
    ("hosts", "team_id", "INTEGER"),
];

/// Brings a database made by a release from before versions up to
/// [`SCHEMA`], within step 1's transaction (and fills the credit tallies,
/// which are filled only when their columns are added).
fn add_columns(conn: &Connection) -> Result<(), StoreError> {
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
    if added.contains(&"number") {
        // Units were numbered project-wide: number each job's units from 1
        // in the order they were stored, which is the order submitted.
        conn.execute_batch(
            "UPDATE units SET number = n.number
               FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY id) AS number
                     FROM units) AS n
               WHERE units.id = n.id;",
        )?;
    }
    // Indexes on columns an older database gains above: made after them.
    // The leaderboard pages hosts by credit.
    conn.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS units_job_number ON units(job_id, number);
         CREATE INDEX IF NOT EXISTS units_reopened ON units(reopened_seq) WHERE reopened_seq > 0;
         CREATE INDEX IF NOT EXISTS hosts_credit ON hosts(credit_total DESC, id);
         CREATE INDEX IF NOT EXISTS hosts_team ON hosts(team_id) WHERE team_id IS NOT NULL;
         CREATE INDEX IF NOT EXISTS dataset_pending ON dataset(hosts_json) WHERE credit_pending = 1;",
    )?;
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

#[cfg(test)]
mod tests;
