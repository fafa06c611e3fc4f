//! The worker's module cache and the check that gates it: a task's module
//! is fetched by hash into `DATA/modules/<hash>.wasm` only after the
//! task's signature verifies under the pinned project key ([`refusal`]),
//! is re-hashed whenever it is read from disk (and then kept in memory,
//! [`VerifiedModules`]), and the caches (`DATA/modules`, the
//! sandbox's `DATA/compiled`) are trimmed to the volunteer's disk cap.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use anyhow::Result;
use peergrid_proto::limits::MAX_MODULE;
use peergrid_proto::wire::{Outcome, Task, TaskReport};
use peergrid_proto::{Hash, signing};

use super::blobs::Mirrors;
use super::printable;
use crate::net::Session;

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

/// What [`VerifiedModules`] holds at most.
const VERIFIED_MODULES_BYTES: usize = 64 * 1024 * 1024;

/// Modules this process has read or fetched and hashed, kept in memory,
/// most recently used first, up to [`VERIFIED_MODULES_BYTES`] (always the
/// newest one): a task of a module already seen reads no file and hashes
/// nothing. Re-reading and hashing a 2 MiB module twice per task took about
/// a third of a worker's CPU on tiny tasks (docs/benchmarks.md). The copy
/// in memory was checked once and nothing else writes it; a file on disk
/// is checked each time it is read.
pub(super) struct VerifiedModules {
    held: Mutex<VecDeque<(Hash, Arc<[u8]>)>>,
    max_bytes: usize,
}

impl Default for VerifiedModules {
    fn default() -> VerifiedModules {
        VerifiedModules {
            held: Mutex::default(),
            max_bytes: VERIFIED_MODULES_BYTES,
        }
    }
}

impl VerifiedModules {
    fn get(&self, hash: &Hash) -> Option<Arc<[u8]>> {
        let mut held = peergrid_os::lock(&self.held);
        let at = held.iter().position(|(h, _)| h == hash)?;
        let entry = held.remove(at)?;
        let bytes = entry.1.clone();
        held.push_front(entry);
        Some(bytes)
    }

    fn keep(&self, hash: Hash, bytes: Arc<[u8]>) {
        let mut held = peergrid_os::lock(&self.held);
        held.retain(|(h, _)| *h != hash);
        held.push_front((hash, bytes));
        let mut total: usize = held.iter().map(|(_, b)| b.len()).sum();
        while held.len() > 1 && total > self.max_bytes {
            if let Some((_, b)) = held.pop_back() {
                total -= b.len();
            }
        }
    }
}

/// A module's bytes, from memory or from `DATA/modules` if present and
/// intact.
pub(super) fn read_module(
    data: &Path,
    modules: &VerifiedModules,
    hash: &Hash,
) -> Option<Arc<[u8]>> {
    if let Some(bytes) = modules.get(hash) {
        return Some(bytes);
    }
    let bytes = std::fs::read(module_path(data, hash)).ok()?;
    if Hash::of(&bytes) != *hash {
        return None;
    }
    let bytes: Arc<[u8]> = bytes.into();
    modules.keep(*hash, bytes.clone());
    Some(bytes)
}

/// Makes sure the module is in memory or in `DATA/modules`, fetching it
/// (from a mirror, else over `session`) if needed.
pub(super) async fn fetch_module(
    data: &Path,
    modules: &VerifiedModules,
    mirrors: &Mirrors,
    session: &Session,
    hash: &Hash,
) -> Result<()> {
    if modules.get(hash).is_some() {
        return Ok(());
    }
    let path = module_path(data, hash);
    if let Ok(b) = tokio::fs::read(&path).await
        && Hash::of(&b) == *hash
    {
        modules.keep(*hash, b.into());
        return Ok(());
    }
    let bytes = mirrors.fetch(session, hash, None, MAX_MODULE).await?;
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, &bytes).await?;
    tokio::fs::rename(&tmp, &path).await?;
    modules.keep(*hash, bytes.into());
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

#[cfg(test)]
mod memory_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The least recently used module goes first when the bytes held pass
    /// the limit; the newest stays even alone over it.
    #[test]
    fn verified_modules_keep_the_most_recently_used_within_their_limit() {
        let modules = VerifiedModules {
            max_bytes: 10,
            ..VerifiedModules::default()
        };
        let module = |b: u8, len: usize| (Hash::of(&[b]), Arc::<[u8]>::from(vec![b; len]));
        let (a, b, c, big) = (module(1, 4), module(2, 4), module(3, 4), module(4, 50));
        modules.keep(a.0, a.1.clone());
        modules.keep(b.0, b.1.clone());
        assert_eq!(modules.get(&a.0).unwrap(), a.1, "a is used again");
        modules.keep(c.0, c.1.clone());
        assert!(modules.get(&b.0).is_none(), "b was the least recently used");
        assert!(modules.get(&a.0).is_some() && modules.get(&c.0).is_some());
        modules.keep(big.0, big.1.clone());
        assert_eq!(modules.get(&big.0).unwrap().len(), 50);
        assert!(modules.get(&a.0).is_none() && modules.get(&c.0).is_none());
    }

    /// A module file that does not hash to its name is not read, and not
    /// kept; one that does is kept, and is then served from memory even
    /// once the file is gone.
    #[test]
    fn only_intact_module_files_are_read_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("modules")).unwrap();
        let modules = VerifiedModules::default();
        let good = b"(module)".to_vec();
        let hash = Hash::of(&good);
        let path = module_path(dir.path(), &hash);
        std::fs::write(&path, b"tampered").unwrap();
        assert!(read_module(dir.path(), &modules, &hash).is_none());
        assert!(modules.get(&hash).is_none());
        std::fs::write(&path, &good).unwrap();
        assert_eq!(
            &*read_module(dir.path(), &modules, &hash).unwrap(),
            &good[..]
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            &*read_module(dir.path(), &modules, &hash).unwrap(),
            &good[..]
        );
    }
}
