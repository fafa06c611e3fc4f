//! The read-only queries of the [`ReadStore`](crate::store::ReadStore)
//! trait, on reader connections: jobs and their status, hosts and their
//! records, the dashboard's buckets and sizes, and the dataset read in
//! pages (for exports, browsing and credit sums).

use peergrid_proto::signing::ModuleSignature;
use peergrid_proto::spec::{JobSettings, Plot};
use peergrid_proto::wire::{JobId, UnitId};
use rusqlite::{Connection, OptionalExtension, params};

use super::columns::{
    DATASET_COLUMNS, DATASET_WIDTH, HOST_COLUMNS, dataset_row, hash_col, host_from_row, json_col,
};
use crate::store::{
    Bucket, CreditGrant, DatasetRow, DatasetSize, DatasetStamp, FailedUnit, HostId, HostRecord,
    HostSummary, JobInfo, JobStatus, StoreError, StoredStanding,
};

/// SQL true when dataset row `d`'s agreeing hosts include host `h`
/// (`hosts_json` holds quoted lower-case hex keys).
pub(super) const HOST_AGREED: &str =
    "instr(d.hosts_json, '\"' || lower(hex(h.public_key)) || '\"') > 0";

pub(super) fn job_status(conn: &Connection, id: JobId) -> Result<Option<JobStatus>, StoreError> {
    let head = conn
        .query_row(
            "SELECT name, module_hash, created_ms, settings_json, signature_json, cancelled_ms,
                    terms_json
             FROM jobs WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, u64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<u64>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((name, module, created_ms, settings, signature, cancelled_ms, terms)) = head else {
        return Ok(None);
    };
    // Kept counts (schema step 3), not a count of the job's units.
    let counts: [u64; 4] = conn
        .prepare_cached(
            "SELECT active, validated, failed, cancelled FROM job_counts WHERE job_id = ?1",
        )?
        .query_row([id], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]))
        .optional()?
        .unwrap_or_default();
    // Along the copies out (`results_out`; CROSS JOIN keeps them the outer
    // loop), not along the job's active units (80 ms at 740 000); none
    // for a job without active units.
    let in_progress: u64 = if counts[0] == 0 {
        0
    } else {
        conn.query_row(
            "SELECT count(DISTINCT r.unit_id) FROM results r INDEXED BY results_out
         CROSS JOIN units u ON u.id = r.unit_id
         WHERE r.state = 'in_progress' AND u.job_id = ?1 AND u.state = 'active'",
            [id],
            |r| r.get(0),
        )?
    };
    let units_total = counts.iter().fold(0u64, |a, n| a.saturating_add(*n));
    Ok(Some(JobStatus {
        finished: counts[0] == 0,
        cancelled: counts[3],
        cancelled_ms,
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
        terms: match terms {
            Some(t) => json_col(&t)?,
            None => Default::default(),
        },
    }))
}

pub(super) fn job_info(c: &Connection, id: JobId) -> Result<Option<JobInfo>, StoreError> {
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
}

pub(super) fn jobs(c: &Connection) -> Result<Vec<JobStatus>, StoreError> {
    let ids: Vec<JobId> = c
        .prepare("SELECT id FROM jobs ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    statuses(c, ids)
}

/// The status of each of the jobs `ids`, in that order.
fn statuses(c: &Connection, ids: Vec<JobId>) -> Result<Vec<JobStatus>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(s) = job_status(c, id)? {
            out.push(s);
        }
    }
    Ok(out)
}

pub(super) fn host_standing(
    c: &Connection,
    id: HostId,
) -> Result<Option<StoredStanding>, StoreError> {
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
}

