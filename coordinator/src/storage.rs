//! The free-space reserve: below it, the coordinator refuses what would
//! grow its database (new hosts, uploads, reports) with a clear error and
//! keeps serving everything else.
//!
//! Without it, a full disk made the store's writer fail and the
//! coordinator fail-stop (right: nothing half-written), and every restart
//! died again at its next commit. With it, growth stops while there is
//! still room for the small writes that keep the grid turning (expiries,
//! hosts' last-seen times), and resumes by itself once space is freed.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Growth refused: the disk is short of the reserve.
#[derive(Debug, thiserror::Error)]
#[error(
    "the coordinator is short of disk space ({free_mib} MiB free, below its reserve of {reserve_mib} MiB): \
     it takes no new hosts, uploads or results until its operator frees space; try again later"
)]
pub struct StorageLow {
    pub free_mib: u64,
    pub reserve_mib: u64,
}

/// Watches the free space of the filesystem that holds the database.
#[derive(Debug, Default)]
pub struct Storage {
    /// The folder watched and the reserve in bytes; unset, nothing is
    /// refused (tests that build a grid in memory).
    watched: OnceLock<(PathBuf, u64)>,
    low: AtomicBool,
    free: AtomicU64,
}

impl Storage {
    /// Starts watching `dir` with a reserve of `reserve_bytes` and checks
    /// at once.
    pub fn watch(&self, dir: PathBuf, reserve_bytes: u64) {
        let _ = self.watched.set((dir, reserve_bytes));
        self.check();
    }

    /// Reads the free space again (the grid's ticker calls it twice a
    /// second); logs when the coordinator crosses the reserve.
    pub fn check(&self) {
        let Some((dir, reserve)) = self.watched.get() else {
            return;
        };
        let free = match rustix::fs::statvfs(dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
            Err(e) => {
                tracing::warn!("reading the free space of {}: {e}", dir.display());
                return;
            }
        };
        self.free.store(free, Ordering::Relaxed);
        let low = free < *reserve;
        let was = self.low.swap(low, Ordering::Relaxed);
        if low && !was {
            tracing::error!(
                free_mib = free >> 20,
                reserve_mib = reserve >> 20,
                "disk space below the reserve: refusing new hosts, uploads and results until space is freed"
            );
        } else if was && !low {
            tracing::warn!(
                free_mib = free >> 20,
                "disk space above the reserve again: growth resumes"
            );
        }
    }

    /// `Err` while the free space is below the reserve.
    pub fn may_grow(&self) -> Result<(), StorageLow> {
        if !self.low.load(Ordering::Relaxed) {
            return Ok(());
        }
        let reserve = self.watched.get().map_or(0, |(_, r)| *r);
        Err(StorageLow {
            free_mib: self.free.load(Ordering::Relaxed) >> 20,
            reserve_mib: reserve >> 20,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_above_the_free_space_refuses_growth_and_one_below_allows_it() {
        let dir = tempfile::tempdir().unwrap();
        let unwatched = Storage::default();
        assert!(unwatched.may_grow().is_ok());
        let huge = Storage::default();
        huge.watch(dir.path().to_path_buf(), u64::MAX);
        let e = huge.may_grow().unwrap_err();
        assert!(e.to_string().contains("short of disk space"), "{e}");
        let none = Storage::default();
        none.watch(dir.path().to_path_buf(), 0);
        assert!(none.may_grow().is_ok());
    }
}
