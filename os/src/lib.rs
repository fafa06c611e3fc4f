//! Small host helpers that the coordinator, the worker, the sandbox and the
//! researcher's CLI share, so each exists once: private files, the wall
//! clock, poison-tolerant locks, and a task runner process's priority and
//! limits (`process`) and confinement (`confine`).
//!
//! Only std: no async runtime, no database. The decision core
//! (`peergrid-core`) does not use this crate: it reads no clock and is
//! handed times as arguments.

pub mod confine;
pub mod process;

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Creates `path` readable and writable only by its owner (mode 0600 on
/// Unix, set at creation so the bytes are never readable by others), writes
/// `bytes` and syncs them to disk. Refuses to replace an existing file
/// (`ErrorKind::AlreadyExists`): a key is never overwritten.
///
/// The file appears before its bytes are written; when another process may
/// read it at once, write under a temporary name and link it into place
/// (as the worker does with its keys).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The wall clock in milliseconds since the Unix epoch (0 if the clock is
/// set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Locks `mutex` even if a thread panicked while holding it. Every mutex in
/// peergrid guards data that stays usable after such a panic (a map, a
/// connection, counters), and one panicking task must not take every other
/// user of the lock down with it.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_holds_its_bytes_and_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_private(&path, b"secret").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        let again = write_private(&path, b"other").unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
    }

    #[cfg(unix)]
    #[test]
    fn a_private_file_is_readable_only_by_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_private(&path, b"secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn now_is_after_2020() {
        // 2020-01-01T00:00:00Z.
        assert!(now_ms() > 1_577_836_800_000);
    }

    #[test]
    fn a_poisoned_mutex_is_still_usable() {
        let mutex = Mutex::new(vec![1]);
        let panicked = std::thread::scope(|s| {
            s.spawn(|| {
                let mut v = mutex.lock().unwrap();
                v.push(2);
                panic!("poisoning the lock on purpose");
            })
            .join()
        });
        assert!(panicked.is_err());
        assert!(mutex.is_poisoned());
        lock(&mutex).push(3);
        assert_eq!(*lock(&mutex), [1, 2, 3]);
    }
}
