//! Misbehaviour on purpose, to prove the runner's confinement
//! (`PEERGRID_RUNNER_FAULT`; compiled only with the `simulate-fault`
//! feature, which `scripts/test` turns on and the binary volunteers
//! install does not have). A task whose input begins with `fault` (or a
//! custom validator's, whose first output does) then does what the
//! variable says instead of running:
//!
//! - `socket`: binds a UDP socket;
//! - `exec`: replaces the runner with `/bin/true`;
//! - `fork`: starts a child process;
//! - `thread`: starts and joins a thread (allowed);
//! - `open:PATH`: reads PATH;
//! - `signal:PID`: sends SIGTERM to PID;
//! - `tiocsti`: types a character into the terminal on stderr;
//! - `tioclinux`: a Linux console request (TIOCLINUX, which can paste a
//!   selection into a console) on stderr;
//! - `stderr`: writes a terminal escape, then a megabyte, to its stderr;
//! - `panic`: a bug in the runner's own code (it panics);
//! - `abort`: a crash in the runner's own code (it aborts, as on a
//!   wasmtime bug or a failed allocation);
//! - `alloc:MIB`: allocates and touches MIB mebibytes outside the wasm
//!   sandbox, as a leak in the host would (an out-of-memory kill, where a
//!   memory limit holds the runner).
//!
//! Where the runner survives, the task fails with what happened.

use peergrid_proto::runner::{FromRunner, RunnerOutcome, RunnerReport};

/// Whether a task with this input provokes the fault: it begins with
/// `fault`, or it is a custom validator's (`len(a) as u32 LE, a, …`) and
/// `a` does.
pub(crate) fn triggered_by(input: &[u8]) -> bool {
    input.starts_with(b"fault") || input.get(4..).is_some_and(|a| a.starts_with(b"fault"))
}

/// Does what `fault` says; returns what happened if the runner is still
/// alive.
pub(crate) fn provoke(fault: &str) -> String {
    match fault.split_once(':') {
        Some(("open", path)) => match std::fs::read(path) {
            Ok(bytes) => format!("opened {path}: {} bytes", bytes.len()),
            Err(e) => format!("opening {path}: {e}"),
        },
        Some(("signal", pid)) => {
            let pid: i32 = pid.parse().unwrap_or(0);
            #[allow(unsafe_code)]
            // SAFETY: kill takes integers only.
            let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
            format!("signal {pid}: {sent}, {}", std::io::Error::last_os_error())
        }
        Some(("alloc", mib)) => {
            let mib: usize = mib.parse().unwrap_or(0);
            let mut held = Vec::new();
            for _ in 0..mib {
                // Touched, so the pages are really used.
                held.push(vec![1u8; 1 << 20]);
            }
            format!("alloc: held {} MiB", held.len())
        }
        _ => match fault {
            "socket" => format!("socket: {:?}", std::net::UdpSocket::bind("127.0.0.1:0")),
            "tiocsti" => {
                let byte = b'x';
                #[allow(unsafe_code)]
                // SAFETY: TIOCSTI reads one byte from a pointer that
                // outlives the call.
                let typed = unsafe { libc::ioctl(2, libc::TIOCSTI, &byte as *const u8) };
                format!("tiocsti: {typed}, {}", std::io::Error::last_os_error())
            }
            "stderr" => {
                use std::io::Write;
                let mut err = std::io::stderr().lock();
                let escape = err.write_all(b"\x1b[2J\x1b]0;owned\x07escaped the sandbox\n");
                let chunk = [b'x'; 4096];
                let mut wrote = 0usize;
                let mut last = Ok(());
                for _ in 0..256 {
                    last = err.write_all(&chunk);
                    if last.is_err() {
                        break;
                    }
                    wrote += chunk.len();
                }
                format!("stderr: escape {escape:?}, then {wrote} bytes, then {last:?}")
            }
            "tioclinux" => {
                // TIOCL_GETSHIFTSTATE, the most harmless of its requests.
                let mut subcode = 6u8;
                #[allow(unsafe_code)]
                // SAFETY: TIOCLINUX reads and writes one byte through a
                // pointer that outlives the call.
                let done = unsafe { libc::ioctl(2, libc::TIOCLINUX, &mut subcode as *mut u8) };
                format!("tioclinux: {done}, {}", std::io::Error::last_os_error())
            }
            "panic" => panic!("simulated fault: a bug in the runner"),
            "abort" => std::process::abort(),
            "thread" => match std::thread::spawn(|| 7).join() {
                Ok(7) => "thread: ok".to_string(),
                other => format!("thread: {other:?}"),
            },
            "exec" => {
                let program = c"/bin/true";
                let argv = [program.as_ptr(), std::ptr::null()];
                #[allow(unsafe_code)]
                // SAFETY: a NUL-terminated path and a null-terminated argv
                // that outlive the call (which returns only on failure).
                let failed = unsafe { libc::execv(program.as_ptr(), argv.as_ptr()) };
                format!("exec: {failed}, {}", std::io::Error::last_os_error())
            }
            "fork" => {
                #[allow(unsafe_code)]
                // SAFETY: the child exits at once, touching nothing.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    #[allow(unsafe_code)]
                    // SAFETY: _exit ends the child without running anything.
                    unsafe {
                        libc::_exit(0)
                    };
                }
                format!("fork: {pid}")
            }
            other => format!("unknown fault {other:?}"),
        },
    }
}

/// A task's report saying what the fault did.
pub(crate) fn report(said: String) -> FromRunner {
    FromRunner::Done(RunnerReport {
        outcome: RunnerOutcome::Error(format!("simulated fault: {said}")),
        fuel_used: 0,
        stderr: Vec::new(),
        elapsed_us: 0,
        resumed: false,
        engine: String::new(),
    })
}
