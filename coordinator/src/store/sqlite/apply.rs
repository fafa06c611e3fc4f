//! [`apply`]: one batch of the scheduler's decisions (`StoreOp`s) with
//! their output blobs in one transaction on the writer connection,
//! keeping each host's credit tally in step with the dataset.

use std::collections::HashMap;

use peergrid_proto::Hash;
use peergrid_proto::wire::UnitId;
use rusqlite::{Connection, OptionalExtension, params};

use super::columns::{json_col, tally_from, write_tally};
use crate::credit::CreditTally;
use crate::quorum::CopyState;
use crate::store::{HostId, StderrTail, StoreError, StoreOp};

/// Applies a batch of scheduler decisions and output blobs in one
/// transaction.
pub(super) fn apply(
    c: &mut Connection,
    ops: &[StoreOp],
    blobs: &[(Hash, Vec<u8>)],
    stderr: &[StderrTail],
) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    {
        let mut put_blob =
            tx.prepare_cached("INSERT OR IGNORE INTO blobs (hash, data) VALUES (?1, ?2)")?;
        for (h, data) in blobs {
            if put_blob.execute(params![&h.0[..], data])? == 0 {
                // Bytes already stored: perhaps a loose upload, which a
                // result now names.
                tx.prepare_cached("DELETE FROM blob_uploads WHERE hash = ?1")?
                    .execute([&h.0[..]])?;
            }
        }
    }
    let mut tallies = Tallies::default();
    for op in ops {
        apply_op(&tx, op, &mut tallies)?;
    }
    tallies.write(&tx)?;
    count_received(&tx, ops)?;
    {
        // After the reports: each tail joins its copy's error result.
        let mut put_stderr = tx.prepare_cached(
            "UPDATE results SET stderr = ?3 WHERE unit_id = ?1 AND host_id = ?2 AND state = 'error'",
        )?;
        for t in stderr {
            put_stderr.execute(params![t.unit, t.host, t.text])?;
        }
    }
    // After every op of the batch: a later report in the same
    // transaction may name the bytes a validation would delete.
    for op in ops {
        if let StoreOp::Validate { unit, output, .. } = op {
            delete_losing_outputs(&tx, *unit, output)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Copies of a finished unit still out: the scheduler forgot them and
/// refuses their late reports, so they are voided, and `results_out`
/// holds only copies that may still come back.
fn forget_copies_out(tx: &Connection, unit: UnitId) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE results SET state = 'voided', error = 'the unit finished before this copy reported'
         WHERE unit_id = ?1 AND state = 'in_progress'",
    )?
    .execute([unit])?;
    Ok(())
}

/// Adds the batch's successful reports to `result_minutes`, once per
/// minute they fall in (schema step 3).
fn count_received(tx: &Connection, ops: &[StoreOp]) -> Result<(), StoreError> {
    let mut minutes: std::collections::BTreeMap<u64, (i64, i64)> = Default::default();
    for op in ops {
        if let StoreOp::Report {
            state: CopyState::Success { fuel, .. },
            received_ms,
            ..
        } = op
        {
            let m = minutes.entry(received_ms / 60_000).or_default();
            m.0 += 1;
            m.1 = m.1.saturating_add(i64::try_from(*fuel).unwrap_or(i64::MAX));
        }
    }
    for (minute, (count, fuel)) in minutes {
        tx.prepare_cached(
            "INSERT INTO result_minutes (minute, count, fuel) VALUES (?1, ?2, ?3)
             ON CONFLICT(minute) DO UPDATE SET count = count + excluded.count,
               fuel = CAST(min(fuel + excluded.fuel, 9223372036854775807) AS INTEGER)",
        )?
        .execute(params![
            i64::try_from(minute).unwrap_or(i64::MAX),
            count,
            fuel
        ])?;
    }
    Ok(())
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
            forget_copies_out(tx, *unit)?;
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
            forget_copies_out(tx, *unit)?;
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
        StoreOp::Cancel { job, reason, at_ms } => {
            tx.prepare_cached(
                "UPDATE jobs SET cancelled_ms = coalesce(cancelled_ms, ?2) WHERE id = ?1",
            )?
            .execute(params![job, at_ms])?;
            tx.prepare_cached(
                "UPDATE results SET state = 'voided', error = ?2
                 WHERE state = 'in_progress'
                   AND unit_id IN (SELECT id FROM units WHERE job_id = ?1 AND state = 'active')",
            )?
            .execute(params![job, reason])?;
            tx.prepare_cached(
                "UPDATE units SET state = 'cancelled', reason = ?2 WHERE job_id = ?1 AND state = 'active'",
            )?
            .execute(params![job, reason])?;
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
    // A cancelled job's unit loses a bad row but is not run again.
    tx.prepare_cached(
        "UPDATE units SET state = 'cancelled', reason = ?2
         WHERE id = ?1 AND job_id IN (SELECT id FROM jobs WHERE cancelled_ms IS NOT NULL)",
    )?
    .execute(params![unit, peergrid_core::scheduler::CANCELLED])?;
    // Copies still out when the unit finished were forgotten by the
    // scheduler: they must not come back as running copies.
    tx.prepare_cached(
        "UPDATE results SET state = 'voided', error = 'the unit finished before this copy reported'
         WHERE unit_id = ?1 AND state = 'in_progress'",
    )?
    .execute([unit])?;
    Ok(())
}
