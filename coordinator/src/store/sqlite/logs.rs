//! Error results read back for the researcher: a job's failed units with
//! their last error and stderr, and every error result of one unit
//! (`GET /api/v1/jobs/{id}/logs`, `peergrid job logs`, the dashboard's
//! failed-units page).

use peergrid_proto::wire::{JobId, UnitId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::store::{ErrorLog, FailedUnitLog, StoreError, UnitLogs};

/// The columns [`error_from_row`] reads, of `results r` joined to `hosts h`.
const ERROR_COLUMNS: &str = "r.host_id, h.public_key, r.received_ms, r.error, r.stderr";

fn error_from_row(r: &Row<'_>) -> rusqlite::Result<ErrorLog> {
    Ok(ErrorLog {
        host: r.get(0)?,
        host_key: hex::encode(r.get::<_, Vec<u8>>(1)?),
        received_ms: r.get::<_, Option<u64>>(2)?.unwrap_or(0),
        error: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
        stderr: r.get::<_, Option<String>>(4)?.filter(|s| !s.is_empty()),
    })
}

pub(super) fn failed_unit_logs(
    c: &Connection,
    job: JobId,
    after: u64,
    limit: usize,
) -> Result<Vec<FailedUnitLog>, StoreError> {
    // `+number`: through the (job, state) index, not along every unit
    // of the job in number order (150 ms for a job of a million units).
    let mut units = c.prepare_cached(
        "SELECT id, number, name, reason FROM units
         WHERE job_id = ?1 AND state = 'failed' AND +number > ?2 ORDER BY +number LIMIT ?3",
    )?;
    let mut last_error = c.prepare_cached(&format!(
        "SELECT {ERROR_COLUMNS} FROM results r JOIN hosts h ON h.id = r.host_id
         WHERE r.unit_id = ?1 AND r.state = 'error'
         ORDER BY r.received_ms DESC, r.host_id DESC LIMIT 1"
    ))?;
    let rows = units
        .query_map(params![job, after, limit as i64], |r| {
            Ok((
                r.get::<_, UnitId>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, number, name, reason) in rows {
        out.push(FailedUnitLog {
            unit: number,
            name,
            reason,
            last_error: last_error.query_row([id], error_from_row).optional()?,
        });
    }
    Ok(out)
}

pub(super) fn unit_logs(
    c: &Connection,
    job: JobId,
    unit: u64,
) -> Result<Option<UnitLogs>, StoreError> {
    let Some((id, name, state, reason)) = c
        .query_row(
            "SELECT id, name, state, reason FROM units WHERE job_id = ?1 AND number = ?2",
            params![job, unit],
            |r| {
                Ok((
                    r.get::<_, UnitId>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut errors = c.prepare_cached(&format!(
        "SELECT {ERROR_COLUMNS} FROM results r JOIN hosts h ON h.id = r.host_id
         WHERE r.unit_id = ?1 AND r.state = 'error' ORDER BY r.received_ms, r.host_id"
    ))?;
    let errors = errors
        .query_map([id], error_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(Some(UnitLogs {
        job,
        unit,
        name,
        reason: reason.filter(|_| state == "failed"),
        state,
        errors,
    }))
}

#[cfg(test)]
mod tests;
