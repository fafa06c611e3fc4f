//! How stored columns become the store's values and back: hashes, JSON
//! text, counts, a host's credit tally, and the column lists of the rows
//! read in several places (a dataset row, a host), each mapped by one
//! function. Every other part of the SQLite store uses these; this module
//! uses none of them.

use peergrid_proto::Hash;
use rusqlite::{Connection, params};

use crate::credit::CreditTally;
use crate::store::{DatasetRow, HostId, HostSummary, StoreError};

pub(super) fn hash_col(bytes: Vec<u8>) -> Result<Hash, StoreError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("hash column is not 32 bytes".into()))?;
    Ok(Hash(arr))
}

pub(super) fn json_col<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A count as SQLite's `INTEGER` (an `i64`) holds it.
pub(super) fn clamp_i64(n: u64) -> u64 {
    n.min(i64::MAX as u64)
}

/// A host's credit tally from three columns starting at `first`: total,
/// recent average, time of the newest grant.
pub(super) fn tally_from(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<CreditTally> {
    Ok(CreditTally {
        total: r.get(first)?,
        recent: r.get(first + 1)?,
        at_ms: r.get(first + 2)?,
    })
}

/// Writes a host's credit tally to its three columns.
pub(super) fn write_tally(c: &Connection, host: HostId, t: &CreditTally) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE hosts SET credit_total = ?2, credit_recent = ?3, credit_at_ms = ?4 WHERE id = ?1",
    )?
    .execute(params![host, clamp_i64(t.total), t.recent, t.at_ms])?;
    Ok(())
}

/// The columns [`dataset_row`] reads, in its order, from `dataset d`
/// joined with `units u` and `jobs j`. A query may select more after them.
pub(super) const DATASET_COLUMNS: &str = "u.number, d.job_id, u.name, u.input_hash, \
     j.module_hash, d.output_hash, d.hosts_json, d.engines_json, d.fuel, d.validated_ms, \
     CASE WHEN j.seed_by_number THEN u.number ELSE u.id END";

/// How many columns [`DATASET_COLUMNS`] names: the index of the first
/// column a query selects after them.
pub(super) const DATASET_WIDTH: usize = 11;

/// A dataset row from [`DATASET_COLUMNS`], without its output (`output`
/// left empty: the caller reads it when it wants it).
pub(super) fn dataset_row(r: &rusqlite::Row<'_>) -> Result<DatasetRow, StoreError> {
    Ok(DatasetRow {
        unit: r.get(0)?,
        job: r.get(1)?,
        name: r.get(2)?,
        input_hash: hash_col(r.get(3)?)?,
        module_hash: hash_col(r.get(4)?)?,
        output_hash: hash_col(r.get(5)?)?,
        hosts: json_col(&r.get::<_, String>(6)?)?,
        engines: json_col(&r.get::<_, String>(7)?)?,
        fuel: r.get(8)?,
        validated_ms: r.get(9)?,
        seed_unit: r.get(10)?,
        output: Vec::new(),
    })
}

/// The columns of `hosts` that [`host_from_row`] reads, in its order.
/// Selected from `hosts` unaliased.
pub(super) const HOST_COLUMNS: &str = "id, public_key, cores, memory_bytes, os, arch, version, \
     first_seen_ms, last_seen_ms, account, credit_total, credit_recent, credit_at_ms, account_name, \
     name, cpu_model, slots, team_id, \
     coalesce((SELECT t.name FROM teams t WHERE t.id = hosts.team_id), '')";

pub(super) fn host_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HostSummary> {
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
        name: r.get(14)?,
        cpu_model: r.get(15)?,
        slots: r.get(16)?,
        team_id: r.get(17)?,
        team: r.get(18)?,
    })
}
