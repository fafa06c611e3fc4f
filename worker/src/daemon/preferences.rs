//! The volunteer's preferences while the worker runs: `config set` (or
//! any edit of the file) takes effect without a restart. The worker looks
//! at the file every [`LOOK_EVERY`] and at once when `config set` asks
//! over the control socket; a file that does not parse or check is not
//! applied, and the event log says why. Flags on the command line still
//! win over the file, and the account (which the greeting carries)
//! applies at the next start.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use peergrid_os::lock;

use super::{Live, Shared, note};
use crate::prefs::{APPLY_AT_RESTART, Overrides, Preferences};
use crate::state::LocalState;

/// How often the worker looks for a change of the preferences file.
pub const LOOK_EVERY: Duration = Duration::from_secs(2);

/// Where the preferences come from: the file, and the flags over it.
#[derive(Clone, Debug)]
pub struct PrefsSource {
    pub path: PathBuf,
    pub overrides: Overrides,
    /// The machine's cores, from which the slots follow.
    pub cores: usize,
}

/// Reads the file again and puts its preferences (flags applied) in
/// force; returns what changed. An error (the file does not parse or
/// check) leaves the preferences in force as they were.
pub(super) fn apply(
    source: &PrefsSource,
    shared: &Shared,
    state: &LocalState,
) -> Result<Vec<String>> {
    let prefs = Preferences::load(&source.path)?.merge(&source.overrides);
    prefs.validate()?;
    let before = shared.live();
    let changes = prefs.differences(&before.prefs);
    if changes.is_empty() {
        return Ok(changes);
    }
    let slots = prefs.slots(source.cores);
    let restart: Vec<&str> = APPLY_AT_RESTART
        .into_iter()
        .filter(|k| changes.iter().any(|c| c.starts_with(&format!("{k}:"))))
        .collect();
    *lock(&shared.live) = Arc::new(Live { prefs, slots });
    shared.live_version.fetch_add(1, Ordering::Relaxed);
    let mut said = changes.join("; ");
    if !restart.is_empty() {
        said.push_str(&format!(
            " ({} apply at the next start)",
            restart.join(" and ")
        ));
    }
    tracing::info!("preferences changed: {said}");
    note(state, "preferences", said);
    // More slots or a larger buffer: start and fetch now.
    shared.wake_core.notify_one();
    shared.wake_uplink.notify_one();
    Ok(changes)
}

/// Applies each change of the preferences file, looking every
/// [`LOOK_EVERY`]; runs until aborted.
pub(super) async fn watch(source: PrefsSource, shared: Arc<Shared>, state: Arc<LocalState>) {
    let stamp = |path: &PathBuf| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut seen = stamp(&source.path);
    let mut ticker = tokio::time::interval(LOOK_EVERY);
    loop {
        ticker.tick().await;
        let now = stamp(&source.path);
        if now == seen {
            continue;
        }
        seen = now;
        if let Err(e) = apply(&source, &shared, &state) {
            let said = format!("{e:#}; the preferences in force stay as they were");
            tracing::warn!("not applying the changed preferences file: {said}");
            note(&state, "error", format!("preferences file: {said}"));
        }
    }
}
