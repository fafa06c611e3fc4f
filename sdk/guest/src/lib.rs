//! peergrid's guest SDK: what a job compiled to `wasm32-wasip1` can ask of
//! the volunteer's worker beyond WASI preview 1.
//!
//! - [`checkpoint`] hands the worker the job's state. Call it often (every
//!   few seconds of work is fine): the worker keeps at most one checkpoint
//!   per checkpoint interval (the volunteer's preference, 60 s by default)
//!   and ignores the other calls cheaply.
//! - [`restore`] returns the last checkpoint the worker kept for this task,
//!   when the task was interrupted (the machine rebooted, the worker was
//!   killed) and is now run again; `None` on a fresh start.
//! - [`progress`] tells the worker how far the task is (0.0 to 1.0), for the
//!   volunteer's status display.
//! - [`validator::serve`] turns a `compare(a, b) -> bool` into a custom
//!   validator module, which the coordinator runs to compare replicas.
//!
//! For a resumed task to give the output an uninterrupted run gives, the
//! state must hold everything the rest of the run depends on, and the job
//! must not branch on whether a checkpoint was kept (it cannot see it).
//!
//! Built for any other target (a native reference build of the same job),
//! the functions do nothing and [`restore`] returns `None`, so one source
//! serves both builds.
//!
//! The imports live in the wasm module `peergrid`; the worker links them
//! and the coordinator's module check accepts them. Both read their names
//! and types from `peergrid_proto::guest`, which this crate must match (it
//! does not depend on `peergrid-proto` so that jobs stay small).

pub mod validator;

/// Offers the job's state to the worker as its checkpoint. The worker keeps
/// it if the checkpoint interval has passed since the last one it kept.
pub fn checkpoint(state: &[u8]) {
    host::checkpoint(state);
}

/// The state of the task's last kept checkpoint, if the task is resuming.
pub fn restore() -> Option<Vec<u8>> {
    host::restore()
}

/// Reports how far the task is, from 0.0 (started) to 1.0 (done). Values
/// outside that range are clamped by the worker.
pub fn progress(fraction: f64) {
    host::progress(fraction);
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod host {
    //! The `peergrid` host imports. Calling a wasm import from Rust is an
    //! `extern` call, which Rust counts as `unsafe`; every call passes a
    //! pointer and length of one live Rust slice, and the worker checks both
    //! against the module's memory before touching it.

    #[link(wasm_import_module = "peergrid")]
    unsafe extern "C" {
        #[link_name = "checkpoint"]
        fn host_checkpoint(ptr: *const u8, len: usize);
        #[link_name = "restore_len"]
        fn host_restore_len() -> i64;
        #[link_name = "restore"]
        fn host_restore(ptr: *mut u8, len: usize) -> usize;
        #[link_name = "progress"]
        fn host_progress(fraction: f64);
    }

    pub fn checkpoint(state: &[u8]) {
        // SAFETY: `state` is a live slice; the host only reads `len` bytes
        // from `ptr`, within this module's memory.
        unsafe { host_checkpoint(state.as_ptr(), state.len()) }
    }

    pub fn restore() -> Option<Vec<u8>> {
        // SAFETY: takes no pointer.
        let len = unsafe { host_restore_len() };
        let len = usize::try_from(len).ok()?;
        let mut state = vec![0u8; len];
        // SAFETY: `state` is a live, writable buffer of `len` bytes; the host
        // writes at most `len` bytes into it and returns how many it wrote.
        let written = unsafe { host_restore(state.as_mut_ptr(), state.len()) };
        state.truncate(written);
        Some(state)
    }

    pub fn progress(fraction: f64) {
        // SAFETY: takes no pointer.
        unsafe { host_progress(fraction) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    //! Native builds (reference runs, tests): no worker to talk to.

    pub fn checkpoint(_state: &[u8]) {}

    pub fn restore() -> Option<Vec<u8>> {
        None
    }

    pub fn progress(_fraction: f64) {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn native_builds_never_resume() {
        super::checkpoint(b"state");
        super::progress(0.5);
        assert_eq!(super::restore(), None);
    }
}
