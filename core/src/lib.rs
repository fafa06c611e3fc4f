//! peergrid-core: the coordinator's decisions, sans-IO. Times come in as
//! arguments, changes go out as [`model::StoreOp`]s, and nothing here
//! reaches a clock, a socket, a file or a database. The crate depends on no
//! async runtime, database or network crate (`scripts/test` checks), and
//! `core/clippy.toml` makes reading a clock, sleeping, spawning a thread or
//! opening a file or socket a lint error. The coordinator
//! (`peergrid-coordinator`) is the shell around it.
//!
//! - [`model`]: hosts, copies, jobs as the scheduler sees them, store ops.
//! - [`quorum`]: one unit's verdict from its copies.
//! - [`scheduler`]: the window of units, assignment, deadlines, audits.
//! - [`trust`]: a host's standing (trust streak, quota, in-flight cap).
//! - [`credit`]: credit arithmetic (totals, recent average).
//! - [`netgroup`]: which addresses count as one network.
//! - [`seats`]: the bounded rooms of connections at the workers' door.
//! - [`sim`]: the adversarial population simulation over the real scheduler.

pub mod credit;
pub mod model;
pub mod netgroup;
pub mod quorum;
pub mod scheduler;
pub mod seats;
pub mod sim;
pub mod trust;
