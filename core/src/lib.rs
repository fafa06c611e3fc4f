//! peergrid-core: the coordinator's decisions, sans-IO. Times come in as
//! arguments, changes go out as [`model::StoreOp`]s, and nothing here can
//! reach a clock, a socket or a database: the crate depends on neither
//! tokio nor rusqlite, so the compiler keeps it that way. The coordinator
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
