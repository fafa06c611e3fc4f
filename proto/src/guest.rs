//! The host functions a job may import from the worker beyond WASI
//! preview 1: the guest SDK's (`sdk/guest`) checkpoint, restore and
//! progress calls, in the wasm import module [`IMPORT_MODULE`].
//!
//! The worker's sandbox links exactly these and the coordinator's module
//! check accepts exactly these, both from this one list.

/// The wasm import module of the guest SDK's host functions.
pub const IMPORT_MODULE: &str = "peergrid";

/// A wasm value type, as far as the host functions need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValType {
    I32,
    I64,
    F64,
}

/// One host function: its name in [`IMPORT_MODULE`] and its wasm type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFunction {
    pub name: &'static str,
    pub params: &'static [ValType],
    pub results: &'static [ValType],
}

/// `checkpoint(ptr, len)`: offer `len` bytes at `ptr` as the task's state.
pub const CHECKPOINT: HostFunction = HostFunction {
    name: "checkpoint",
    params: &[ValType::I32, ValType::I32],
    results: &[],
};
/// `restore_len() -> len`: the length of the checkpoint to resume from, or
/// -1 when the task starts fresh.
pub const RESTORE_LEN: HostFunction = HostFunction {
    name: "restore_len",
    params: &[],
    results: &[ValType::I64],
};
/// `restore(ptr, len) -> written`: copy at most `len` bytes of that
/// checkpoint to `ptr`; returns how many were copied.
pub const RESTORE: HostFunction = HostFunction {
    name: "restore",
    params: &[ValType::I32, ValType::I32],
    results: &[ValType::I32],
};
/// `progress(fraction)`: how far the task is, 0.0 to 1.0.
pub const PROGRESS: HostFunction = HostFunction {
    name: "progress",
    params: &[ValType::F64],
    results: &[],
};

/// Every host function of [`IMPORT_MODULE`].
pub const HOST_FUNCTIONS: &[HostFunction] = &[CHECKPOINT, RESTORE_LEN, RESTORE, PROGRESS];

/// The host function called `name`, if there is one.
pub fn host_function(name: &str) -> Option<&'static HostFunction> {
    HOST_FUNCTIONS.iter().find(|f| f.name == name)
}
