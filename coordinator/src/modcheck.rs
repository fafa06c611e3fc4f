//! The module check at submission. It lives in `peergrid_proto::modcheck`
//! (wasmparser only, no wasmtime), where the fuzz targets reach it; this
//! re-export keeps the coordinator's `crate::modcheck` paths.

pub use peergrid_proto::modcheck::check_module;
