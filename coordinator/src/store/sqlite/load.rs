//! Reads of the scheduling path, on reader connections: blobs by hash,
//! what the feeder loads into the scheduler's window (unfinished units
//! with every copy issued), and what a host's join needs (its key, the
//! tasks it was sent today, the bans in force).

use peergrid_proto::Hash;
use peergrid_proto::wire::UnitId;
use rusqlite::{Connection, OptionalExtension, params};

use super::columns::{hash_col, json_col};
use crate::quorum::{Copy, CopyState};
use crate::store::{Ban, BanTarget, HostId, LoadedUnit, StoreError};
use peergrid_proto::spec::Validator;

pub(super) fn get_blob(c: &Connection, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(c.query_row(
        "SELECT data FROM blobs WHERE hash = ?1",
        [&hash.0[..]],
        |r| r.get(0),
    )
    .optional()?)
}

pub(super) fn blob_len(c: &Connection, hash: &Hash) -> Result<Option<u64>, StoreError> {
    Ok(c.query_row(
        "SELECT length(data) FROM blobs WHERE hash = ?1",
        [&hash.0[..]],
        |r| r.get(0),
    )
    .optional()?)
}

pub(super) fn missing_blobs(c: &Connection, hashes: &[Hash]) -> Result<Vec<Hash>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT 1 FROM blobs WHERE hash = ?1")?;
    let mut missing = Vec::new();
    for h in hashes {
        if !stmt.exists([&h.0[..]])? {
            missing.push(*h);
        }
    }
    Ok(missing)
}

pub(super) fn job_blobs_after(
    c: &Connection,
    after: Option<&Hash>,
    limit: usize,
) -> Result<Vec<Hash>, StoreError> {
    // An empty blob sorts before every hash.
    let after: &[u8] = after.map_or(&[], |h| &h.0[..]);
    let mut stmt = c.prepare_cached(
        "SELECT DISTINCT input_hash FROM units WHERE input_hash > ?1 ORDER BY input_hash LIMIT ?2",
    )?;
    let mut hashes = stmt
        .query_map(params![after, limit as i64], |r| r.get::<_, Vec<u8>>(0))?
        .map(|h| hash_col(h?))
        .collect::<Result<Vec<Hash>, StoreError>>()?;
    // Jobs are few: their modules are read whole and merged in.
    let mut stmt = c.prepare_cached("SELECT module_hash, validator_json FROM jobs")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        hashes.push(hash_col(r.get(0)?)?);
        let validator: Validator = json_col(&r.get::<_, String>(1)?)?;
        if let Validator::Custom { module } = validator {
            hashes.push(module);
        }
    }
    hashes.retain(|h| &h.0[..] > after);
    hashes.sort_unstable();
    hashes.dedup();
    hashes.truncate(limit);
    Ok(hashes)
}

pub(super) fn host_key(c: &Connection, id: HostId) -> Result<Option<[u8; 32]>, StoreError> {
    let key: Option<Vec<u8>> = c
        .query_row("SELECT public_key FROM hosts WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    key.map(|k| hash_col(k).map(|h| h.0)).transpose()
}

pub(super) fn tasks_sent_since(
    c: &Connection,
    host: HostId,
    since_ms: u64,
) -> Result<u32, StoreError> {
    let n: u64 = c
        .prepare_cached("SELECT count(*) FROM results WHERE host_id = ?1 AND sent_ms >= ?2")?
        .query_row(params![host, since_ms], |r| r.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

pub(super) fn bans(c: &Connection) -> Result<Vec<Ban>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT kind, name, reason, at_ms FROM bans ORDER BY at_ms")?;
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
}

/// The highest unit id ever stored (0 when there is none).
pub(super) fn max_unit_id(c: &Connection) -> Result<UnitId, StoreError> {
    Ok(c.query_row("SELECT coalesce(max(id), 0) FROM units", [], |r| r.get(0))?)
}

pub(super) fn load_active_units(
    c: &Connection,
    after: UnitId,
    limit: usize,
    bytes_below: usize,
) -> Result<Vec<LoadedUnit>, StoreError> {
    // `length` of a blob reads no more than its header.
    let mut stmt = c.prepare_cached(
        "SELECT u.id, u.job_id, CASE WHEN length(b.data) < ?3 THEN b.data ELSE x'' END, u.disputed,
                CASE WHEN (SELECT seed_by_number FROM jobs WHERE id = u.job_id) THEN u.number ELSE u.id END,
                u.input_hash, length(b.data)
         FROM units u JOIN blobs b ON b.hash = u.input_hash
         WHERE u.state = 'active' AND u.id > ?1 ORDER BY u.id LIMIT ?2",
    )?;
    let bytes_below = bytes_below.min(i64::MAX as usize) as i64;
    let mut units: Vec<LoadedUnit> = stmt
        .query_map(params![after, limit as i64, bytes_below], |r| {
            Ok(LoadedUnit {
                id: r.get(0)?,
                job: r.get(1)?,
                input: r.get(2)?,
                input_hash: Hash(r.get(5)?),
                input_len: r.get(6)?,
                copies: Vec::new(),
                single: false,
                disputed: r.get(3)?,
                number: r.get(4)?,
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
}

pub(super) fn load_reopened_units(
    c: &Connection,
    after_seq: u64,
    limit: usize,
    bytes_below: usize,
) -> Result<Vec<(u64, LoadedUnit)>, StoreError> {
    // `+u.state`: through the partial index of reopened units.
    // With `u.state` SQLite chose the (state, id) index and read
    // every active unit with its input on each feeder wake (a
    // third of the grid's throughput).
    let mut stmt = c.prepare_cached(
        "SELECT u.reopened_seq, u.id, u.job_id,
                CASE WHEN length(b.data) < ?3 THEN b.data ELSE x'' END, u.disputed,
                CASE WHEN (SELECT seed_by_number FROM jobs WHERE id = u.job_id) THEN u.number ELSE u.id END,
                u.input_hash, length(b.data)
         FROM units u JOIN blobs b ON b.hash = u.input_hash
         WHERE u.reopened_seq > 0 AND u.reopened_seq > ?1 AND +u.state = 'active'
         ORDER BY u.reopened_seq LIMIT ?2",
    )?;
    let bytes_below = bytes_below.min(i64::MAX as usize) as i64;
    let mut units: Vec<(u64, LoadedUnit)> = stmt
        .query_map(params![after_seq, limit as i64, bytes_below], |r| {
            Ok((
                r.get(0)?,
                LoadedUnit {
                    id: r.get(1)?,
                    job: r.get(2)?,
                    input: r.get(3)?,
                    input_hash: Hash(r.get(6)?),
                    input_len: r.get(7)?,
                    copies: Vec::new(),
                    single: false,
                    disputed: r.get(4)?,
                    number: r.get(5)?,
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
}

/// One copy of a unit from a `results` row selected as
/// `unit_id, host_id, state, deadline_ms, output_hash, fuel, error, engine, resumed`.
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