pub(super) fn failed_units(c: &Connection, job: JobId) -> Result<Vec<FailedUnit>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT number, name, reason FROM units WHERE job_id = ?1 AND state = 'failed' ORDER BY id",
    )?;
    let rows = stmt.query_map([job], |r| {
        Ok(FailedUnit {
            unit: r.get(0)?,
            name: r.get(1)?,
            reason: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn hosts_seen_since(c: &Connection, since_ms: u64) -> Result<u64, StoreError> {
    Ok(c.query_row(
        "SELECT count(*) FROM hosts WHERE last_seen_ms >= ?1",
        [since_ms],
        |r| r.get(0),
    )?)
}

pub(super) fn hosts(c: &Connection) -> Result<Vec<HostSummary>, StoreError> {
    let mut stmt = c.prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY id"))?;
    Ok(stmt
        .query_map([], host_from_row)?
        .collect::<Result<_, _>>()?)
}

pub(super) fn host(c: &Connection, id: HostId) -> Result<Option<HostSummary>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?1"),
        [id],
        host_from_row,
    )
    .optional()?)
}

/// The id of the host with this public key, if registered.
pub(super) fn host_by_key(c: &Connection, key: &[u8]) -> Result<Option<HostId>, StoreError> {
    Ok(
        c.query_row("SELECT id FROM hosts WHERE public_key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?,
    )
}

pub(super) fn host_record(c: &Connection, id: HostId) -> Result<HostRecord, StoreError> {
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
}

/// Successful copies received at or after `since_ms`, in buckets of
/// `width_ms` (at least 1).
pub(super) fn result_buckets(
    c: &Connection,
    since_ms: u64,
    width_ms: u64,
) -> Result<Vec<Bucket>, StoreError> {
    let width_ms = width_ms.max(1);
    if since_ms.is_multiple_of(MINUTE_MS) && width_ms.is_multiple_of(MINUTE_MS) {
        // Whole minutes (every caller's): the kept counts.
        return buckets(
            c,
            &format!(
                "SELECT (minute * 60000 / ?2) * ?2 AS b, sum(count) AS n, {}
                 FROM result_minutes WHERE minute >= ?1 / 60000
                 GROUP BY b HAVING n > 0 ORDER BY b",
                saturating_sum("fuel")
            ),
            params![since_ms, width_ms],
        );
    }
    buckets(
        c,
        &format!(
            "SELECT (received_ms / ?2) * ?2 AS b, count(*), {}
             FROM results WHERE received_ms >= ?1 AND output_hash IS NOT NULL
             GROUP BY b ORDER BY b",
            saturating_sum("fuel")
        ),
        params![since_ms, width_ms],
    )
}

/// The granularity of the kept buckets (`result_minutes`, `job_minutes`).
const MINUTE_MS: u64 = 60_000;

/// A job's validated units by `validated_ms`, in buckets of `width_ms`
/// (at least 1).
pub(super) fn validated_buckets(
    c: &Connection,
    job: JobId,
    width_ms: u64,
) -> Result<Vec<Bucket>, StoreError> {
    let width_ms = width_ms.max(1);
    if width_ms.is_multiple_of(MINUTE_MS) {
        return buckets(
            c,
            &format!(
                "SELECT (minute * 60000 / ?2) * ?2 AS b, sum(count) AS n, {}
                 FROM job_minutes WHERE job_id = ?1
                 GROUP BY b HAVING n > 0 ORDER BY b",
                saturating_sum("fuel")
            ),
            params![job, width_ms],
        );
    }
    buckets(
        c,
        &format!(
            "SELECT (validated_ms / ?2) * ?2 AS b, count(*), {}
             FROM dataset WHERE job_id = ?1 GROUP BY b ORDER BY b",
            saturating_sum("fuel")
        ),
        params![job, width_ms],
    )
}

/// From the kept counts (schema step 3).
pub(super) fn dataset_size(c: &Connection, job: Option<JobId>) -> Result<DatasetSize, StoreError> {
    let select = "SELECT coalesce(sum(dataset_rows), 0), coalesce(sum(dataset_bytes), 0)
                  FROM job_counts";
    let map = |r: &rusqlite::Row<'_>| {
        Ok(DatasetSize {
            rows: r.get::<_, i64>(0)?.max(0) as u64,
            bytes: r.get::<_, i64>(1)?.max(0) as u64,
        })
    };
    Ok(match job {
        Some(job) => c.query_row(&format!("{select} WHERE job_id = ?1"), [job], map)?,
        None => c.query_row(select, [], map)?,
    })
}

pub(super) fn credit_page(
    c: &Connection,
    host: Option<&str>,
    after: UnitId,
    limit: usize,
) -> Result<Vec<CreditGrant>, StoreError> {
    let map = |r: &rusqlite::Row<'_>| {
        Ok((
            r.get::<_, UnitId>(0)?,
            r.get::<_, JobId>(1)?,
            r.get::<_, u64>(2)?,
            r.get::<_, u64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, u64>(5)?,
        ))
    };
    let select = "SELECT d.unit_id, d.job_id, d.fuel, d.validated_ms, d.hosts_json, u.number
                  FROM dataset d JOIN units u ON u.id = d.unit_id";
    let raw: Vec<_> = match host {
        Some(key) => c
            .prepare_cached(&format!(
                "{select} WHERE d.unit_id > ?1 AND instr(d.hosts_json, ?3) > 0
                   AND d.credit_pending = 0 ORDER BY d.unit_id LIMIT ?2"
            ))?
            .query_map(
                params![after, limit as i64, format!("\"{}\"", key.to_lowercase())],
                map,
            )?
            .collect::<Result<_, _>>()?,
        None => c
            .prepare_cached(&format!(
                "{select} WHERE d.unit_id > ?1 AND d.credit_pending = 0
                 ORDER BY d.unit_id LIMIT ?2"
            ))?
            .query_map(params![after, limit as i64], map)?
            .collect::<Result<_, _>>()?,
    };
    raw.into_iter()
        .map(|(unit, job, fuel, validated_ms, hosts, number)| {
            Ok(CreditGrant {
                job,
                unit,
                number,
                fuel,
                validated_ms,
                hosts: json_col(&hosts)?,
            })
        })
        .collect()
}

