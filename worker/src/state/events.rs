//! The worker's recent event log, kept in the state database (`events`)
//! so `peergrid-worker log` shows it whether or not the worker runs, like
//! `boinccmd --get_messages`: joined, fetched, finished, suspended and why,
//! given back, errors. Bounded: the oldest rows go past [`MAX_EVENTS`].

use std::path::Path;

use anyhow::Result;
use rusqlite::{Connection, params};
use serde::Serialize;

use super::{LocalState, STATE_FILE, clamp};

/// Events kept; older ones are deleted as new ones come.
pub const MAX_EVENTS: i64 = 1000;
/// Longest message kept, in bytes (longer ones are cut).
const MAX_MESSAGE: usize = 500;

/// One line of the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// What kind of event: `joined`, `fetched`, `finished`, `failed`,
    /// `suspended`, `resumed`, `paused`, `given back`, `error`, …
    pub kind: String,
    pub message: String,
}

impl LocalState {
    /// Adds an event at `now_ms`, dropping the oldest past [`MAX_EVENTS`].
    pub fn record_event(&self, kind: &str, message: &str, now_ms: u64) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        insert_event(&tx, kind, message, now_ms)?;
        tx.commit()?;
        Ok(())
    }
}

/// Adds an event at `now_ms` within `tx` (so a change and its event are
/// one commit), dropping the oldest past [`MAX_EVENTS`].
pub(super) fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    kind: &str,
    message: &str,
    now_ms: u64,
) -> Result<()> {
    let mut message = message.to_string();
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    tx.prepare_cached("INSERT INTO events (at_ms, kind, message) VALUES (?1, ?2, ?3)")?
        .execute(params![clamp(now_ms), kind, message])?;
    tx.prepare_cached("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?1")?
        .execute([MAX_EVENTS])?;
    Ok(())
}

/// The newest `n` events of the worker on data folder `data`, oldest
/// first; read-only, so it works beside a running worker or without one.
pub fn read_events(data: &Path, n: usize) -> Result<Vec<Event>> {
    let path = data.join(STATE_FILE);
    if !path.exists() {
        anyhow::bail!(
            "{} holds no worker state; give the worker's --data folder",
            data.display()
        );
    }
    let db = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let Ok(mut stmt) = db.prepare(
        "SELECT at_ms, kind, message FROM
           (SELECT id, at_ms, kind, message FROM events ORDER BY id DESC LIMIT ?1)
         ORDER BY id",
    ) else {
        // A state written before the event log: nothing logged yet.
        return Ok(Vec::new());
    };
    let rows = stmt.query_map([i64::try_from(n).unwrap_or(i64::MAX)], |r| {
        Ok(Event {
            at_ms: r.get::<_, i64>(0)?.max(0) as u64,
            kind: r.get(1)?,
            message: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_bounded_and_read_newest_last() {
        let dir = tempfile::tempdir().unwrap();
        let state = LocalState::open(dir.path()).unwrap();
        for i in 0..(MAX_EVENTS as u64 + 5) {
            state
                .record_event("fetched", &format!("event {i}"), 1000 + i)
                .unwrap();
        }
        let all = read_events(dir.path(), usize::MAX).unwrap();
        assert_eq!(all.len() as i64, MAX_EVENTS, "the oldest went");
        assert_eq!(all[0].message, "event 5");
        let last = read_events(dir.path(), 2).unwrap();
        let messages: Vec<&str> = last.iter().map(|e| e.message.as_str()).collect();
        let newest = format!("event {}", MAX_EVENTS + 4);
        assert_eq!(
            messages,
            [
                format!("event {}", MAX_EVENTS + 3).as_str(),
                newest.as_str()
            ]
        );
        assert_eq!(last[1].at_ms, 1000 + MAX_EVENTS as u64 + 4);
        // A long message is cut, on a character boundary.
        state.record_event("error", &"é".repeat(400), 1).unwrap();
        let cut = &read_events(dir.path(), 1).unwrap()[0].message;
        assert!(cut.len() <= MAX_MESSAGE + 3 && cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn no_state_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_events(dir.path(), 10).unwrap_err().to_string();
        assert!(e.contains("holds no worker state"), "{e}");
    }
}
