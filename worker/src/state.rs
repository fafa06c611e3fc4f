//! The worker's durable state: one SQLite file, `DATA/worker.sqlite`, so
//! that `kill -9`, a crash or a reboot loses no finished result and no
//! accepted task.
//!
//! - `tasks`: every task the coordinator handed this host and that has not
//!   finished, with its last checkpoint (guest SDK) and the fuel used at it.
//!   A task leaves the table in the same transaction that stores its report.
//! - `reports`: finished tasks the coordinator has not acknowledged yet.
//! - `history`: one row per finished task (unit, time, fuel, acknowledged),
//!   for "results today" and claimed credit in `status`.
//! - `events`: the recent event log `peergrid-worker log` shows (joined,
//!   fetched, finished, suspended and why, errors), bounded (`events`).
//!
//! WAL mode with `synchronous = FULL`: a committed task, checkpoint or
//! report survives the process and the machine dying. Writes are rare (a
//! task arriving, a checkpoint per interval, a task finishing), so the
//! fsyncs cost nothing that matters.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, Result};
use peergrid_proto::wire::{Outcome, Task, TaskReport, UnitId};
use peergrid_proto::{codec, deadline};
use rusqlite::{Connection, OptionalExtension, params};

use crate::sandbox::Checkpoint;

/// File name of the state database in the data folder.
pub const STATE_FILE: &str = "worker.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    unit INTEGER PRIMARY KEY,
    task BLOB NOT NULL,
    deadline_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    checkpoint BLOB,
    checkpoint_fuel INTEGER,
    checkpoint_ms INTEGER
);
CREATE TABLE IF NOT EXISTS reports (
    unit INTEGER PRIMARY KEY,
    report BLOB NOT NULL,
    finished_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    unit INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    fuel INTEGER NOT NULL,
    success INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS history_finished ON history (finished_ms);
CREATE TABLE IF NOT EXISTS returns (
    unit INTEGER PRIMARY KEY,
    returned_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
";

/// `settings` row that holds the volunteer's `pause` (`1`) across restarts.
const PAUSED: &str = "paused";
/// `settings` row that holds when a `pause --for` ends (ms since the Unix
/// epoch); absent: the pause lasts until `resume`.
const PAUSED_UNTIL: &str = "paused_until_ms";
/// `settings` row that holds why the worker stopped on a permanent failure
/// (wrong certificate, ban), until it next connects.
const STOPPED_FOR: &str = "stopped_for";

/// A task as kept locally, with the checkpoint to resume from.
#[derive(Debug, Clone)]
pub struct StoredTask {
    pub task: Task,
    /// When it is due, by this machine's clock.
    pub due_ms: u64,
    pub checkpoint: Option<Checkpoint>,
}

/// Counts for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Tasks finished since `since_ms`.
    pub finished_since: u64,
    /// Fuel of every acknowledged successful result: claimed credit.
    pub claimed_fuel: u64,
    /// Reports waiting for the coordinator.
    pub pending_reports: u64,
    /// Tasks held: running, stopped to resume, or waiting to start.
    pub held_tasks: u64,
}

/// The state database. One connection behind a mutex: every operation is
/// one short transaction, called from the daemon's loop and, for
/// checkpoints, from task threads.
pub struct LocalState {
    db: Mutex<Connection>,
}

impl LocalState {
    /// Opens (creating if needed) `DATA/worker.sqlite`.
    pub fn open(data: &Path) -> Result<LocalState> {
        let path = data.join(STATE_FILE);
        let db = Connection::open(&path)
            .with_context(|| format!("opening the worker's state {}", path.display()))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA).with_context(|| {
            format!(
                "{} is not a worker state database; move it away to start afresh",
                path.display()
            )
        })?;
        Ok(LocalState { db: Mutex::new(db) })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        peergrid_os::lock(&self.db)
    }

    /// Keeps tasks the coordinator just assigned, received at `now_ms` (a
    /// unit already held is left as it is). Each is due by this machine's
    /// clock as the coordinator's rule makes it due by its own
    /// ([`deadline::copy_deadline_ms`] from the time of receipt), so a
    /// skewed clock never makes the worker start tasks late or give them
    /// back early.
    pub fn add_tasks(&self, tasks: &[Task], now_ms: u64) -> Result<()> {
        self.add_tasks_noting(tasks, now_ms, None)
    }

    /// [`LocalState::add_tasks`] with an event for the log (`kind`,
    /// `message`) in the same commit.
    pub fn add_tasks_noting(
        &self,
        tasks: &[Task],
        now_ms: u64,
        event: Option<(&str, &str)>,
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        for task in tasks {
            let due_ms = deadline::copy_deadline_ms(now_ms, task.limits.wall_ms);
            tx.prepare_cached(
                "INSERT OR IGNORE INTO tasks (unit, task, deadline_ms, received_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![task.unit as i64, codec::encode(task)?, clamp(due_ms), clamp(now_ms)])?;
        }
        if let Some((kind, message)) = event {
            events::insert_event(&tx, kind, message, now_ms)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every unfinished task, oldest first, with its checkpoint. A row that
    /// no longer decodes (written by another version) is dropped with a
    /// warning: the coordinator reissues its unit after the deadline.
    pub fn tasks(&self) -> Result<Vec<StoredTask>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT unit, task, checkpoint, checkpoint_fuel, deadline_ms FROM tasks ORDER BY received_ms, unit",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut tasks = Vec::new();
        let mut broken = Vec::new();
        for row in rows {
            let (unit, bytes, checkpoint, fuel, due_ms) = row?;
            match codec::decode::<Task>(&bytes) {
                Ok(task) => tasks.push(StoredTask {
                    task,
                    due_ms: due_ms.max(0) as u64,
                    checkpoint: checkpoint.map(|state| Checkpoint {
                        state,
                        fuel_used: fuel.unwrap_or(0).max(0) as u64,
                    }),
                }),
                Err(e) => {
                    tracing::warn!(unit, "dropping an unreadable stored task: {e}");
                    broken.push(unit);
                }
            }
        }
        drop(stmt);
        for unit in broken {
            db.execute("DELETE FROM tasks WHERE unit = ?1", [unit])?;
        }
        Ok(tasks)
    }

    /// Every unit not settled with the coordinator: held tasks, reports
    /// not yet acknowledged and tasks given back but not yet told; at most
    /// `max` (`None` beyond).
    pub fn held_units(&self, max: usize) -> Result<Option<Vec<UnitId>>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT unit FROM tasks UNION SELECT unit FROM reports UNION SELECT unit FROM returns
             ORDER BY unit LIMIT ?1",
        )?;
        let units = stmt
            .query_map([max as i64 + 1], |r| r.get::<_, i64>(0))?
            .map(|u| u.map(|u| u as UnitId))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((units.len() <= max).then_some(units))
    }

    /// How many tasks are held.
    pub fn task_count(&self) -> Result<usize> {
        let n: i64 = self
            .db()
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?;
        Ok(n.max(0) as usize)
    }

    /// Gives a task back unstarted (it can no longer start in time, or its
    /// module cannot be had): forgets it and keeps its unit to tell the
    /// coordinator, which voids the copy without charging this host.
    /// Drops a held task with its checkpoint, reporting nothing: the
    /// coordinator no longer wants it (its job was cancelled).
    pub fn forget(&self, unit: UnitId) -> Result<()> {
        self.db()
            .execute("DELETE FROM tasks WHERE unit = ?1", [unit as i64])?;
        Ok(())
    }

    pub fn give_back(&self, unit: UnitId, now_ms: u64) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM tasks WHERE unit = ?1", [unit as i64])?;
        tx.execute(
            "INSERT OR REPLACE INTO returns (unit, returned_ms) VALUES (?1, ?2)",
            params![unit as i64, clamp(now_ms)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Units given back and not yet told to the coordinator, oldest first,
    /// at most `max`.
    pub fn pending_returns(&self, max: usize) -> Result<Vec<UnitId>> {
        let db = self.db();
        let mut stmt =
            db.prepare_cached("SELECT unit FROM returns ORDER BY returned_ms, unit LIMIT ?1")?;
        let units = stmt
            .query_map([max as i64], |r| r.get::<_, i64>(0))?
            .map(|u| u.map(|u| u as UnitId))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(units)
    }

    /// The coordinator heard of these given-back units: forget them.
    pub fn returns_told(&self, units: &[UnitId]) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        for unit in units {
            tx.execute("DELETE FROM returns WHERE unit = ?1", [*unit as i64])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Keeps `checkpoint` as the task's state to resume from.
    pub fn save_checkpoint(
        &self,
        unit: UnitId,
        checkpoint: &Checkpoint,
        now_ms: u64,
    ) -> Result<()> {
        self.db().execute(
            "UPDATE tasks SET checkpoint = ?2, checkpoint_fuel = ?3, checkpoint_ms = ?4 WHERE unit = ?1",
            params![unit as i64, checkpoint.state, clamp(checkpoint.fuel_used), clamp(now_ms)],
        )?;
        Ok(())
    }

    /// Stores a finished task's report and forgets the task, atomically.
    pub fn finish(&self, report: &TaskReport, now_ms: u64) -> Result<()> {
        self.finish_noting(report, now_ms, None)
    }

    /// [`LocalState::finish`] with an event for the log (`kind`,
    /// `message`) in the same commit: one durable write per finished task.
    pub fn finish_noting(
        &self,
        report: &TaskReport,
        now_ms: u64,
        event: Option<(&str, &str)>,
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.prepare_cached("DELETE FROM tasks WHERE unit = ?1")?
            .execute([report.unit as i64])?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO reports (unit, report, finished_ms) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            report.unit as i64,
            codec::encode(report)?,
            clamp(now_ms)
        ])?;
        tx.prepare_cached(
            "INSERT INTO history (unit, finished_ms, fuel, success) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            report.unit as i64,
            clamp(now_ms),
            clamp(report.fuel_used),
            matches!(report.outcome, Outcome::Success(_))
        ])?;
        if let Some((kind, message)) = event {
            events::insert_event(&tx, kind, message, now_ms)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Reports not yet acknowledged, oldest first, at most `max`.
    pub fn pending_reports(&self, max: usize) -> Result<Vec<TaskReport>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT unit, report FROM reports ORDER BY finished_ms, unit LIMIT ?1",
        )?;
        let rows = stmt.query_map([max as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut reports = Vec::new();
        for row in rows {
            let (unit, bytes) = row?;
            match codec::decode::<TaskReport>(&bytes) {
                Ok(report) => reports.push(report),
                Err(e) => tracing::warn!(unit, "skipping an unreadable stored report: {e}"),
            }
        }
        Ok(reports)
    }

    /// The coordinator settled these reports: forget them; count the
    /// accepted ones as claimed credit.
    pub fn settle(&self, accepted: &[UnitId], rejected: &[UnitId]) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        for unit in accepted.iter().chain(rejected) {
            tx.execute("DELETE FROM reports WHERE unit = ?1", [*unit as i64])?;
        }
        for unit in accepted {
            tx.execute(
                "UPDATE history SET acknowledged = 1 WHERE unit = ?1",
                [*unit as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether the volunteer paused computing (`peergrid-worker pause`) and
    /// has not resumed it since, across restarts.
    pub fn paused(&self) -> Result<bool> {
        let value: Option<String> = self
            .db()
            .query_row(
                "SELECT value FROM settings WHERE name = ?1",
                [PAUSED],
                |r| r.get(0),
            )
            .optional()?;
        Ok(value.as_deref() == Some("1"))
    }

    /// Records the volunteer's `pause` (until `resume`) or `resume`.
    pub fn set_paused(&self, paused: bool) -> Result<()> {
        self.set_pause(paused, None)
    }

    /// Records the volunteer's `pause`, ending by itself at `until_ms` if
    /// given, or `resume` (`paused` false).
    pub fn set_pause(&self, paused: bool, until_ms: Option<u64>) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [PAUSED, if paused { "1" } else { "0" }],
        )?;
        match until_ms.filter(|_| paused) {
            Some(until) => tx.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [PAUSED_UNTIL, &until.to_string()],
            )?,
            None => tx.execute("DELETE FROM settings WHERE name = ?1", [PAUSED_UNTIL])?,
        };
        tx.commit()?;
        Ok(())
    }

    /// When the volunteer's pause ends by itself (`pause --for`), if it does.
    pub fn paused_until(&self) -> Result<Option<u64>> {
        let value: Option<String> = self
            .db()
            .query_row(
                "SELECT value FROM settings WHERE name = ?1",
                [PAUSED_UNTIL],
                |r| r.get(0),
            )
            .optional()?;
        Ok(value.and_then(|v| v.parse().ok()))
    }

    /// Records why the worker stopped on a permanent failure, or clears it
    /// (`None`) once a connection succeeds.
    pub fn set_stopped_for(&self, why: Option<&str>) -> Result<()> {
        let db = self.db();
        match why {
            Some(why) => db.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [STOPPED_FOR, why],
            )?,
            None => db.execute("DELETE FROM settings WHERE name = ?1", [STOPPED_FOR])?,
        };
        Ok(())
    }

    /// Whether a task for `unit` is kept (not finished).
    pub fn has_task(&self, unit: UnitId) -> Result<bool> {
        Ok(self
            .db()
            .query_row("SELECT 1 FROM tasks WHERE unit = ?1", [unit as i64], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// Claimed credit of the results finished since `since_ms`: fuel of
    /// the acknowledged successful ones.
    pub fn claimed_fuel_since(&self, since_ms: u64) -> Result<u64> {
        let claimed: i64 = self.db().query_row(
            "SELECT coalesce(sum(fuel), 0) FROM history
             WHERE acknowledged = 1 AND success = 1 AND finished_ms >= ?1",
            [clamp(since_ms)],
            |r| r.get(0),
        )?;
        Ok(claimed.max(0) as u64)
    }

    /// Reports not yet settled by the coordinator (the uplink asks at
    /// every exchange: a count of one small table, not of the history).
    pub fn pending_report_count(&self) -> Result<u64> {
        let n: i64 = self
            .db()
            .prepare_cached("SELECT count(*) FROM reports")?
            .query_row([], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Counts for `status`; `since_ms` is the start of the local day.
    pub fn totals(&self, since_ms: u64) -> Result<Totals> {
        let db = self.db();
        let finished_since: i64 = db.query_row(
            "SELECT count(*) FROM history WHERE finished_ms >= ?1",
            [clamp(since_ms)],
            |r| r.get(0),
        )?;
        let claimed: i64 = db.query_row(
            "SELECT coalesce(sum(fuel), 0) FROM history WHERE acknowledged = 1 AND success = 1",
            [],
            |r| r.get(0),
        )?;
        let pending: i64 = db.query_row("SELECT count(*) FROM reports", [], |r| r.get(0))?;
        let held: i64 = db.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?;
        Ok(Totals {
            finished_since: finished_since.max(0) as u64,
            claimed_fuel: claimed.max(0) as u64,
            pending_reports: pending.max(0) as u64,
            held_tasks: held.max(0) as u64,
        })
    }
}

/// Why the worker on data folder `data` stopped on a permanent failure,
/// if it did and has not connected since; read without creating anything
/// (for `status` when no worker answers).
pub fn stopped_for(data: &Path) -> Option<String> {
    let path = data.join(STATE_FILE);
    if !path.exists() {
        return None;
    }
    let db = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    db.query_row(
        "SELECT value FROM settings WHERE name = ?1",
        [STOPPED_FOR],
        |r| r.get(0),
    )
    .optional()
    .ok()
    .flatten()
}

/// SQLite integers are signed; counts and times past `i64::MAX` saturate.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

mod events;
pub use events::{Event, MAX_EVENTS, read_events};

#[cfg(test)]
mod tests;