pub(super) fn dataset_stamp(c: &Connection, job: JobId) -> Result<DatasetStamp, StoreError> {
    // The kept counts, and the highest unit from the end of the index.
    Ok(c.query_row(
        "SELECT coalesce(sum(dataset_rows), 0),
                (SELECT coalesce(max(unit_id), 0) FROM dataset WHERE job_id = ?1),
                coalesce(max(last_validated_ms), 0)
         FROM job_counts WHERE job_id = ?1",
        [job],
        |r| {
            Ok(DatasetStamp {
                rows: r.get(0)?,
                last_unit: r.get(1)?,
                last_validated_ms: r.get(2)?,
            })
        },
    )?)
}

pub(super) fn hosts_after(
    c: &Connection,
    after: HostId,
    limit: usize,
) -> Result<Vec<HostSummary>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {HOST_COLUMNS} FROM hosts WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    Ok(stmt
        .query_map(params![after, limit as i64], host_from_row)?
        .collect::<Result<_, _>>()?)
}

pub(super) fn hosts_by_credit(
    c: &Connection,
    offset: u64,
    limit: usize,
) -> Result<Vec<HostSummary>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {HOST_COLUMNS} FROM hosts ORDER BY credit_total DESC, id LIMIT ?1 OFFSET ?2"
    ))?;
    Ok(stmt
        .query_map(params![limit as i64, offset], host_from_row)?
        .collect::<Result<_, _>>()?)
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

/// Runs `sql`, which selects [`DATASET_COLUMNS`] and then what `more`
/// reads, and maps each row with [`dataset_row`] and `more`.
fn dataset_rows<T>(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    more: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<(DatasetRow, T)>, StoreError> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(p)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push((dataset_row(r)?, more(r)?));
    }
    Ok(out)
}

/// The id of job `?1`'s unit numbered `?2` or the last one before it (0
/// when none is): a page of a job's dataset after unit number `?2` starts
/// past that id, since a job's units are numbered in id order. Seeks the
/// `(job_id, number)` index once, so dataset pages still read the
/// dataset's own index.
const AFTER_NUMBER: &str = "coalesce((SELECT id FROM units WHERE job_id = ?1 AND number <= ?2
                                 ORDER BY number DESC LIMIT 1), 0)";

