//! Writes outside the scheduler's batches, each on the writer connection:
//! blobs, a job and its units, host registration, and the operator's bans
//! and reissues.

use peergrid_proto::Hash;
use peergrid_proto::spec::{JobSubmission, Validator};
use peergrid_proto::wire::{HostFacts, JobId, UnitId};
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{Account, BanTarget, HostId, ReissueUnits, Reissued, StoreError};

pub(super) fn put_blob(
    c: &mut Connection,
    hash: &Hash,
    data: &[u8],
    now_ms: u64,
) -> Result<(), StoreError> {
    put_blobs(c, &[(*hash, data)], now_ms)
}

/// Stores uploaded blobs in one transaction. A blob new to the store is a
/// loose upload from `now_ms` until a job claims it ([`create_job`]); a
/// loose one uploaded again counts from `now_ms` afresh; one the store
/// already held for a job or a result stays claimed.
pub(super) fn put_blobs<B: AsRef<[u8]>>(
    c: &mut Connection,
    blobs: &[(Hash, B)],
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    {
        let mut insert =
            tx.prepare_cached("INSERT OR IGNORE INTO blobs (hash, data) VALUES (?1, ?2)")?;
        let mut loose = tx.prepare_cached(
            "INSERT INTO blob_uploads (hash, at_ms) VALUES (?1, ?2)
             ON CONFLICT(hash) DO UPDATE SET at_ms = excluded.at_ms",
        )?;
        let mut again = tx.prepare_cached("UPDATE blob_uploads SET at_ms = ?2 WHERE hash = ?1")?;
        for (hash, data) in blobs {
            let hash = &hash.0[..];
            match insert.execute(params![hash, data.as_ref()])? {
                0 => again.execute(params![hash, now_ms])?,
                _ => loose.execute(params![hash, now_ms])?,
            };
        }
    }
    tx.commit()?;
    Ok(())
}

