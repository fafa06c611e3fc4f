//! The volunteers' side of the store's reads: the copies a host was sent
//! (its page's task list) and teams with their hosts.

use peergrid_proto::text::truncate;
use rusqlite::{Connection, OptionalExtension, params};

use super::columns::{HOST_COLUMNS, host_from_row};
use super::query::HOST_AGREED;
use crate::store::{HostId, HostSummary, HostTask, StoreError, Team};

/// Longest error message a task list shows (its first line).
const TASK_ERROR_BYTES: usize = 200;

pub(super) fn host_tasks(
    c: &Connection,
    host: HostId,
    offset: u64,
    limit: usize,
) -> Result<Vec<HostTask>, StoreError> {
    let sql = format!(
        "SELECT j.id, j.name, u.number, u.name,
           CASE
             WHEN r.state != 'success' THEN r.state
             WHEN d.unit_id IS NOT NULL AND {HOST_AGREED} THEN 'valid'
             WHEN d.unit_id IS NOT NULL THEN 'invalid'
             WHEN u.state = 'active' THEN 'pending'
             ELSE 'unvalidated'
           END,
           r.sent_ms, r.deadline_ms, r.received_ms, r.elapsed_ms, r.fuel,
           CASE WHEN r.state = 'success' AND d.unit_id IS NOT NULL AND {HOST_AGREED}
                     AND d.credit_pending = 0
                THEN d.fuel ELSE 0 END,
           r.error
         FROM results r
         JOIN hosts h ON h.id = r.host_id
         JOIN units u ON u.id = r.unit_id
         JOIN jobs j ON j.id = u.job_id
         LEFT JOIN dataset d ON d.unit_id = r.unit_id
         WHERE r.host_id = ?1
         ORDER BY r.sent_ms DESC, r.unit_id DESC
         LIMIT ?2 OFFSET ?3"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![host, limit as i64, offset.min(i64::MAX as u64)],
        |r| {
            let error: Option<String> = r.get(11)?;
            Ok(HostTask {
                job: r.get(0)?,
                job_name: r.get(1)?,
                unit: r.get(2)?,
                unit_name: r.get(3)?,
                state: r.get(4)?,
                sent_ms: r.get(5)?,
                deadline_ms: r.get(6)?,
                received_ms: r.get(7)?,
                elapsed_ms: r.get(8)?,
                fuel: r.get(9)?,
                credit: r.get(10)?,
                error: error.map(|e| {
                    let mut line = e.lines().next().unwrap_or("").to_string();
                    truncate(&mut line, TASK_ERROR_BYTES);
                    line
                }),
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn host_task_count(c: &Connection, host: HostId) -> Result<u64, StoreError> {
    Ok(c.query_row(
        "SELECT count(*) FROM results WHERE host_id = ?1",
        [host],
        |r| r.get(0),
    )?)
}

const TEAM_COLUMNS: &str = "id, name, founder, created_ms";

fn team_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Team> {
    Ok(Team {
        id: r.get(0)?,
        name: r.get(1)?,
        founder: r.get(2)?,
        created_ms: r.get(3)?,
    })
}

pub(super) fn teams(c: &Connection) -> Result<Vec<Team>, StoreError> {
    let mut stmt = c.prepare_cached(&format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY id"))?;
    Ok(stmt
        .query_map([], team_from_row)?
        .collect::<Result<_, _>>()?)
}

pub(super) fn team(c: &Connection, id: u64) -> Result<Option<Team>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = ?1"),
        [id.min(i64::MAX as u64)],
        team_from_row,
    )
    .optional()?)
}

/// The column's `NOCASE` collation makes the comparison ignore ASCII case.
pub(super) fn team_by_name(c: &Connection, name: &str) -> Result<Option<Team>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {TEAM_COLUMNS} FROM teams WHERE name = ?1"),
        [name],
        team_from_row,
    )
    .optional()?)
}

pub(super) fn team_hosts(
    c: &Connection,
    team: Option<u64>,
) -> Result<Vec<HostSummary>, StoreError> {
    // -1 matches no team: with `None`, every host in one.
    let (sql, id) = match team {
        Some(id) => ("team_id = ?1", i64::try_from(id).unwrap_or(-1)),
        None => ("team_id IS NOT NULL AND ?1 = -1", -1),
    };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {HOST_COLUMNS} FROM hosts WHERE {sql} ORDER BY id"
    ))?;
    let hosts = stmt
        .query_map([id], host_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(hosts)
}
