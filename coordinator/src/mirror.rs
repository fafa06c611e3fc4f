//! Blob mirrors: plain web servers (nginx, a CDN) that serve the project's
//! modules and inputs as static files, so the bulk of what workers fetch
//! does not pass through the scheduler.
//!
//! Blobs are content addressed, so a mirror needs no trust: a worker
//! checks every byte it gets against the BLAKE3 hash the coordinator sent
//! and falls back to the coordinator (`GetBlob`) when a mirror is dead,
//! lacks a file or serves the wrong bytes. `serve --publish-blobs DIR`
//! writes every module and input into `DIR/ab/cdef…`
//! ([`peergrid_proto::wire::mirror_path`]) for such a server to serve:
//! each blob as it is uploaded, and at start whatever a job references that
//! the folder lacks. `serve --mirror URL` names the servers in every
//! worker's `Welcome`, and sends inputs of at least
//! `--mirror-inputs-from` bytes by reference.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use peergrid_proto::Hash;
use peergrid_proto::limits::MAX_MIRRORS;
use peergrid_proto::wire::{mirror_path, mirror_problem};

use crate::store::Store;

/// What `serve` was told about mirrors.
#[derive(Debug, Default)]
pub struct Mirrors {
    /// Base addresses workers fetch from, in the order they try them.
    pub urls: Vec<String>,
    /// Where this coordinator publishes blobs, if it does.
    pub publisher: Option<Arc<Publisher>>,
    /// Inputs of at least this many bytes go by reference when `urls` is
    /// not empty; smaller ones ride inside the task, where they cost less
    /// than a request.
    pub inputs_from: usize,
}

impl Mirrors {
    /// Checks the addresses: at most [`MAX_MIRRORS`], each a plain
    /// `http(s)://` base address ([`mirror_problem`]); a trailing `/` is
    /// dropped.
    pub fn new(
        urls: Vec<String>,
        publisher: Option<Arc<Publisher>>,
        inputs_from: usize,
    ) -> Result<Mirrors> {
        anyhow::ensure!(
            urls.len() <= MAX_MIRRORS,
            "at most {MAX_MIRRORS} mirrors (--mirror), not {}",
            urls.len()
        );
        let mut checked = Vec::with_capacity(urls.len());
        for url in urls {
            if let Some(why) = mirror_problem(&url) {
                anyhow::bail!("--mirror: {why}");
            }
            checked.push(url.trim_end_matches('/').to_string());
        }
        Ok(Mirrors {
            urls: checked,
            publisher,
            inputs_from,
        })
    }

    /// The input size from which tasks carry a reference, if any do.
    pub fn by_reference_from(&self) -> Option<usize> {
        (!self.urls.is_empty()).then_some(self.inputs_from)
    }
}

/// The folder blobs are published into.
#[derive(Debug)]
pub struct Publisher {
    dir: PathBuf,
}

impl Publisher {
    /// Makes `dir` if needed.
    pub fn open(dir: &Path) -> Result<Publisher> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Publisher {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self, hash: &Hash) -> PathBuf {
        self.dir.join(mirror_path(hash))
    }

    /// The length of the blob's file, if it is there (its bytes are not
    /// read: a worker checks what it fetches).
    pub fn published_len(&self, hash: &Hash) -> Option<u64> {
        let meta = std::fs::metadata(self.path(hash)).ok()?;
        meta.is_file().then_some(meta.len())
    }

