//! The wasmtime sandbox that runs one task: a WASI preview 1 command module,
//! the work unit on stdin, the result on stdout.
//!
//! Everything a volunteer's machine exposes to a module is decided here, so
//! this crate is where two promises are kept:
//!
//! - **Every `Store` has a budget** (memory, fuel, an epoch deadline for wall
//!   time, capped stdout and stderr), whatever the module does. Fuel gives a
//!   deterministic instruction cap and deterministic credit; the epoch gives
//!   the wall-clock deadline cheaply (see `docs/sandbox-performance.md`).
//! - **Runs are deterministic**: one engine configuration per NaN mode on
//!   every worker, no threads, deterministic relaxed SIMD, virtual clocks
//!   that advance a fixed step per read, randomness seeded from the work
//!   unit, no environment, filesystem or network. Fuel is counted by the
//!   engine per wasm instruction, plus fixed charges for work the host does
//!   for the module (see below), so every replica of a task reports the same
//!   `fuel_used`, in either NaN mode.
//!
//! # Host charges
//!
//! Instructions alone do not bound CPU time, so work the host does for a
//! module (WASI and guest SDK calls, memory and table growth, bytes of
//! output, random draws) is charged fixed amounts of fuel, counted beside
//! the engine's own. A run whose instructions and charges together exceed
//! its budget ends `fuel limit of N exhausted` on every host, and any other
//! run reports the same `fuel_used` everywhere (`fuel.rs` says how).
//!
//! # NaN modes
//!
//! NaN bit patterns are where plain wasm floats differ between x86-64 and
//! aarch64 (the sign and payload of a NaN that arithmetic produces). A task
//! runs by default on the **fast** engine ([`ENGINE_ID`], NaN
//! canonicalization off, engine id suffixed with the architecture): replicas
//! on one architecture agree bitwise. When replicas from different
//! architectures disagree, the coordinator reissues the unit in **canonical**
//! mode ([`CANONICAL_ENGINE_ID`], every arithmetic NaN becomes
//! `0x7ff8000000000000` / `0x7fc00000`), whose results are comparable on
//! every architecture and so carry no architecture in their id. Canonical
//! mode costs float-heavy code (measured in `docs/sandbox-performance.md`),
//! so it is only paid when needed.
//!
//! # Compiled-module cache
//!
//! Compiled, linked modules are kept in memory by (module hash, NaN mode)
//! and, given a folder, on disk as `<folder>/<16 hex of BLAKE3(engine id)>/
//! <module hash>.cwasm`, checksummed, so a restarted worker skips
//! compilation; a file that is anything but right is a miss (`cache.rs`).
//!
//! # Guest SDK and pacing
//!
//! Besides WASI preview 1 a module may import the guest SDK's host functions
//! (`peergrid_proto::guest`: `checkpoint`, `restore_len`, `restore`,
//! `progress`). They reach the caller through [`TaskHooks`], which also
//! paces the run: every epoch tick the sandbox asks [`TaskHooks::pace`],
//! which may sleep on the task's thread (the duty cycle, a suspension) or
//! stop the task. Time spent paused does not count against `wall_ms`.
//!
//! **Architecture Invariant:** wasmtime types stay inside this crate; callers
//! (the worker's daemon, the coordinator's custom validators, the
//! researcher's `peergrid verify`) see [`Sandbox`], [`RunReport`],
//! [`RunOutcome`], [`SandboxError`], [`TaskHooks`], [`Pace`] and
//! [`Checkpoint`] only.
//!
//! # Layout
//!
//! - `task.rs`: what callers see: [`SandboxTask`], [`NanMode`],
//!   [`RunReport`], [`RunOutcome`], [`SandboxError`], [`TaskHooks`],
//!   [`Pace`], [`Checkpoint`].
//! - `run.rs`: [`Sandbox`], its in-memory module cache and one run.
//! - `engine.rs`: the engine configurations and their ids ([`ENGINE_ID`],
//!   [`CANONICAL_ENGINE_ID`]).
//! - `host.rs`: a task's `Store` state and the functions a module may
//!   import (WASI, the guest SDK).
//! - `fuel.rs`: host charges and the memory and table caps.
//! - `wasi.rs`: capped output, virtual clocks, seeded randomness
//!   ([`unit_seed`]).
//! - `cache.rs`: compiled modules on disk, and the crate's one `unsafe`.

mod cache;
mod engine;
mod fuel;
mod host;
mod run;
mod task;
mod wasi;

pub use engine::{CANONICAL_ENGINE_ID, ENGINE_ID, MAX_CONCURRENT_TASKS};
pub use run::Sandbox;
pub use task::{
    Checkpoint, NanMode, Pace, RunOutcome, RunReport, SandboxError, SandboxTask, TaskHooks,
};
pub use wasi::unit_seed;

#[cfg(test)]
mod tests;
