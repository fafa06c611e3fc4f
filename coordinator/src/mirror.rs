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

    /// Whether the blob's file is there (its bytes are not checked: a
    /// worker checks what it fetches).
    pub fn has(&self, hash: &Hash) -> bool {
        self.path(hash).is_file()
    }

    /// Writes the blob's file unless it is there: under a hidden name
    /// first, then renamed, so a web server never serves half a file.
    pub fn publish(&self, hash: &Hash, bytes: &[u8]) -> Result<()> {
        let path = self.path(hash);
        if path.is_file() {
            return Ok(());
        }
        let folder = path.parent().context("a blob's path has a folder")?;
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let name = path.file_name().context("a blob's path has a name")?;
        let tmp = folder.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(file);
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
    }

    /// Publishes every blob a job references that the folder lacks (a
    /// folder new to this project, or one that lost files); returns how
    /// many it wrote.
    pub fn catch_up(&self, store: &dyn Store) -> Result<u64> {
        const PAGE: usize = 4096;
        let mut after = None;
        let mut written = 0;
        loop {
            let page = store.job_blobs_after(after.as_ref(), PAGE)?;
            for hash in &page {
                if self.has(hash) {
                    continue;
                }
                // A blob the store lost is left to the coordinator's own
                // fetch path to report.
                if let Some(bytes) = store.get_blob(hash)? {
                    self.publish(hash, &bytes)?;
                    written += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(*last),
                _ => return Ok(written),
            }
        }
    }

    /// [`Publisher::catch_up`] on a thread of its own, logging the outcome.
    pub fn catch_up_in_background(self: &Arc<Publisher>, store: Arc<dyn Store>) {
        let publisher = self.clone();
        std::thread::spawn(move || match publisher.catch_up(&*store) {
            Ok(n) => tracing::info!(
                written = n,
                dir = %publisher.dir.display(),
                "blob folder up to date"
            ),
            Err(e) => tracing::error!(
                dir = %publisher.dir.display(),
                "publishing blobs failed: {e:#}"
            ),
        });
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
        assert!(!p.has(&hash));
        p.publish(&hash, &bytes).unwrap();
        let hex = hash.to_string();
        let path = dir.path().join("blobs").join(&hex[..2]).join(&hex[2..]);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Already there: left alone (a second publish does not rewrite).
        std::fs::write(&path, b"changed").unwrap();
        p.publish(&hash, &bytes).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"changed");
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
        assert!(p.has(&module) && p.has(&validator) && !p.has(&loose));
        for (h, b) in &inputs {
            assert_eq!(&std::fs::read(p.path(h)).unwrap(), b);
        }
        assert_eq!(p.catch_up(&store).unwrap(), 0);
        std::fs::remove_file(p.path(&inputs[4500].0)).unwrap();
        assert_eq!(p.catch_up(&store).unwrap(), 1);
    }
}