    /// Writes the blob's file unless it is there with the blob's length:
    /// under a hidden name of its own first, synced, then renamed, so a
    /// web server never serves half a file.
    pub fn publish(&self, hash: &Hash, bytes: &[u8]) -> Result<()> {
        static WRITES: AtomicU64 = AtomicU64::new(0);
        if self.published_len(hash) == Some(bytes.len() as u64) {
            return Ok(());
        }
        let path = self.path(hash);
        let folder = path.parent().context("a blob's path has a folder")?;
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let name = path.file_name().context("a blob's path has a name")?;
        let tmp = folder.join(format!(
            ".{}.{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut file| {
                file.write_all(bytes)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
        Ok(())
    }

    /// Publishes `hashes` the folder lacks (or holds at another length),
    /// reading each from `store`; returns how many it wrote. A blob that
    /// cannot be written is logged and skipped: workers fetch it from the
    /// coordinator.
    pub fn publish_missing(&self, store: &dyn Store, hashes: &[Hash]) -> Result<u64> {
        let mut written = 0;
        for hash in hashes {
            let Some(len) = store.blob_len(hash)? else {
                continue;
            };
            if self.published_len(hash) == Some(len) {
                continue;
            }
            // A blob the store lost is left to the coordinator's own
            // fetch path to report.
            let Some(bytes) = store.get_blob(hash)? else {
                continue;
            };
            match self.publish(hash, &bytes) {
                Ok(()) => written += 1,
                Err(e) => tracing::error!(%hash, "publishing a blob failed: {e:#}"),
            }
        }
        Ok(written)
    }

    /// Publishes every blob a job references that the folder lacks (a
    /// folder new to this project, or one that lost files or holds a
    /// cut-short one); returns how many it wrote.
    pub fn catch_up(&self, store: &dyn Store) -> Result<u64> {
        const PAGE: usize = 4096;
        let mut after = None;
        let mut written = 0;
        loop {
            let page = store.job_blobs_after(after.as_ref(), PAGE)?;
            written += self.publish_missing(store, &page)?;
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(*last),
                _ => return Ok(written),
            }
        }
    }

    /// Publishes a newly submitted job's module, validator module and
    /// inputs that the folder lacks (blobs stored before publishing was
    /// on are uploaded no more), on a thread of its own.
    pub fn publish_job_in_background(
        self: &Arc<Publisher>,
        store: Arc<dyn Store>,
        hashes: Vec<Hash>,
    ) {
        let publisher = self.clone();
        std::thread::spawn(move || {
            if let Err(e) = publisher.publish_missing(&*store, &hashes) {
                tracing::error!("publishing a job's blobs failed: {e:#}");
            }
        });
    }

    /// Removes a collected blob's file, if it is there.
    pub fn unpublish(&self, hash: &Hash) {
        let path = self.path(hash);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %path.display(), "removing a collected blob failed: {e}")
            }
        }
    }

    /// Removes the files of blobs the store no longer holds (collected
    /// while the coordinator stopped before removing their files, or a
    /// database restored from an older backup), and temp files an
    /// interrupted write left over an hour ago; returns how many files
    /// it removed. Files that are not blobs are left alone.
    pub fn sweep(&self, store: &dyn Store) -> Result<u64> {
        const BATCH: usize = 1024;
        let mut removed = 0;
        let mut found: Vec<Hash> = Vec::new();
        let check = |found: &mut Vec<Hash>| -> Result<u64> {
            let mut n = 0;
            for hash in store.missing_blobs(found)? {
                self.unpublish(&hash);
                n += 1;
            }
            found.clear();
            Ok(n)
        };
        for folder in read_dir_or_empty(&self.dir)? {
            let prefix = folder.file_name().to_string_lossy().into_owned();
            if prefix.len() != 2 || !folder.file_type()?.is_dir() {
                continue;
            }
            for file in read_dir_or_empty(&folder.path())? {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let stale = file
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age.as_secs() > 3600);
                    if stale && std::fs::remove_file(file.path()).is_ok() {
                        removed += 1;
                    }
                    continue;
                }
                if let Ok(hash) = format!("{prefix}{name}").parse::<Hash>() {
                    found.push(hash);
                    if found.len() == BATCH {
                        removed += check(&mut found)?;
                    }
                }
            }
        }
        removed += check(&mut found)?;
        Ok(removed)
    }

    /// [`Publisher::catch_up`] and then [`Publisher::sweep`] on a thread of
    /// its own, logging the outcome.
    pub fn catch_up_in_background(self: &Arc<Publisher>, store: Arc<dyn Store>) {
        let publisher = self.clone();
        std::thread::spawn(move || {
            match publisher
                .catch_up(&*store)
                .and_then(|n| Ok((n, publisher.sweep(&*store)?)))
            {
                Ok((written, removed)) => tracing::info!(
                    written,
                    removed,
                    dir = %publisher.dir.display(),
                    "blob folder up to date"
                ),
                Err(e) => tracing::error!(
                    dir = %publisher.dir.display(),
                    "publishing blobs failed: {e:#}"
                ),
            }
        });
    }
}

