//! Refuses a module at submission that no worker could run: not wasm, a
//! component instead of a core module, no `_start`, an import outside
//! WASI preview 1 and the guest SDK's host functions
//! (`peergrid_proto::guest`), or tables and memories the workers' fixed
//! limits (`peergrid_proto::limits`) or the job's `memory_mb` cannot hold.
//! A researcher learns it in seconds, not after every volunteer has failed
//! the job.
//!
//! It lives in `proto` (wasmparser, no wasmtime) so the coordinator and the
//! fuzz targets (`fuzz/`) share it without linking the sandbox.

use crate::guest;
use crate::limits::{MAX_MEMORIES_PER_TASK, MAX_TABLE_ELEMENTS, MAX_TABLES_PER_TASK};
use wasmparser::{FuncType, MemoryType, Parser, Payload, TableType, TypeRef, Validator};

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

/// Checks `bytes` is a WASI preview 1 command module workers can run with
/// `memory_bytes` of memory (the job's `memory_mb`).
///
/// Only what fails on every worker is refused: a table or memory whose
/// *initial* size is too large cannot be instantiated anywhere. A declared
/// *maximum* above a limit is accepted: it only bounds growth, and growth
/// past a limit makes `memory.grow`/`table.grow` return −1, which the module
/// may handle.
pub fn check_module(bytes: &[u8], memory_bytes: u64) -> Result<(), String> {
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
    let mut tables = 0u32;
    let mut memories = 0u32;
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
            Payload::TableSection(reader) => {
                for table in reader {
                    let table = table.map_err(|e| format!("unreadable table: {e}"))?;
                    check_table(tables, &table.ty)?;
                    tables += 1;
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(|e| format!("unreadable memory: {e}"))?;
                    check_memory(&memory, memory_bytes)?;
                    memories += 1;
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
    if tables > MAX_TABLES_PER_TASK {
        return Err(format!(
            "the module defines {tables} tables; workers allow at most {MAX_TABLES_PER_TASK}"
        ));
    }
    if memories > MAX_MEMORIES_PER_TASK {
        return Err(format!(
            "the module defines {memories} memories; workers allow at most {MAX_MEMORIES_PER_TASK}"
        ));
    }
    if !has_start {
        return Err("the module exports no `_start` function; build a command (a binary with `main`), not a library".into());
    }
    Ok(())
}

/// Checks table `index` starts within the workers' element limit.
fn check_table(index: u32, table: &TableType) -> Result<(), String> {
    if table.initial > MAX_TABLE_ELEMENTS as u64 {
        return Err(format!(
            "the module's table {index} starts with {} elements; workers allow at most \
             {MAX_TABLE_ELEMENTS} elements per table (MAX_TABLE_ELEMENTS), so no worker \
             could run it; declare a smaller table",
            table.initial
        ));
    }
    Ok(())
}

/// Checks a memory's initial size fits the job's memory setting.
fn check_memory(memory: &MemoryType, memory_bytes: u64) -> Result<(), String> {
    let page_bytes = 1u64 << memory.page_size_log2.unwrap_or(16);
    let initial = memory.initial.saturating_mul(page_bytes);
    if initial > memory_bytes {
        return Err(format!(
            "the module's memory starts at {} MiB, more than the job's memory_mb = {}, so no \
             worker could run it; raise memory_mb (at most {}) or shrink the module's initial memory",
            initial.div_ceil(1 << 20),
            memory_bytes >> 20,
            crate::limits::MAX_TASK_MEMORY >> 20,
        ));
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

    /// The default `memory_mb` of a job, in bytes.
    const MEMORY: u64 = 256 << 20;

    fn check(bytes: &[u8]) -> Result<(), String> {
        check_module(bytes, MEMORY)
    }

    #[test]
    fn names_the_problem() {
        assert!(
            check(b"#!/bin/sh\necho hi")
                .unwrap_err()
                .contains("not WebAssembly")
        );
        let lib = b"\0asm\x01\0\0\0";
        assert!(check(lib).unwrap_err().contains("_start"));
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
        assert_eq!(check(&importing(all)), Ok(()));
        let unknown = check(&importing(r#"(import "peergrid" "launch" (func))"#));
        assert!(unknown.unwrap_err().contains("`peergrid.launch`"));
        let wrong = check(&importing(
            r#"(import "peergrid" "progress" (func (param f32)))"#,
        ));
        assert!(wrong.unwrap_err().contains("another type"));
        let global = check(&importing(r#"(import "peergrid" "progress" (global i32))"#));
        assert!(global.unwrap_err().contains("another type"));
    }

    #[test]
    fn refuses_a_table_larger_than_workers_allow() {
        let table = |decl: &str| {
            wat::parse_str(format!(r#"(module {decl} (func (export "_start")))"#)).unwrap()
        };
        let refusal = check(&table("(table 50000000 funcref)")).unwrap_err();
        assert!(refusal.contains("100000"), "{refusal}");
        let one_over = format!("(table {} funcref)", MAX_TABLE_ELEMENTS + 1);
        assert!(check(&table(&one_over)).is_err());
        let at_limit = format!("(table {MAX_TABLE_ELEMENTS} funcref)");
        assert_eq!(check(&table(&at_limit)), Ok(()));
        // A large maximum only bounds growth, which fails softly.
        assert_eq!(check(&table("(table 1 50000000 funcref)")), Ok(()));
        assert_eq!(check(&table("(table 1 funcref)")), Ok(()));
        let five = "(table 1 funcref) ".repeat(5);
        assert!(check(&table(&five)).unwrap_err().contains("at most 4"));
    }

    #[test]
    fn refuses_an_initial_memory_larger_than_the_job_allows() {
        let memory = |pages: u32| {
            wat::parse_str(format!(
                r#"(module (memory {pages}) (func (export "_start")))"#
            ))
            .unwrap()
        };
        // 4096 pages of 64 KiB are the job's 256 MiB exactly.
        assert_eq!(check(&memory(4096)), Ok(()));
        let refusal = check(&memory(4097)).unwrap_err();
        assert!(refusal.contains("memory_mb = 256"), "{refusal}");
        assert_eq!(check_module(&memory(4097), 512 << 20), Ok(()));
    }
}
