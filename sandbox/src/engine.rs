//! The two engine configurations (one per NaN mode) every worker uses
//! identically, and their ids, which results record.
//!
//! Fuel, epoch interruption, deterministic relaxed SIMD, no threads, a fixed
//! wasm stack and a pooling allocator (on-demand instances in a task
//! runner process); the only difference between the
//! fast and the canonical engine is Cranelift's NaN canonicalization (see
//! the crate's "NaN modes").

use std::path::Path;
use std::time::Duration;

use peergrid_proto::limits::{
    MAX_MEMORIES_PER_TASK, MAX_TABLE_ELEMENTS, MAX_TABLES_PER_TASK, MAX_TASK_MEMORY,
};
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig, WasmFeatures,
};

use crate::cache::CompiledDir;
use crate::host::{TaskState, wasi_linker};
use crate::task::{NanMode, SandboxError};

/// Names the fast engine configuration (NaN canonicalization off); results
/// record it with the CPU architecture appended, because NaN bits may differ
/// between architectures. Change it whenever the configuration or the fuel
/// accounting changes (`fuel-host1`: instructions plus the host charges
/// of this version, `fuel.rs`): it also names the folder of the on-disk
/// compiled-module cache.
pub const ENGINE_ID: &str = "wasmtime-48/cranelift-speed/fuel-host1/epoch-10ms/nocanon/relaxed-simd-det/nothreads/stack-1MiB";
/// Names the canonical-NaN engine configuration, otherwise identical to
/// [`ENGINE_ID`]. No architecture is appended: its results are comparable
/// across architectures.
pub const CANONICAL_ENGINE_ID: &str = "wasmtime-48/cranelift-speed/fuel-host1/epoch-10ms/nancanon/relaxed-simd-det/nothreads/stack-1MiB";

/// How often the ticker thread advances the engine epoch; the wall-clock
/// budget is counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Deepest wasm stack a module may use. Fixed so that a deep recursion
/// overflows at the same point on every worker of one architecture (native
/// frame sizes differ between architectures, so the exact depth does too).
const MAX_WASM_STACK: usize = 1 << 20;

/// Instances, memories and tables the pooling allocator keeps slots for, per
/// engine. A worker runs about one task per core, so this bounds concurrency
/// well above any real machine while keeping the reserved address space (one
/// 4 GiB memory reservation per slot, two engines, four once a worker has
/// run a `fixed` job) far below what 64-bit
/// hosts offer.
const POOL_SLOTS: u32 = 128;
/// Most tasks one worker process can run at once (one pool slot each).
pub const MAX_CONCURRENT_TASKS: usize = POOL_SLOTS as usize;

/// One engine configuration (one NaN mode) and what is built on it.
pub(crate) struct TaskEngine {
    pub(crate) engine: Engine,
    /// WASI preview 1 and the guest SDK, linked once and shared by every
    /// task.
    linker: Linker<TaskState>,
    /// Names the configuration; results record it.
    pub(crate) id: String,
    /// This configuration's compiled modules on disk. `None`: memory only.
    pub(crate) compiled: Option<CompiledDir>,
}

/// How guest execution is metered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Metering {
    /// Production: fuel for the deterministic instruction cap and credit,
    /// the epoch for the wall-clock deadline.
    FuelAndEpoch,
    /// A `fixed` job's tasks in process: the epoch alone (the wall-clock
    /// deadline and pacing), no fuel; also what benchmarks measure fuel's
    /// cost against.
    FixedEpoch,
    /// Benchmarks only, to measure what metering costs at all: neither fuel
    /// nor epoch, so nothing bounds the run but the memory cap.
    Unmetered,
    /// A task runner process's `fuel` mode: fuel in the generated code, no
    /// epoch checks; the daemon enforces the wall-clock deadline by killing
    /// the process and paces it with SIGSTOP/SIGCONT.
    RunnerFuel,
    /// A task runner process's `fixed` mode: nothing in the generated code;
    /// the job declares each unit's credit and the daemon's deadline stops
    /// a runaway module.
    RunnerFixed,
}

impl Metering {
    /// Tasks one engine's pool holds at once (a runner's engines have no
    /// pool: `engine_config`).
    fn pool_slots(self) -> u32 {
        if self.runner() { 1 } else { POOL_SLOTS }
    }

    /// The generated code counts fuel.
    pub(crate) fn fueled(self) -> bool {
        matches!(self, Metering::FuelAndEpoch | Metering::RunnerFuel)
    }