/// Up to `limit` rows of a job's dataset after unit number `after`, in unit
/// order, each with `extra`, one more column, which may read the output
/// `b`.
fn job_page<T: rusqlite::types::FromSql>(
    c: &Connection,
    job: JobId,
    after: u64,
    limit: usize,
    extra: &str,
) -> Result<Vec<(DatasetRow, T)>, StoreError> {
    let sql = format!(
        "SELECT {DATASET_COLUMNS}, {extra}
         FROM dataset d JOIN units u ON u.id = d.unit_id JOIN jobs j ON j.id = d.job_id
         JOIN blobs b ON b.hash = d.output_hash
         WHERE d.job_id = ?1 AND d.unit_id > {AFTER_NUMBER} ORDER BY d.unit_id LIMIT ?3"
    );
    dataset_rows(c, &sql, params![job, after, limit as i64], |r| {
        r.get(DATASET_WIDTH)
    })
}

/// Validated rows of a job with unit id greater than `after`, in id
/// order, with their outputs.
pub(super) fn dataset_page(
    c: &Connection,
    job: JobId,
    after: u64,
    limit: usize,
) -> Result<Vec<DatasetRow>, StoreError> {
    Ok(job_page(c, job, after, limit, "b.data")?
        .into_iter()
        .map(|(row, output)| DatasetRow { output, ..row })
        .collect())
}

/// Up to `limit` rows of a job's dataset after unit `after`, without
/// outputs, each with its output's length (which SQLite reads without
/// loading the blob).
fn dataset_meta(
    c: &Connection,
    job: JobId,
    after: u64,
    limit: usize,
) -> Result<Vec<(DatasetRow, u64)>, StoreError> {
    job_page(c, job, after, limit, "length(b.data)")
}

/// A page of a job's dataset that also stops before its outputs pass
/// `max_bytes` (its first row always comes), read in one snapshot.
pub(super) fn dataset_page_within(
    c: &Connection,
    job: JobId,
    after: u64,
    max_rows: usize,
    max_bytes: u64,
) -> Result<Vec<DatasetRow>, StoreError> {
    // One snapshot for the rows and their outputs.
    let tx = c.unchecked_transaction()?;
    let page = with_outputs(&tx, dataset_meta(&tx, job, after, max_rows)?, max_bytes)?;
    tx.finish()?;
    Ok(page)
}

/// Every `every`-th row of a job's dataset (by unit id, which runs
/// without gaps through a job's units) after unit number `after`, with
/// outputs, stopping as [`dataset_page_within`] does; read in one
/// snapshot. The job's index finds the rows; only those read load a blob.
pub(super) fn dataset_sample_within(
    c: &Connection,
    job: JobId,
    every: u64,
    after: u64,
    max_rows: usize,
    max_bytes: u64,
) -> Result<Vec<DatasetRow>, StoreError> {
    let tx = c.unchecked_transaction()?;
    let sql = format!(
        "SELECT {DATASET_COLUMNS}, length(b.data)
         FROM dataset d JOIN units u ON u.id = d.unit_id JOIN jobs j ON j.id = d.job_id
         JOIN blobs b ON b.hash = d.output_hash
         WHERE d.job_id = ?1 AND d.unit_id > {AFTER_NUMBER} AND d.unit_id % ?4 = 0
         ORDER BY d.unit_id LIMIT ?3"
    );
    let meta: Vec<(DatasetRow, u64)> = dataset_rows(
        &tx,
        &sql,
        params![job, after, max_rows as i64, every.clamp(1, i64::MAX as u64)],
        |r| r.get(DATASET_WIDTH),
    )?;
    let page = with_outputs(&tx, meta, max_bytes)?;
    tx.finish()?;
    Ok(page)
}

/// `meta`'s rows (each with its output's length) with their outputs
/// loaded, in order, until `max_bytes` of outputs (at least one row).
fn with_outputs(
    tx: &Connection,
    meta: Vec<(DatasetRow, u64)>,
    max_bytes: u64,
) -> Result<Vec<DatasetRow>, StoreError> {
    let mut page = Vec::new();
    let mut bytes = 0u64;
    for (mut row, len) in meta {
        bytes = bytes.saturating_add(len);
        if !page.is_empty() && bytes > max_bytes {
            break;
        }
        row.output = tx
            .prepare_cached("SELECT data FROM blobs WHERE hash = ?1")?
            .query_row([&row.output_hash.0[..]], |r| r.get(0))?;
        page.push(row);
    }
    Ok(page)
}

