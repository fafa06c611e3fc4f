//! peergrid-worker: the volunteer's daemon. It connects to a coordinator
//! over QUIC ([`net`]), runs tasks in the wasmtime [`sandbox`] and reports
//! the results ([`daemon`]), keeping its queue, checkpoints and pending
//! reports in a local database ([`state`]), within the volunteer's
//! preferences ([`prefs`], enforced by the [`governor`]); it is steered
//! through a local socket ([`control`]) and installed as a service
//! ([`install`]).
//!
//! **Architecture Invariant:** wasmtime types never leave [`sandbox`].

pub mod control;
pub mod daemon;
pub mod display;
pub mod governor;
pub mod identity;
pub mod install;
pub mod net;
pub mod prefs;
pub mod sandbox;
pub mod state;
