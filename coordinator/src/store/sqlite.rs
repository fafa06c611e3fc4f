//! The embedded SQLite store: one file in WAL mode, one writer connection
//! and a small pool of readers so HTTP reads never wait behind a batch.
//!
//! `synchronous = NORMAL` in WAL mode: a committed transaction survives
//! `kill -9` of the coordinator (it is in the WAL, in the OS page cache);
//! only a power cut may lose the last few commits. `--full-sync` trades
//! throughput for surviving that too.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use peergrid_proto::Hash;
use peergrid_proto::signing::ModuleSignature;
use peergrid_proto::spec::{JobSettings, JobSubmission};
use peergrid_proto::wire::{HostFacts, JobId, UnitId};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    DatasetRow, FailedUnit, HostId, JobInfo, JobStatus, LoadedUnit, Store, StoreError, StoreOp,
};
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
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    name TEXT NOT NULL,
    input_hash BLOB NOT NULL,
    -- 'active' until validated or failed
    state TEXT NOT NULL DEFAULT 'active',
    reason TEXT
);
CREATE INDEX IF NOT EXISTS units_job_state ON units(job_id, state);
CREATE INDEX IF NOT EXISTS units_active ON units(state, id);
CREATE TABLE IF NOT EXISTS results (
    unit_id INTEGER NOT NULL,
    host_id INTEGER NOT NULL,
    -- 'in_progress', 'success', 'error' or 'timed_out'
    state TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    received_ms INTEGER,
    elapsed_ms INTEGER,
    output_hash BLOB,
    fuel INTEGER,
    engine TEXT,
    error TEXT,
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
    validated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dataset_job ON dataset(job_id, unit_id);
CREATE TABLE IF NOT EXISTS hosts (
    id INTEGER PRIMARY KEY,
    public_key BLOB NOT NULL UNIQUE,
    cores INTEGER NOT NULL,
    memory_bytes INTEGER NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    version TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
";

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
    Ok(conn)
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
        },
        "error" => CopyState::Error(r.get::<_, Option<String>>(6)?.unwrap_or_default()),
        "timed_out" => CopyState::TimedOut,
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
    let units_total = counts.iter().sum();
    Ok(Some(JobStatus {
        finished: counts[1] + counts[2] == units_total,
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
        self.write(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO jobs (name, module_hash, args_json, settings_json, signature_json, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![job.name, &job.module.0[..], args, settings, signature, now_ms],
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
                    "SELECT name, module_hash, args_json, settings_json, signature_json
                     FROM jobs WHERE id = ?1",
                    [id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    },
                )
                .optional()?;
            let Some((name, module, args, settings, signature)) = row else {
                return Ok(None);
            };
            Ok(Some(JobInfo {
                id,
                name,
                module: hash_col(module)?,
                args: json_col(&args)?,
                settings: json_col::<JobSettings>(&settings)?,
                signature: json_col(&signature)?,
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

    fn upsert_host(
        &self,
        key: &[u8; 32],
        facts: &HostFacts,
        version: &str,
        now_ms: u64,
    ) -> Result<HostId, StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO hosts (public_key, cores, memory_bytes, os, arch, version, first_seen_ms, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                 ON CONFLICT(public_key) DO UPDATE SET cores = ?2, memory_bytes = ?3, os = ?4,
                   arch = ?5, version = ?6, last_seen_ms = ?7",
                params![&key[..], facts.cores, facts.memory_bytes, facts.os, facts.arch, version, now_ms],
            )?;
            Ok(c.query_row("SELECT id FROM hosts WHERE public_key = ?1", [&key[..]], |r| {
                r.get(0)
            })?)
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
            for op in ops {
                apply_op(&tx, op)?;
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
                "SELECT u.id, u.job_id, b.data FROM units u JOIN blobs b ON b.hash = u.input_hash
                 WHERE u.state = 'active' AND u.id > ?1 ORDER BY u.id LIMIT ?2",
            )?;
            let mut units: Vec<LoadedUnit> = stmt
                .query_map(params![after, limit as i64], |r| {
                    Ok(LoadedUnit {
                        id: r.get(0)?,
                        job: r.get(1)?,
                        input: r.get(2)?,
                        copies: Vec::new(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            let (Some(first), Some(last)) = (units.first(), units.last()) else {
                return Ok(units);
            };
            let (lo, hi) = (first.id, last.id);
            let mut stmt = c.prepare_cached(
                "SELECT unit_id, host_id, state, deadline_ms, output_hash, fuel, error, engine
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
                units[i].copies.push(Copy {
                    host: r.get(1)?,
                    state,
                });
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
}

fn apply_op(tx: &rusqlite::Transaction<'_>, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::Assign {
            unit,
            host,
            sent_ms,
            deadline_ms,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO results (unit_id, host_id, state, sent_ms, deadline_ms)
                 VALUES (?1, ?2, 'in_progress', ?3, ?4)",
            )?
            .execute(params![unit, host, sent_ms, deadline_ms])?;
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
                } => (
                    "success",
                    Some(output.0.to_vec()),
                    Some(*fuel),
                    Some(engine.as_str()),
                    None,
                ),
                CopyState::Error(e) => ("error", None, None, None, Some(e.as_str())),
                CopyState::TimedOut => ("timed_out", None, None, None, None),
                CopyState::InProgress { .. } => ("in_progress", None, None, None, None),
            };
            tx.prepare_cached(
                "UPDATE results SET state = ?3, received_ms = ?4, elapsed_ms = ?5,
                   output_hash = ?6, fuel = ?7, error = ?8, engine = ?9
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
                engine
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
        } => {
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
                }
            }
            let hosts_json =
                serde_json::to_string(&keys).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let engines_json =
                serde_json::to_string(&engines).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO dataset
                   (unit_id, job_id, output_hash, fuel, hosts_json, engines_json, validated_ms)
                 SELECT id, job_id, ?2, ?3, ?4, ?6, ?5 FROM units WHERE id = ?1",
            )?
            .execute(params![
                unit,
                &output.0[..],
                fuel,
                hosts_json,
                at_ms,
                engines_json
            ])?;
            tx.prepare_cached("UPDATE units SET state = 'validated' WHERE id = ?1")?
                .execute([unit])?;
        }
        StoreOp::Fail {
            unit,
            reason,
            at_ms: _,
        } => {
            tx.prepare_cached("UPDATE units SET state = 'failed', reason = ?2 WHERE id = ?1")?
                .execute(params![unit, reason])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use peergrid_proto::spec::UnitSpec;

    fn test_signature() -> ModuleSignature {
        ModuleSignature {
            endorsement: peergrid_proto::signing::Endorsement {
                researcher_key: "00".repeat(32),
                name: "Ada".into(),
                project_signature: "00".repeat(64),
            },
            signature: "00".repeat(64),
        }
    }

    #[test]
    fn job_round_trip_and_restart_recovers_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStore::open(&path, false).unwrap();
        let input = b"unit input".to_vec();
        let ih = Hash::of(&input);
        store.put_blob(&ih, &input).unwrap();
        store.put_blob(&Hash([9; 32]), b"module").unwrap();
        assert_eq!(
            store.missing_blobs(&[ih, Hash([1; 32])]).unwrap(),
            vec![Hash([1; 32])]
        );
        let sub = JobSubmission {
            name: "j".into(),
            module: Hash([9; 32]),
            args: vec!["-x".into()],
            settings: JobSettings::default(),
            signature: test_signature(),
            units: vec![
                UnitSpec {
                    name: "a".into(),
                    input: ih,
                },
                UnitSpec {
                    name: "b".into(),
                    input: ih,
                },
            ],
        };
        let job = store.create_job(&sub, 1).unwrap();
        let host = store
            .upsert_host(&[5; 32], &HostFacts::default(), "t", 2)
            .unwrap();
        let out = b"answer".to_vec();
        let oh = Hash::of(&out);
        store
            .apply(
                &[
                    StoreOp::Assign {
                        unit: 1,
                        host,
                        sent_ms: 3,
                        deadline_ms: 99,
                    },
                    StoreOp::Assign {
                        unit: 2,
                        host,
                        sent_ms: 3,
                        deadline_ms: 99,
                    },
                    StoreOp::Report {
                        unit: 1,
                        host,
                        state: CopyState::Success {
                            output: oh,
                            fuel: 7,
                            engine: "e".into(),
                        },
                        elapsed_ms: 1,
                        received_ms: 4,
                    },
                    StoreOp::Validate {
                        unit: 1,
                        output: oh,
                        fuel: 7,
                        hosts: vec![host],
                        at_ms: 5,
                    },
                ],
                &[(oh, out.clone())],
            )
            .unwrap();
        drop(store);

        let store = SqliteStore::open(&path, false).unwrap();
        let st = store.job_status(job).unwrap().unwrap();
        assert_eq!(
            (st.units_total, st.validated, st.in_progress, st.pending),
            (2, 1, 1, 0)
        );
        let active = store.load_active_units(0, 10).unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(
            active[0].copies,
            vec![Copy {
                host,
                state: CopyState::InProgress { deadline_ms: 99 }
            }]
        );
        let rows = store.dataset_page(job, 0, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].output, out);
        assert_eq!(rows[0].hosts, vec![hex::encode([5u8; 32])]);
        assert_eq!(
            store.job_info(job).unwrap().unwrap().args,
            vec!["-x".to_string()]
        );
    }
}