    /// Only benchmarks build it: it runs no task whatever its metering.
    pub(crate) fn bench_only(self) -> bool {
        self == Metering::Unmetered
    }

    /// A task runner process's engine.
    fn runner(self) -> bool {
        matches!(self, Metering::RunnerFuel | Metering::RunnerFixed)
    }

    /// The generated code checks the epoch (the in-process deadline and
    /// pacing).
    pub(crate) fn epoch(self) -> bool {
        matches!(self, Metering::FuelAndEpoch | Metering::FixedEpoch)
    }
}

impl TaskEngine {
    /// The engine of one NaN mode, its linker, id and compiled-module folder.
    pub(crate) fn new(
        nan: NanMode,
        metering: Metering,
        cache_dir: Option<&Path>,
    ) -> Result<TaskEngine, SandboxError> {
        let engine = Engine::new(&engine_config(nan, metering, metering.pool_slots()))
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let linker = wasi_linker(&engine)?;
        let id = match nan {
            NanMode::Canonical => CANONICAL_ENGINE_ID.to_string(),
            NanMode::Fast => format!("{ENGINE_ID}/{}", std::env::consts::ARCH),
        };
        let id = match metering {
            Metering::FuelAndEpoch => id,
            Metering::FixedEpoch => id.replacen("/fuel-host1/", "/fixed/", 1),
            Metering::Unmetered => {
                id.replacen("/fuel-host1/epoch-10ms/", "/unmetered-bench-only/", 1)
            }
            Metering::RunnerFuel => id.replacen("/epoch-10ms/", "/runner/", 1),
            Metering::RunnerFixed => id.replacen("/fuel-host1/epoch-10ms/", "/fixed/runner/", 1),
        };
        let compiled = cache_dir.map(|dir| CompiledDir::new(dir, &engine, &id));
        Ok(TaskEngine {
            engine,
            linker,
            id,
            compiled,
        })
    }

    pub(crate) fn compile(&self, module_bytes: &[u8]) -> Result<Module, SandboxError> {
        Module::new(&self.engine, module_bytes).map_err(|e| SandboxError::Compile(format!("{e:#}")))
    }

    /// Links a compiled module against WASI and checks its entry point.
    pub(crate) fn link(&self, module: &Module) -> Result<InstancePre<TaskState>, SandboxError> {
        let pre = self
            .linker
            .instantiate_pre(module)
            .map_err(|e| SandboxError::Link(format!("{e:#}")))?;
        match module.get_export("_start") {
            Some(ExternType::Func(start))
                if start.params().len() == 0 && start.results().len() == 0 =>
            {
                Ok(pre)
            }
            _ => Err(SandboxError::NoStart),
        }
    }
}

/// The engine configuration every worker uses for one NaN mode.
fn engine_config(nan: NanMode, metering: Metering, pool_slots: u32) -> Config {
    let mut config = Config::new();
    config
        .consume_fuel(metering.fueled())
        .epoch_interruption(metering.epoch())
        // `Config::wasm_threads` only exists with wasmtime's `threads` feature,
        // which we leave off; say "no threads" explicitly all the same.
        .wasm_features(
            WasmFeatures::THREADS | WasmFeatures::SHARED_EVERYTHING_THREADS,
            false,
        )
        .relaxed_simd_deterministic(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .cranelift_opt_level(OptLevel::Speed)
        // The one difference between the two engines (see the crate's
        // "NaN modes"): canonicalization makes NaN bits the same on every
        // architecture, at a cost to float-heavy code.
        .cranelift_nan_canonicalization(nan == NanMode::Canonical);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(pool_slots)
        .total_memories(pool_slots)
        .total_tables(pool_slots)
        .total_stacks(pool_slots)
        .max_memories_per_module(MAX_MEMORIES_PER_TASK)
        .max_tables_per_module(MAX_TABLES_PER_TASK)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_core_instance_size(8 << 20)
        .max_memory_size(usize_or_max(MAX_TASK_MEMORY));
    // A runner process runs one task at a time under an OS limit on its
    // writable memory (RLIMIT_DATA, set per task from the task's memory),
    // so its instances are allocated on demand: a finished task's memory
    // is unmapped, where a pool slot would stay writable (and counted)
    // after its task, in each of the runner's engines.
    // It also compiles on its own thread: Cranelift's worker threads
    // would each hold a stack and a malloc arena under that limit, more
    // of them the more cores the machine has.
    if metering.runner() {
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        config.parallel_compilation(false);
    } else {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// `value` as a `usize`, saturating on 32-bit hosts.
pub(crate) fn usize_or_max(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}