/// Loose uploads named again (a submission asked which blobs it must
/// send, and these it need not): they count from `now_ms` afresh, so
/// garbage collection leaves them to the job about to claim them.
pub(super) fn touch_uploads(
    c: &mut Connection,
    hashes: &[Hash],
    now_ms: u64,
) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    {
        let mut again = tx.prepare_cached("UPDATE blob_uploads SET at_ms = ?2 WHERE hash = ?1")?;
        for hash in hashes {
            again.execute(params![&hash.0[..], now_ms])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Deletes at most `limit` loose uploads that came before `before_ms` and
/// that nothing names, with their bytes (in no particular order); returns
/// their hashes. The dataset, its history and retired copies are not
/// checked: they name only outputs, and every output passes through
/// `apply`, which takes its bytes off the list; a new way of naming a
/// blob must claim it too. A loose
/// upload something names after all (say, a task's output with the same
/// bytes) loses only its place on the list.
pub(super) fn collect_blobs(
    c: &mut Connection,
    before_ms: u64,
    limit: usize,
) -> Result<Vec<Hash>, StoreError> {
    let tx = c.transaction()?;
    let mut collected = Vec::new();
    {
        let mut old = tx.prepare_cached(
            // No index on the time: one more B-tree per upload halved the
            // batch upload's rate, and the list is short but for the
            // minutes a submission takes.
            "SELECT hash FROM blob_uploads WHERE at_ms < ?1 LIMIT ?2",
        )?;
        let candidates = old
            .query_map(params![before_ms.min(i64::MAX as u64), limit as i64], |r| {
                r.get::<_, Vec<u8>>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut unlist = tx.prepare_cached("DELETE FROM blob_uploads WHERE hash = ?1")?;
        let mut delete = tx.prepare_cached(
            "DELETE FROM blobs WHERE hash = ?1
               AND NOT EXISTS (SELECT 1 FROM units WHERE input_hash = ?1)
               AND NOT EXISTS (SELECT 1 FROM jobs WHERE module_hash = ?1
                               OR instr(validator_json, lower(hex(?1))) > 0)
               AND NOT EXISTS (SELECT 1 FROM results WHERE output_hash IS NOT NULL
                               AND substr(output_hash, 1, 8) = substr(?1, 1, 8)
                               AND output_hash = ?1)",
        )?;
        for hash in candidates {
            unlist.execute([&hash])?;
            if delete.execute([&hash])? > 0 {
                collected.push(super::columns::hash_col(hash)?);
            }
        }
    }
    tx.commit()?;
    Ok(collected)
}

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A submission's JSON columns, encoded before the writer is locked.
pub(super) struct JobColumns {
    args: String,
    settings: String,
    signature: String,
    validator: String,
    plots: String,
    /// The dataset's licence and citation; NULL when the job names neither.
    terms: Option<String>,
}

impl JobColumns {
    pub(super) fn of(job: &JobSubmission) -> Result<JobColumns, StoreError> {
        Ok(JobColumns {
            args: to_json(&job.args)?,
            settings: to_json(&job.settings)?,
            signature: to_json(&job.signature)?,
            validator: to_json(&job.validator)?,
            plots: to_json(&job.plots)?,
            terms: match job.terms.is_empty() {
                true => None,
                false => Some(to_json(&job.terms)?),
            },
        })
    }
}

/// Stores a job and its units in one transaction.
pub(super) fn create_job(
    c: &mut Connection,
    job: &JobSubmission,
    columns: &JobColumns,
    now_ms: u64,
) -> Result<JobId, StoreError> {
    let JobColumns {
        args,
        settings,
        signature,
        validator,
        plots,
        terms,
    } = columns;
    let tx = c.transaction()?;
    tx.execute(
        "INSERT INTO jobs (name, module_hash, args_json, settings_json, signature_json, created_ms, validator_json,
                           seed_by_number, plots_json, terms_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9)",
        params![job.name, &job.module.0[..], args, settings, signature, now_ms, validator, plots, terms],
    )?;
    let id = tx.last_insert_rowid() as JobId;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO units (job_id, name, input_hash, number) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut claim = tx.prepare_cached("DELETE FROM blob_uploads WHERE hash = ?1")?;
        for (number, u) in (1u64..).zip(&job.units) {
            stmt.execute(params![id, u.name, &u.input.0[..], number])?;
            claim.execute([&u.input.0[..]])?;
        }
        tx.execute(
            "INSERT INTO job_counts (job_id, active) VALUES (?1, ?2)",
            params![id, job.units.len() as i64],
        )?;
        claim.execute([&job.module.0[..]])?;
        if let Validator::Custom { module } = &job.validator {
            claim.execute([&module.0[..]])?;
        }
    }
    tx.commit()?;
    Ok(id)
}

/// Registers a host or refreshes its facts and account; returns its id.
pub(super) fn upsert_host_in(
    c: &Connection,
    key: &[u8; 32],
    facts: &HostFacts,
    version: &str,
    account: &Account,
    now_ms: u64,
) -> Result<HostId, StoreError> {
    // One transaction: the team, the host and the team it left.
    let tx = c.unchecked_transaction()?;
    let c: &Connection = &tx;
    let old_team: Option<Option<u64>> = c
        .query_row(
            "SELECT team_id FROM hosts WHERE public_key = ?1",
            [&key[..]],
            |r| r.get(0),
        )
        .optional()?;
    // The first account to name a team founds it; a name differing only
    // in ASCII case joins the same team (the column's collation).
    let team: Option<u64> = if account.id.is_empty() || account.team.is_empty() {
        None
    } else {
        c.prepare_cached(
            "INSERT INTO teams (name, founder, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO NOTHING",
        )?
        .execute(params![account.team, account.id, now_ms])?;
        Some(c.query_row(
            "SELECT id FROM teams WHERE name = ?1",
            [&account.team],
            |r| r.get(0),
        )?)
    };
    c.execute(
        "INSERT INTO hosts (public_key, cores, memory_bytes, os, arch, version, first_seen_ms, last_seen_ms, account, account_name,
                            name, cpu_model, slots, team_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(public_key) DO UPDATE SET cores = ?2, memory_bytes = ?3, os = ?4,
           arch = ?5, version = ?6, last_seen_ms = ?7,
           -- a Hello without an attachment does not detach a host
           -- from its account (nor from a ban on it, nor its team)
           account = CASE WHEN ?8 = '' THEN account ELSE ?8 END,
           account_name = CASE WHEN ?8 = '' THEN account_name ELSE ?9 END,
           team_id = CASE WHEN ?8 = '' THEN team_id ELSE ?13 END,
           name = ?10, cpu_model = ?11, slots = ?12",
        params![&key[..], facts.cores, facts.memory_bytes, facts.os, facts.arch, version, now_ms, account.id, account.name,
                facts.name, facts.cpu_model, facts.slots, team],
    )?;
    // A team its last host left is gone: teams never outnumber hosts.
    if let Some(Some(old)) = old_team
        && !account.id.is_empty()
        && team != Some(old)
    {
        c.execute(
            "DELETE FROM teams WHERE id = ?1
               AND NOT EXISTS (SELECT 1 FROM hosts WHERE team_id = ?1)",
            [old],
        )?;
    }
    let id = c.query_row(
        "SELECT id FROM hosts WHERE public_key = ?1",
        [&key[..]],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(id)
}

/// Bans `target`, or lifts its ban when `reason` is `None`; returns
/// whether anything changed.
pub(super) fn set_ban(
    c: &Connection,
    target: &BanTarget,
    reason: Option<&str>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let (kind, name) = match target {
        BanTarget::Host(id) => ("host", id.to_string()),
        BanTarget::Account(a) => ("account", a.clone()),
    };
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
}

/// The operator's `reissue`: each named unit of `job` (or each failed
/// one) that failed is computed afresh with its whole error budget. Its
/// copies so far move to `retired_results` (kept on record, out of the
/// quorum's sight, so hosts that ran it before may run it again). The
/// unit goes back to `active` at the end of the feeder's reopened order,
/// which a running `serve` loads within seconds. Active, validated and
/// cancelled units are left alone, with the reason: a validated unit may
/// still be held by the running scheduler for an audit, and its row is
/// disputed through audits, not by hand.
pub(super) fn reissue(
    c: &mut Connection,
    job: JobId,
    which: &ReissueUnits,
    reason: &str,
    now_ms: u64,
) -> Result<Option<Vec<Reissued>>, StoreError> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let cancelled: Option<Option<u64>> = tx
        .query_row("SELECT cancelled_ms FROM jobs WHERE id = ?1", [job], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(cancelled) = cancelled else {
        return Ok(None);
    };
    let numbers: Vec<u64> = match which {
        ReissueUnits::Numbers(n) => n.clone(),
        ReissueUnits::Failed => tx
            .prepare(
                "SELECT number FROM units WHERE job_id = ?1 AND state = 'failed' ORDER BY number",
            )?
            .query_map([job], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
    };
    let mut out = Vec::with_capacity(numbers.len());
    for number in numbers {
        let unit: Option<(UnitId, String)> = tx
            .prepare_cached("SELECT id, state FROM units WHERE job_id = ?1 AND number = ?2")?
            .query_row(params![job, number], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((unit, state)) = unit else {
            out.push(Reissued::refused(
                number,
                "",
                format!("job {job} has no unit {number}"),
            ));
            continue;
        };
        let refusal = match state.as_str() {
            _ if cancelled.is_some() => Some("its job was cancelled".to_string()),
            "active" => Some("it is still being computed; it gets copies as it needs them".into()),
            "validated" => Some("it is validated: the dataset keeps its row".into()),
            "failed" => None,
            other => Some(format!("a unit {other} cannot be reissued")),
        };
        if let Some(why) = refusal {
            out.push(Reissued::refused(number, &state, why));
            continue;
        }
        tx.prepare_cached(
            "INSERT INTO retired_results (unit_id, host_id, state, sent_ms, deadline_ms, received_ms,
                                          elapsed_ms, output_hash, fuel, engine, error, resumed, single,
                                          stderr, retired_ms, reason)
             SELECT unit_id, host_id, state, sent_ms, deadline_ms, received_ms, elapsed_ms, output_hash,
                    fuel, engine, error, resumed, single, stderr, ?2, ?3
             FROM results WHERE unit_id = ?1",
        )?
        .execute(params![unit, now_ms, reason])?;
        tx.prepare_cached("DELETE FROM results WHERE unit_id = ?1")?
            .execute([unit])?;
        tx.prepare_cached(
            "UPDATE units SET state = 'active', reason = NULL,
               reopened_seq = (SELECT coalesce(max(reopened_seq), 0) + 1 FROM units WHERE reopened_seq > 0)
             WHERE id = ?1",
        )?
        .execute([unit])?;
        out.push(Reissued {
            number,
            was: state,
            refused: None,
        });
    }
    tx.commit()?;
    Ok(Some(out))
}
