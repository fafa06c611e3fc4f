//! peergrid-coordinator: hands work units to volunteer workers over QUIC,
//! validates their redundant results and keeps the dataset.
//!
//! See `docs/ARCHITECTURE.md` for the map. The decision logic
//! ([`quorum`], [`scheduler`], [`trust`], [`credit`], [`seats`]) is sans-IO,
//! in its own crate (`peergrid-core`, re-exported here); [`quic`], [`http`],
//! [`grid`], [`writer`], [`judge`] and [`store`] are the shells around it.

pub use peergrid_core::{credit, netgroup, quorum, scheduler, seats, sim, trust};

pub mod api;
pub mod dashboard;
pub mod datadir;
pub mod grid;
pub mod http;
pub mod judge;
pub mod metrics;
pub mod mirror;
pub mod modcheck;
pub mod project;
pub mod quic;
pub mod storage;
pub mod store;
pub mod tls;
pub mod writer;
