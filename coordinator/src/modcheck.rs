//! Refuses a module at submission that no worker could run: not wasm, a
//! component instead of a core module, no `_start`, or an import outside
//! WASI preview 1 and the guest SDK's host functions
//! (`peergrid_proto::guest`). A researcher learns it in seconds, not after
//! every volunteer has failed the job.

use peergrid_proto::guest;
use wasmparser::{FuncType, Parser, Payload, TypeRef, Validator};

/// Every function WASI preview 1 defines; workers link exactly these.
const WASI_P1: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Checks `bytes` is a WASI preview 1 command module workers can run.
pub fn check_module(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("the module is not WebAssembly (no `\\0asm` header); submit a .wasm file built for wasm32-wasip1".into());
    }
    if bytes[4..8] != [1, 0, 0, 0] {
        return Err(
            "the module is a WebAssembly component, not a core module; build it for wasm32-wasip1"
                .into(),
        );
    }
    Validator::new()
        .validate_all(bytes)
        .map_err(|e| format!("the module is not valid WebAssembly: {e}"))?;
    let mut has_start = false;
    // Function types by index (the type section precedes the imports).
    let mut types: Vec<Option<FuncType>> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("the module is not valid WebAssembly: {e}"))? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    let group = group.map_err(|e| format!("unreadable type: {e}"))?;
                    for sub in group.into_types() {
                        types.push(match sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => Some(f),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import.map_err(|e| format!("unreadable import: {e}"))?;
                    if import.module == guest::IMPORT_MODULE {
                        check_sdk_import(import.name, import.ty, &types)?;
                        continue;
                    }
                    let is_wasi_fn = import.module == "wasi_snapshot_preview1"
                        && matches!(import.ty, TypeRef::Func(_))
                        && WASI_P1.contains(&import.name);
                    if !is_wasi_fn {
                        return Err(format!(
                            "the module imports `{}.{}`, which workers do not provide; \
                             modules may import only WASI preview 1 functions and the \
                             peergrid guest SDK's",
                            import.module, import.name
                        ));
                    }
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.map_err(|e| format!("unreadable export: {e}"))?;
                    if export.name == "_start" && export.kind == wasmparser::ExternalKind::Func {
                        has_start = true;
                    }
                }
            }
            _ => {}
        }
    }
    if !has_start {
        return Err("the module exports no `_start` function; build a command (a binary with `main`), not a library".into());
    }
    Ok(())
}

/// Checks an import from the guest SDK's module names one of its host
/// functions with exactly its type.
fn check_sdk_import(name: &str, ty: TypeRef, types: &[Option<FuncType>]) -> Result<(), String> {
    let module = guest::IMPORT_MODULE;
    let Some(expected) = guest::host_function(name) else {
        return Err(format!(
            "the module imports `{module}.{name}`, which workers do not provide; \
             the peergrid guest SDK's functions are {}",
            guest::HOST_FUNCTIONS
                .iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let actual = match ty {
        TypeRef::Func(index) => types.get(index as usize).and_then(Option::as_ref),
        _ => None,
    };
    let matches = actual.is_some_and(|f| {
        same_types(f.params(), expected.params) && same_types(f.results(), expected.results)
    });
    if matches {
        Ok(())
    } else {
        Err(format!(
            "the module imports `{module}.{name}` with another type than workers provide \
             ({:?} -> {:?}); use the peergrid-sdk crate of this release",
            expected.params, expected.results
        ))
    }
}

fn same_types(actual: &[wasmparser::ValType], expected: &[guest::ValType]) -> bool {
    actual.len() == expected.len()
        && actual.iter().zip(expected).all(|(a, e)| {
            matches!(
                (a, e),
                (wasmparser::ValType::I32, guest::ValType::I32)
                    | (wasmparser::ValType::I64, guest::ValType::I64)
                    | (wasmparser::ValType::F64, guest::ValType::F64)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_problem() {
        assert!(
            check_module(b"#!/bin/sh\necho hi")
                .unwrap_err()
                .contains("not WebAssembly")
        );
        let lib = b"\0asm\x01\0\0\0";
        assert!(check_module(lib).unwrap_err().contains("_start"));
    }

    fn importing(import: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module {import} (memory (export "memory") 1) (func (export "_start")))"#
        ))
        .unwrap()
    }

    #[test]
    fn accepts_the_guest_sdk_with_its_exact_types() {
        let all = r#"
            (import "peergrid" "checkpoint" (func (param i32 i32)))
            (import "peergrid" "restore_len" (func (result i64)))
            (import "peergrid" "restore" (func (param i32 i32) (result i32)))
            (import "peergrid" "progress" (func (param f64)))"#;
        assert_eq!(check_module(&importing(all)), Ok(()));
        let unknown = check_module(&importing(r#"(import "peergrid" "launch" (func))"#));
        assert!(unknown.unwrap_err().contains("`peergrid.launch`"));
        let wrong = check_module(&importing(
            r#"(import "peergrid" "progress" (func (param f32)))"#,
        ));
        assert!(wrong.unwrap_err().contains("another type"));
        let global = check_module(&importing(r#"(import "peergrid" "progress" (global i32))"#));
        assert!(global.unwrap_err().contains("another type"));
    }
}