/// The entries of `dir`, none when it is gone.
fn read_dir_or_empty(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("reading {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_addresses_are_checked_and_lose_their_trailing_slash() {
        let m = Mirrors::new(vec!["http://127.0.0.1:9/blobs/".into()], None, 1024).unwrap();
        assert_eq!(m.urls, vec!["http://127.0.0.1:9/blobs"]);
        assert_eq!(m.by_reference_from(), Some(1024));
        assert_eq!(
            Mirrors::new(vec![], None, 1024)
                .unwrap()
                .by_reference_from(),
            None
        );
        let e = Mirrors::new(vec!["ftp://x".into()], None, 0).unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        let many = vec!["http://a".to_string(); MAX_MIRRORS + 1];
        assert!(Mirrors::new(many, None, 0).is_err());
    }

    #[test]
    fn a_published_blob_sits_at_its_content_address_and_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::open(&dir.path().join("blobs")).unwrap();
        let bytes = b"an input".to_vec();
        let hash = Hash::of(&bytes);
        assert_eq!(p.published_len(&hash), None);
        p.publish(&hash, &bytes).unwrap();
        let hex = hash.to_string();
        let path = dir.path().join("blobs").join(&hex[..2]).join(&hex[2..]);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Already there at its length: left alone (a second publish does
        // not rewrite); at another length (cut short): written again.
        std::fs::write(&path, b"changed!").unwrap();
        p.publish(&hash, &bytes).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"changed!");
        std::fs::write(&path, b"cut").unwrap();
        p.publish(&hash, &bytes).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // No hidden partial file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    /// A folder given later is filled at start with every module and input
    /// a job names, page after page, and nothing else (outputs, blobs no
    /// job names); a second pass writes only what went missing.
    #[test]
    fn catching_up_publishes_what_jobs_name_and_only_that() {
        use crate::store::SqliteStore;
        use peergrid_proto::spec::{JobSettings, JobSubmission, UnitSpec, Validator};

        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
        let blob = |bytes: &[u8]| {
            let h = Hash::of(bytes);
            store.put_blob(&h, bytes).unwrap();
            h
        };
        let (module, validator, loose) = (blob(b"module"), blob(b"validator"), blob(b"loose"));
        let inputs: Vec<(Hash, Vec<u8>)> = (0..5000u32)
            .map(|i| {
                let b = i.to_le_bytes().to_vec();
                (Hash::of(&b), b)
            })
            .collect();
        store.put_blobs(&inputs).unwrap();
        let mut units: Vec<UnitSpec> = inputs
            .iter()
            .enumerate()
            .map(|(i, (h, _))| UnitSpec {
                name: format!("u{i}"),
                input: *h,
            })
            .collect();
        // Two units of one input: one file.
        units.push(UnitSpec {
            name: "again".into(),
            input: inputs[0].0,
        });
        let sub = JobSubmission {
            plots: Vec::new(),
            name: "j".into(),
            module,
            args: vec![],
            settings: JobSettings::default(),
            signature: crate::store::sqlite::tests::test_signature(),
            validator: Validator::Custom { module: validator },
            terms: Default::default(),
            units,
        };
        store.create_job(&sub, 1).unwrap();

        let p = Publisher::open(&dir.path().join("blobs")).unwrap();
        assert_eq!(p.catch_up(&store).unwrap(), 5002);
        assert!(p.published_len(&module).is_some() && p.published_len(&validator).is_some());
        assert_eq!(p.published_len(&loose), None);
        for (h, b) in &inputs {
            assert_eq!(&std::fs::read(p.path(h)).unwrap(), b);
        }
        assert_eq!(p.catch_up(&store).unwrap(), 0);
        std::fs::remove_file(p.path(&inputs[4500].0)).unwrap();
        std::fs::write(p.path(&inputs[10].0), b"").unwrap();
        assert_eq!(p.catch_up(&store).unwrap(), 2);
        assert_eq!(std::fs::read(p.path(&inputs[10].0)).unwrap(), inputs[10].1);
    }

    /// The start-up sweep removes the files of blobs the store lacks and
    /// old temp files, and nothing else.
    #[test]
    fn the_sweep_removes_files_of_blobs_the_store_lacks_and_stale_temp_files() {
        use crate::store::SqliteStore;

        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
        let p = Publisher::open(&dir.path().join("blobs")).unwrap();
        let stored: Vec<Hash> = (0..3000u32)
            .map(|i| {
                let b = i.to_le_bytes();
                let h = Hash::of(&b);
                store.put_blob(&h, &b).unwrap();
                p.publish(&h, &b).unwrap();
                h
            })
            .collect();
        let gone: Vec<Hash> = (0..1500u32)
            .map(|i| {
                let b = format!("collected {i}").into_bytes();
                let h = Hash::of(&b);
                p.publish(&h, &b).unwrap();
                h
            })
            .collect();
        let folder = p.path(&stored[0]).parent().unwrap().to_path_buf();
        let stale = folder.join(".abc.1.2.tmp");
        let fresh = folder.join(".abc.1.3.tmp");
        let other = dir.path().join("blobs").join("README");
        for f in [&stale, &fresh, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
            .unwrap();
        assert_eq!(p.sweep(&store).unwrap(), 1501);
        assert!(stored.iter().all(|h| p.published_len(h).is_some()));
        assert!(gone.iter().all(|h| p.published_len(h).is_none()));
        assert!(!stale.exists() && fresh.exists() && other.exists());
        assert_eq!(p.sweep(&store).unwrap(), 0);
        // A folder not made yet is empty, not an error.
        let empty = Publisher::open(&dir.path().join("new")).unwrap();
        std::fs::remove_dir(dir.path().join("new")).unwrap();
        assert_eq!(empty.sweep(&store).unwrap(), 0);
    }
}
