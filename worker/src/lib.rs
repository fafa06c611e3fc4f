//! peergrid-worker: the volunteer's daemon. It connects to a coordinator
//! over QUIC ([`net`]), runs tasks in the wasmtime [`sandbox`] and reports
//! the results ([`daemon`]).
//!
//! **Architecture Invariant:** wasmtime types never leave [`sandbox`].

pub mod daemon;
pub mod identity;
pub mod net;
pub mod sandbox;
