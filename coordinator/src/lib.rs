//! peergrid-coordinator: hands work units to volunteer workers over QUIC,
//! validates their redundant results and keeps the dataset.
//!
//! See `docs/ARCHITECTURE.md` for the map. The decision logic
//! ([`quorum`], [`scheduler`], [`trust`], [`credit`], [`seats`]) is sans-IO; [`quic`], [`http`], [`grid`],
//! [`writer`], [`judge`] and [`store`] are the shells around it.

pub mod credit;
pub mod dashboard;
pub mod datadir;
pub mod grid;
pub mod http;
pub mod judge;
pub mod modcheck;
pub mod netgroup;
pub mod quic;
pub mod quorum;
pub mod scheduler;
pub mod seats;
pub mod sim;
pub mod storage;
pub mod store;
pub mod tls;
pub mod trust;
pub mod writer;
