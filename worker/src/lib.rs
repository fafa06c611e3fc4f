//! peergrid-worker: the volunteer's daemon. It connects to a coordinator
//! over QUIC ([`net`]), runs tasks in the wasmtime [`sandbox`] and reports
//! the results ([`daemon`]), keeping its queue, checkpoints and pending
//! reports in a local database ([`state`]), within the volunteer's
//! preferences ([`prefs`], enforced by the [`governor`]); it is steered
//! through a local socket ([`control`]) and installed as a service
//! ([`install`]).
//!
//! **Architecture Invariant:** the worker does not name wasmtime: it runs
//! tasks through [`sandbox`] (the `peergrid-sandbox` crate) only.

pub mod control;
pub mod daemon;
pub mod display;
pub mod governor;
pub mod identity;
pub mod install;
pub mod net;
pub mod prefs;
/// The wasmtime sandbox, its own crate so the coordinator and the
/// researcher's CLI use it without the daemon.
pub use peergrid_sandbox as sandbox;
pub mod state;
