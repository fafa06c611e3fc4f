//! The worker's module cache and the check that gates it: a task's module
//! is fetched by hash into `DATA/modules/<hash>.wasm` only after the
//! task's signature verifies under the pinned project key ([`refusal`]),
//! is re-hashed whenever it is read, and the caches (`DATA/modules`, the
//! sandbox's `DATA/compiled`) are trimmed to the volunteer's disk cap.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Result, bail};
use peergrid_proto::limits::MAX_MODULE;
use peergrid_proto::wire::{Outcome, Reply, Request, Task, TaskReport};
use peergrid_proto::{Hash, signing};

use super::printable;
use crate::net::{self, Session};

/// The error report for a task whose signature chain fails under the
/// pinned project key, or `None` if the task may run.
pub(super) fn refusal(project_key: &[u8; 32], task: &Task) -> Option<TaskReport> {
    let e = signing::verify(project_key, &task.signature, &task.module, &task.args).err()?;
    let why = printable(&e.to_string());
    tracing::warn!(unit = task.unit, "refusing a task: {why}");
    Some(TaskReport {
        unit: task.unit,
        outcome: Outcome::Error(format!("refused by the worker: {why}")),
        fuel_used: 0,
        elapsed_ms: 0,
        engine: String::new(),
        resumed: false,
    })
}

fn module_path(data: &Path, hash: &Hash) -> PathBuf {
    data.join("modules").join(format!("{hash}.wasm"))
}

/// A cached module's bytes, if present and intact.
pub(super) fn read_module(data: &Path, hash: &Hash) -> Option<Vec<u8>> {
    let bytes = std::fs::read(module_path(data, hash)).ok()?;
    (Hash::of(&bytes) == *hash).then_some(bytes)
}

/// Makes sure the module is in `DATA/modules`, fetching it over `session`
/// if needed.
pub(super) async fn fetch_module(data: &Path, session: &Session, hash: &Hash) -> Result<()> {
    let path = module_path(data, hash);
    if let Ok(b) = tokio::fs::read(&path).await
        && Hash::of(&b) == *hash
    {
        return Ok(());
    }
    let bytes = match net::request(&session.connection, &Request::GetBlob(*hash)).await? {
        Reply::Blob(b) => b,
        Reply::Error(e) => bail!("{}", printable(&e.to_string())),
        _ => bail!("unexpected reply to a module fetch"),
    };
    if bytes.len() > MAX_MODULE || Hash::of(&bytes) != *hash {
        bail!("the coordinator sent a module that does not match its hash");
    }
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, &bytes).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(())
}

/// Removes the oldest files of `DATA/modules` and `DATA/compiled/*` until
/// they add up to at most `cap` bytes; files named after a hash in `keep`
/// stay.
pub fn trim_caches(data: &Path, cap: u64, keep: &HashSet<String>) {
    let mut files = Vec::new();
    let mut dirs = vec![data.join("modules")];
    if let Ok(entries) = std::fs::read_dir(data.join("compiled")) {
        // A real folder, never a link out of the data folder.
        dirs.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(UNIX_EPOCH);
            files.push((modified, meta.len(), e.path()));
        }
    }
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= cap {
            break;
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        if stem.is_some_and(|s| keep.contains(&s)) {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::debug!(path = %path.display(), "removed from the cache (disk cap)");
            total = total.saturating_sub(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn trimming_removes_the_oldest_files_but_never_a_held_module() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("modules");
        let compiled = dir.path().join("compiled/0123456789abcdef");
        std::fs::create_dir_all(&modules).unwrap();
        std::fs::create_dir_all(&compiled).unwrap();
        let files = [
            modules.join("aa.wasm"),
            modules.join("bb.wasm"),
            compiled.join("cc.cwasm"),
            compiled.join("dd.cwasm"),
        ];
        let base = SystemTime::now() - Duration::from_secs(1000);
        for (i, f) in files.iter().enumerate() {
            std::fs::write(f, [0u8; 100]).unwrap();
            let file = std::fs::File::options().write(true).open(f).unwrap();
            file.set_modified(base + Duration::from_secs(i as u64 * 10))
                .unwrap();
        }
        // 400 bytes, cap 250: the two oldest go, except the held "bb".
        let keep: HashSet<String> = ["bb".to_string()].into();
        trim_caches(dir.path(), 250, &keep);
        let left: Vec<bool> = files.iter().map(|f| f.exists()).collect();
        assert_eq!(left, [false, true, false, true]);
        // Under the cap: nothing more goes.
        trim_caches(dir.path(), 250, &HashSet::new());
        assert!(files[3].exists());
    }
}
