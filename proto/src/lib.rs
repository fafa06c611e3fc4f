//! peergrid's shared vocabulary: content hashes, the join string, the job
//! spec, the messages workers and the coordinator exchange over QUIC, and
//! the JSON bodies of the HTTP API the researcher's client reads.
//!
//! **Architecture Invariant:** this crate does no I/O and knows nothing of
//! tokio, quinn, wasmtime or SQLite, so it builds for wasm32 and every side
//! (coordinator, worker, CLI, tests) agrees on one definition of each type.

pub mod api;
pub mod batch;
pub mod citation;
pub mod codec;
pub mod deadline;
pub mod guest;
pub mod hash;
pub mod join;
pub mod limits;
pub mod modcheck;
pub mod runner;
pub mod signing;
pub mod spec;
pub mod text;
pub mod wire;

pub use hash::Hash;
pub use join::JoinString;