/// A job's `[[plot]]`s; `None` when there is no such job.
pub(super) fn job_plots(c: &Connection, id: JobId) -> Result<Option<Vec<Plot>>, StoreError> {
    let json: Option<String> = c
        .query_row("SELECT plots_json FROM jobs WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    json.map(|j| json_col(&j)).transpose()
}

/// A page of a job's dataset without outputs.
pub(super) fn dataset_index(
    c: &Connection,
    job: JobId,
    after: u64,
    limit: usize,
) -> Result<Vec<DatasetRow>, StoreError> {
    Ok(dataset_meta(c, job, after, limit)?
        .into_iter()
        .map(|(row, _)| row)
        .collect())
}

/// One page (by offset, in unit order) of one job's dataset or of all of
/// them, without outputs.
pub(super) fn dataset_browse(
    c: &Connection,
    job: Option<JobId>,
    offset: u64,
    limit: usize,
) -> Result<Vec<DatasetRow>, StoreError> {
    let select = format!(
        "SELECT {DATASET_COLUMNS}
         FROM dataset d JOIN units u ON u.id = d.unit_id JOIN jobs j ON j.id = d.job_id"
    );
    let none = |_: &rusqlite::Row<'_>| Ok(());
    let rows = match job {
        Some(job) => dataset_rows(
            c,
            &format!("{select} WHERE d.job_id = ?1 ORDER BY d.unit_id LIMIT ?2 OFFSET ?3"),
            params![job, limit as i64, offset],
            none,
        )?,
        None => dataset_rows(
            c,
            &format!("{select} ORDER BY d.unit_id LIMIT ?1 OFFSET ?2"),
            params![limit as i64, offset],
            none,
        )?,
    };
    Ok(rows.into_iter().map(|(row, ())| row).collect())
}

pub(super) fn job_count(c: &Connection) -> Result<u64, StoreError> {
    Ok(c.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))?)
}

/// A page of jobs, newest first.
pub(super) fn jobs_newest_first(
    c: &Connection,
    offset: u64,
    limit: usize,
) -> Result<Vec<JobStatus>, StoreError> {
    let ids: Vec<JobId> = c
        .prepare_cached("SELECT id FROM jobs ORDER BY id DESC LIMIT ?1 OFFSET ?2")?
        .query_map(params![limit as i64, offset], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    statuses(c, ids)
}

/// Blobs longer than this get no preview: `substr` reads a blob whole
/// (only `length` is answered from its header), and a public page of 50
/// rows must not read 50 outputs of 4 MiB.
const MAX_PREVIEWED_BLOB: i64 = 64 * 1024;

/// The first `max` bytes of a blob (SQLite's `substr` counts bytes on a
/// blob) and its length; no bytes for a blob over [`MAX_PREVIEWED_BLOB`].
pub(super) fn blob_prefix(
    c: &Connection,
    hash: &peergrid_proto::Hash,
    max: usize,
) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT CASE WHEN length(data) <= ?3 THEN substr(data, 1, ?2) ELSE x'' END, length(data)
             FROM blobs WHERE hash = ?1",
    )?
    .query_row(params![&hash.0[..], max as i64, MAX_PREVIEWED_BLOB], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u64>(1)?))
    })
    .optional()?)
}

pub(super) fn units_by_state(c: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    // The kept counts, summed over jobs (schema step 3).
    let sums: [u64; 4] = c.query_row(
        "SELECT coalesce(sum(active), 0), coalesce(sum(cancelled), 0), coalesce(sum(failed), 0),
                coalesce(sum(validated), 0)
         FROM job_counts",
        [],
        |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]),
    )?;
    Ok(["active", "cancelled", "failed", "validated"]
        .into_iter()
        .zip(sums)
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| (state.to_string(), n))
        .collect())
}
