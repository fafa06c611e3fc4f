//! The wasmtime sandbox that runs one task: a WASI preview 1 command module,
//! the work unit on stdin, the result on stdout.
//!
//! Everything a volunteer's machine exposes to a module is decided here, so
//! this file is where two promises are kept:
//!
//! - **Every `Store` has a budget** (memory, fuel, an epoch deadline for wall
//!   time, capped stdout and stderr), whatever the module does. Fuel gives a
//!   deterministic instruction cap and deterministic credit; the epoch gives
//!   the wall-clock deadline cheaply (see `docs/sandbox-performance.md`).
//! - **Runs are deterministic**: one engine configuration per NaN mode on
//!   every worker, no threads, deterministic relaxed SIMD, virtual clocks
//!   that advance a fixed step per read, randomness seeded from the work
//!   unit, no environment, filesystem or network. Fuel is counted by the
//!   engine per wasm instruction, plus fixed charges for work the host does
//!   for the module (see below), so every replica of a task reports the same
//!   `fuel_used`, in either NaN mode.
//!
//! # Host charges
//!
//! Instructions alone do not bound CPU time: a loop on a failing
//! `memory.grow` or a cheap WASI call spends most of its time in host code
//! at a few fuel per iteration. So every WASI and guest SDK call costs
//! [`HOST_CALL_FUEL`], every attempt to grow a memory or a table
//! [`GROW_ATTEMPT_FUEL`], every 64 KiB page a memory is given (its initial
//! pages too) [`GROW_PAGE_FUEL`], every [`OUTPUT_BYTES_PER_FUEL`] bytes
//! written to stdout or stderr one, and every random draw
//! [`RANDOM_DRAW_FUEL`]. These [`HostCharges`] are counted
//! beside the engine's fuel, not subtracted from it: compiled code keeps its
//! fuel in a register across `memory.grow` and the epoch check, so a
//! `set_fuel` there would be lost. A run has exhausted its fuel when the
//! charges exceed what the engine has left; that is checked exactly in the
//! guest SDK's calls and at the end of the run, soundly (against the
//! engine's last saved count, which is never below the true one) at every
//! epoch tick, and against the whole budget at every growth attempt. Where
//! the check fires first varies with timing, but the outcome and
//! `fuel_used` do not: a run whose charges and instructions together exceed
//! its budget ends `fuel limit of N exhausted` on every host, and any other
//! run reports the same total everywhere.
//!
//! # NaN modes
//!
//! NaN bit patterns are where plain wasm floats differ between x86-64 and
//! aarch64 (the sign and payload of a NaN that arithmetic produces). A task
//! runs by default on the **fast** engine ([`ENGINE_ID`], NaN
//! canonicalization off, engine id suffixed with the architecture): replicas
//! on one architecture agree bitwise. When replicas from different
//! architectures disagree, the coordinator reissues the unit in **canonical**
//! mode ([`CANONICAL_ENGINE_ID`], every arithmetic NaN becomes
//! `0x7ff8000000000000` / `0x7fc00000`), whose results are comparable on
//! every architecture and so carry no architecture in their id. Canonical
//! mode costs float-heavy code (measured in `docs/sandbox-performance.md`),
//! so it is only paid when needed.
//!
//! # Compiled-module cache
//!
//! Compiled, linked modules are kept in memory by (module hash, NaN mode)
//! and, given a folder, on disk as `<folder>/<16 hex of BLAKE3(engine id)>/
//! <module hash>.cwasm`, so a restarted worker skips compilation. A file
//! holds a magic, a BLAKE3 checksum and the bytes of `Module::serialize`;
//! anything wrong with it (missing, torn, corrupt, refused by wasmtime's own
//! version and configuration check) is a miss: the module is compiled again
//! and the file rewritten.
//!
//! # Guest SDK and pacing
//!
//! Besides WASI preview 1 a module may import the guest SDK's host functions
//! (`peergrid_proto::guest`: `checkpoint`, `restore_len`, `restore`,
//! `progress`). They reach the caller through [`TaskHooks`], which also
//! paces the run: every epoch tick the sandbox asks [`TaskHooks::pace`],
//! which may sleep on the task's thread (the duty cycle, a suspension) or
//! stop the task. Time spent paused does not count against `wall_ms`.
//!
//! **Architecture Invariant:** wasmtime types stay inside this crate; callers
//! (the worker's daemon, the coordinator's custom validators, the
//! researcher's `peergrid verify`) see [`Sandbox`], [`RunReport`],
//! [`RunOutcome`], [`SandboxError`], [`TaskHooks`], [`Pace`] and
//! [`Checkpoint`] only.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use peergrid_proto::Hash;
use peergrid_proto::guest;
use peergrid_proto::limits::{
    MAX_CHECKPOINT, MAX_MEMORIES_PER_TASK, MAX_STDERR, MAX_TABLE_ELEMENTS, MAX_TABLES_PER_TASK,
    MAX_TASK_MEMORY,
};
use peergrid_proto::wire::TaskLimits;
use wasmtime::{
    Caller, Config, Engine, Extern, ExternType, InstanceAllocationStrategy, InstancePre, Linker,
    Module, OptLevel, PoolingAllocationConfig, ResourceLimiter, Store, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline, WasmFeatures,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, I32Exit, WasiCtxBuilder};

/// Names the fast engine configuration (NaN canonicalization off); results
/// record it with the CPU architecture appended, because NaN bits may differ
/// between architectures. Change it whenever the configuration or the fuel
/// accounting changes (`fuel-host1`: instructions plus the [`HostCharges`]
/// of this version): it also names the folder of the on-disk
/// compiled-module cache.
pub const ENGINE_ID: &str = "wasmtime-48/cranelift-speed/fuel-host1/epoch-10ms/nocanon/relaxed-simd-det/nothreads/stack-1MiB";
/// Names the canonical-NaN engine configuration, otherwise identical to
/// [`ENGINE_ID`]. No architecture is appended: its results are comparable
/// across architectures.
pub const CANONICAL_ENGINE_ID: &str = "wasmtime-48/cranelift-speed/fuel-host1/epoch-10ms/nancanon/relaxed-simd-det/nothreads/stack-1MiB";

/// How often the ticker thread advances the engine epoch; the wall-clock
/// budget is counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Deepest wasm stack a module may use. Fixed so that a deep recursion
/// overflows at the same point on every worker of one architecture (native
/// frame sizes differ between architectures, so the exact depth does too).
const MAX_WASM_STACK: usize = 1 << 20;
/// Fuel charged for every call of a WASI or guest SDK function, on top of
/// the call instruction itself: about what such a call costs in host time
/// (see `docs/sandbox.md`, "Fuel").
const HOST_CALL_FUEL: u64 = 1_000;
/// Fuel charged for every attempt to grow a memory or a table, granted or
/// not: about what a refused `memory.grow` costs in host time.
const GROW_ATTEMPT_FUEL: u64 = 500;
/// Fuel charged for every 64 KiB page a memory is given, at instantiation
/// or by `memory.grow`: about what the kernel spends mapping and zeroing it
/// when the module first touches it, and clearing it when the task ends.
const GROW_PAGE_FUEL: u64 = 10_000;
/// Bytes in a wasm page (what [`GROW_PAGE_FUEL`] is charged per).
const WASM_PAGE_BYTES: usize = 64 * 1024;
/// Bytes the host may copy from a module's stdout and stderr per unit of
/// fuel: about what a copy costs against an instruction.
const OUTPUT_BYTES_PER_FUEL: u64 = 4;
/// Fuel charged for every draw from a module's random generator:
/// wasmtime-wasi's `random_get` draws once per byte, through a trait
/// object, and spends about as long on it as wasm does on 16 instructions.
const RANDOM_DRAW_FUEL: u64 = 16;
/// Instances, memories and tables the pooling allocator keeps slots for, per
/// engine. A worker runs about one task per core, so this bounds concurrency
/// well above any real machine while keeping the reserved address space (one
/// 4 GiB memory reservation per slot, two engines) far below what 64-bit
/// hosts offer.
const POOL_SLOTS: u32 = 128;
/// Most tasks one worker process can run at once (one pool slot each).
pub const MAX_CONCURRENT_TASKS: usize = POOL_SLOTS as usize;
/// Compiled modules kept in memory. A worker serves a handful of jobs at a
/// time, so a small cache keeps every hot module without growing unbounded.
const MODULE_CACHE_ENTRIES: usize = 64;
/// Program name the module sees as `argv[0]`.
const PROGRAM_NAME: &str = "task";
/// Unix time of the virtual wall clock's first reading: 2000-01-01T00:00:00Z.
const VIRTUAL_EPOCH_SECS: u64 = 946_684_800;
/// How far both virtual clocks advance on every read. A fixed step keeps
/// readings deterministic while still letting a module see time move.
const CLOCK_STEP_NANOS: u64 = 1_000;
/// WASI preview 1 errno `notsup`, returned by the `poll_oneoff` stub.
const ERRNO_NOTSUP: i32 = 58;
/// First bytes of a compiled-module file; a new layout gets a new magic.
/// The layout: magic, [`blake3::OUT_LEN`] bytes of [`compiled_checksum`],
/// then what `Module::serialize` produced.
const COMPILED_MAGIC: &[u8; 8] = b"pgcwasm1";
/// Extension of compiled-module files.
const COMPILED_EXTENSION: &str = "cwasm";
/// BLAKE3 key-derivation context of [`compiled_checksum`].
const COMPILED_CHECKSUM_CONTEXT: &str = "peergrid compiled-module checksum v1";

/// Why the sandbox could not be built or a module cannot be run.
///
/// Messages carry wasmtime's explanation as text so wasmtime types never leave
/// this module.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
    #[error("cannot start the epoch ticker thread: {0}")]
    Ticker(#[from] std::io::Error),
    #[error(
        "module bytes hash to {actual}, not to the expected {expected}; the download is corrupt"
    )]
    HashMismatch { expected: String, actual: String },
    #[error("module is not valid WebAssembly: {0}")]
    Compile(String),
    #[error(
        "module imports something the sandbox does not provide (only WASI preview 1 and the peergrid guest SDK are available): {0}"
    )]
    Link(String),
    #[error(
        "module has no `_start` function taking and returning nothing; build it as a WASI command (e.g. a wasm32-wasip1 binary)"
    )]
    NoStart,
}

/// How a run's float arithmetic makes NaNs (see "NaN modes" above).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NanMode {
    /// Whatever the CPU makes: replicas agree bitwise on one architecture.
    /// The default.
    Fast,
    /// Every arithmetic NaN canonical: comparable on every architecture.
    Canonical,
}

impl NanMode {
    /// The mode a task asks for (`Task::canonical_nan` on the wire).
    pub fn from_canonical(canonical_nan: bool) -> NanMode {
        match canonical_nan {
            true => NanMode::Canonical,
            false => NanMode::Fast,
        }
    }
}

/// One task for [`Sandbox::run`].
#[derive(Clone, Copy, Debug)]
pub struct SandboxTask<'a> {
    /// The module's hash: the compiled-module caches' key.
    pub module: &'a Hash,
    /// Read only on a cache miss, and then must hash to `module`.
    pub module_bytes: &'a [u8],
    /// The work unit, on stdin.
    pub input: &'a [u8],
    /// Follow the program name `task`.
    pub args: &'a [String],
    /// Seeds every source of randomness the module can reach.
    pub seed: u64,
    pub limits: &'a TaskLimits,
    /// Picks the engine (see "NaN modes" above).
    pub nan: NanMode,
}

/// Engine settings every worker uses identically, so results are comparable.
///
/// Build one per process and share it: it owns the compilers, the instance
/// pools, the module cache and the epoch ticker thread.
pub struct Sandbox {
    /// NaN canonicalization off: the default, fastest engine, whose NaN bits
    /// may depend on the architecture.
    fast: TaskEngine,
    /// NaN canonicalization on, otherwise identical to `fast`: for units
    /// whose replicas disagreed across architectures.
    canonical: TaskEngine,
    /// Fuel and epoch in production; epoch alone only in benchmarks.
    metering: Metering,
    /// Compiled, already linked modules by (module hash, NaN mode), so
    /// repeated work units of a job skip compilation. Only modules that
    /// compiled and linked enter.
    cache: Mutex<HashMap<(Hash, NanMode), InstancePre<TaskState>>>,
    /// Modules compiled from wasm since this sandbox was built (not loaded
    /// from memory or disk): what the disk cache exists to keep at zero
    /// after a restart, so tests count it.
    compiles: AtomicU64,
    /// Dropping the sender tells the ticker thread to stop at once.
    stop_ticker: Option<mpsc::Sender<()>>,
    /// The thread that advances both engines' epochs every [`EPOCH_TICK`];
    /// joined on drop.
    ticker: Option<JoinHandle<()>>,
}

/// One engine configuration (one NaN mode) and what is built on it.
struct TaskEngine {
    engine: Engine,
    /// WASI preview 1 and nothing else, linked once and shared by every task.
    linker: Linker<TaskState>,
    /// Names the configuration; results record it.
    id: String,
    /// `<cache dir>/<16 hex of BLAKE3(id)>`: code compiled under one
    /// configuration is never offered to another. `None`: memory only.
    compiled_dir: Option<PathBuf>,
}

/// How guest execution is metered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metering {
    /// Production: fuel for the deterministic instruction cap and credit,
    /// the epoch for the wall-clock deadline.
    FuelAndEpoch,
    /// Benchmarks only, to measure what fuel costs: the epoch alone.
    EpochOnly,
    /// Benchmarks only, to measure what metering costs at all: neither fuel
    /// nor epoch, so nothing bounds the run but the memory cap.
    Unmetered,
}

/// What one run of a task produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub outcome: RunOutcome,
    /// Fuel the module consumed: deterministic, so replicas of a task agree on
    /// it and it can be credited exactly. Zero when the module never ran.
    pub fuel_used: u64,
    /// What the module wrote to stderr, at most [`MAX_STDERR`] bytes (the rest
    /// is dropped).
    pub stderr: Vec<u8>,
    /// Wall time spent in [`Sandbox::run`], compilation on a cache miss
    /// included.
    pub elapsed: Duration,
    /// The run resumed from a checkpoint ([`TaskHooks::resume_from`]):
    /// `fuel_used` is the checkpoint's fuel plus what the run used after
    /// `restore`, an estimate rather than a replica-exact count.
    pub resumed: bool,
}

/// A task's state as the guest SDK's `checkpoint` offered it, with the fuel
/// the task had used when it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub state: Vec<u8>,
    pub fuel_used: u64,
}

/// What [`TaskHooks::pace`] decides at an epoch tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pace {
    /// Keep running (after the hook slept, if it wanted a pause).
    Continue,
    /// End the run now; the report's outcome is an error with this message.
    /// The caller asked for it, so it knows to ignore that report.
    Stop(String),
}

/// The caller's side of a running task: the guest SDK's calls land here,
/// and the worker paces the task through it. Every method runs on the
/// task's own thread, so a method that sleeps pauses the task.
pub trait TaskHooks: Send + Sync {
    /// The checkpoint to resume from, if the task ran before; asked once.
    fn resume_from(&self) -> Option<Checkpoint> {
        None
    }
    /// Whether a `checkpoint` call now would be kept (the interval has
    /// passed); the module's memory is only copied when it would.
    fn wants_checkpoint(&self) -> bool {
        false
    }
    /// The guest offered its state while [`TaskHooks::wants_checkpoint`]
    /// said yes; `fuel_used` counts from the task's very first start.
    fn checkpoint(&self, _checkpoint: Checkpoint) {}
    /// The guest says it is `fraction` done (clamped to 0..=1).
    fn progress(&self, _fraction: f64) {}
    /// Called about every epoch tick (10 ms) while the module runs. It may
    /// sleep to pause the module; that time does not count as wall time.
    fn pace(&self) -> Pace {
        Pace::Continue
    }
}

/// Hooks that keep nothing, report nowhere and never pause: a plain run.
struct NoHooks;

impl TaskHooks for NoHooks {}

/// Why a run ended early at its caller's request ([`Pace::Stop`]).
#[derive(Debug)]
struct Stopped(String);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by the worker: {}", self.0)
    }
}

impl std::error::Error for Stopped {}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The module returned from `_start` or exited with status 0; holds its
    /// stdout.
    Success(Vec<u8>),
    /// Anything else, as a message meant for the researcher.
    Error(String),
}

/// What a task's `Store` holds.
struct TaskState {
    wasi: WasiP1Ctx,
    /// The memory and table caps, which also charge growth.
    limiter: TaskLimiter,
    /// Fuel charged for host work, shared with the limiter, the output
    /// streams and the random generators that do it.
    charges: HostCharges,
    hooks: Arc<dyn TaskHooks>,
    /// The checkpoint this run resumes from, handed to `restore`.
    restored: Option<Checkpoint>,
    /// Fuel the task's earlier runs used, up to the checkpoint it resumes
    /// from (0 on a fresh start).
    fuel_before: u64,
    /// Fuel this run had used when the guest first read its checkpoint:
    /// the start-up it repeats, not counted twice.
    fuel_at_restore: Option<u64>,
    /// The fuel budget this run started with.
    fuel_budget: u64,
}

impl TaskState {
    /// Fuel the task has used, counting from its very first start: what
    /// earlier runs used up to the checkpoint, plus what this run used
    /// since it read the checkpoint. `remaining` is the engine's count;
    /// host charges are added, and this run's share never exceeds its
    /// budget (a run that passed it reports the budget, whenever the
    /// passing was noticed).
    fn fuel_used(&self, remaining: u64) -> u64 {
        let this_run = self
            .fuel_budget
            .saturating_sub(remaining)
            .saturating_add(self.charges.total())
            .min(self.fuel_budget);
        self.fuel_before
            .saturating_add(this_run.saturating_sub(self.fuel_at_restore.unwrap_or(0)))
    }

    /// Whether instructions and host charges together have passed this
    /// run's budget, given the engine's `remaining` fuel.
    fn out_of_fuel(&self, remaining: u64) -> bool {
        self.charges.total() > remaining
    }
}

/// Fuel charged for work the host does on a module's behalf (calls,
/// growth, bytes moved), counted beside the engine's fuel (see the module
/// documentation). Clones share one count: the WASI context's streams and
/// random generators hold one.
#[derive(Clone, Default)]
struct HostCharges(Arc<AtomicU64>);

impl HostCharges {
    fn charge(&self, fuel: u64) {
        // One thread runs a task; the atomic only makes the count shareable
        // with the WASI context's `Send` parts.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                Some(total.saturating_add(fuel))
            });
    }

    fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The memory and table caps of one task, charging every growth attempt.
struct TaskLimiter {
    limits: StoreLimits,
    charges: HostCharges,
    /// This run's fuel budget: once the charges alone pass it, the run is
    /// out of fuel whatever the engine has left, and growth traps at once.
    /// `u64::MAX` when the sandbox meters no fuel.
    fuel_budget: u64,
}

impl TaskLimiter {
    /// Charges one growth attempt (and `pages` granted pages); traps when
    /// the charges alone have passed the budget.
    fn charge_growth(&mut self, pages: u64) -> wasmtime::Result<()> {
        self.charges
            .charge(GROW_ATTEMPT_FUEL.saturating_add(pages.saturating_mul(GROW_PAGE_FUEL)));
        if self.charges.total() > self.fuel_budget {
            return Err(Trap::OutOfFuel.into());
        }
        Ok(())
    }
}

impl ResourceLimiter for TaskLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum)?
            && maximum.is_none_or(|max| desired <= max);
        let pages = if granted {
            desired.saturating_sub(current).div_ceil(WASM_PAGE_BYTES) as u64
        } else {
            0
        };
        self.charge_growth(pages)?;
        Ok(granted)
    }

    /// Also called, without `memory_growing`, for growth past what the
    /// memory's type can address (a 32-bit memory past 4 GiB).
    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.charge_growth(0)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.charge_growth(0)?;
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.charge_growth(0)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Charges a WASI or guest SDK call, and ends the run if the task is out
/// of fuel: in a host function the engine's count is exact.
fn charge_host_call(caller: &mut Caller<'_, TaskState>) -> wasmtime::Result<()> {
    caller.data().charges.charge(HOST_CALL_FUEL);
    check_fuel(caller)
}

/// Ends the run if instructions and host charges have passed the budget.
fn check_fuel(caller: &mut Caller<'_, TaskState>) -> wasmtime::Result<()> {
    // `get_fuel` fails only on a sandbox without fuel, where there is no
    // budget to exhaust.
    if let Ok(remaining) = caller.get_fuel()
        && caller.data().out_of_fuel(remaining)
    {
        return Err(Trap::OutOfFuel.into());
    }
    Ok(())
}

impl Sandbox {
    /// Builds both engines, links WASI and starts the epoch ticker thread.
    ///
    /// With `cache_dir`, compiled modules are also kept there (the folder is
    /// created when the first module is written), so that the next process
    /// skips compilation.
    pub fn new(cache_dir: Option<&Path>) -> Result<Sandbox, SandboxError> {
        Sandbox::with_metering(cache_dir, Metering::FuelAndEpoch)
    }

    /// **Benchmarks only**: a sandbox without fuel (the epoch deadline
    /// alone), so a benchmark can measure what fuel costs. Results carry no
    /// fuel (`fuel_used` is 0, the fuel limit is ignored) and its engine ids
    /// say `nofuel-bench-only`; never use it to run real tasks.
    #[doc(hidden)]
    pub fn new_epoch_only_for_benchmarks(
        cache_dir: Option<&Path>,
    ) -> Result<Sandbox, SandboxError> {
        Sandbox::with_metering(cache_dir, Metering::EpochOnly)
    }

    /// **Benchmarks only**: a sandbox with neither fuel nor the epoch
    /// deadline, so a benchmark can measure the cost of metering itself.
    /// Nothing stops a module that loops forever; results carry no fuel and
    /// its engine ids say `unmetered-bench-only`; never use it to run real
    /// tasks.
    #[doc(hidden)]
    pub fn new_unmetered_for_benchmarks(cache_dir: Option<&Path>) -> Result<Sandbox, SandboxError> {
        Sandbox::with_metering(cache_dir, Metering::Unmetered)
    }

    fn with_metering(
        cache_dir: Option<&Path>,
        metering: Metering,
    ) -> Result<Sandbox, SandboxError> {
        let fast = TaskEngine::new(NanMode::Fast, metering, cache_dir)?;
        let canonical = TaskEngine::new(NanMode::Canonical, metering, cache_dir)?;
        let (stop_ticker, stopped) = mpsc::channel::<()>();
        let ticking = [fast.engine.clone(), canonical.engine.clone()];
        let ticker = std::thread::Builder::new()
            .name("peergrid-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    for engine in &ticking {
                        engine.increment_epoch();
                    }
                }
            })?;
        Ok(Sandbox {
            fast,
            canonical,
            metering,
            cache: Mutex::new(HashMap::new()),
            compiles: AtomicU64::new(0),
            stop_ticker: Some(stop_ticker),
            ticker: Some(ticker),
        })
    }

    /// A short string naming the engine configuration of a NaN mode, for
    /// results to record: [`ENGINE_ID`] plus the CPU architecture, or
    /// [`CANONICAL_ENGINE_ID`] alone.
    pub fn engine_id(&self, nan: NanMode) -> &str {
        &self.engine(nan).id
    }

    /// Checks a module compiles, imports only what the host provides (WASI
    /// preview 1) and exports a `_start` command entry point (used before
    /// caching). Uses the fast engine and caches nothing.
    pub fn check_module(&self, module_bytes: &[u8]) -> Result<(), SandboxError> {
        let module = self.fast.compile(module_bytes)?;
        self.fast.link(&module).map(drop)
    }

    /// Compiles (or takes from the in-memory or disk cache, keyed by module
    /// hash and NaN mode) and runs one task. Never panics on hostile input:
    /// every failure becomes [`RunOutcome::Error`].
    pub fn run(&self, task: &SandboxTask<'_>) -> RunReport {
        self.run_with_hooks(task, Arc::new(NoHooks))
    }

    /// [`Sandbox::run`] with the caller's [`TaskHooks`]: checkpoints,
    /// progress, resuming, pausing and stopping.
    pub fn run_with_hooks(&self, task: &SandboxTask<'_>, hooks: Arc<dyn TaskHooks>) -> RunReport {
        let SandboxTask {
            module,
            module_bytes,
            input,
            args,
            seed,
            limits,
            nan,
        } = *task;
        let started = Instant::now();
        let failed = |message: String| RunReport {
            outcome: RunOutcome::Error(message),
            fuel_used: 0,
            stderr: Vec::new(),
            elapsed: started.elapsed(),
            resumed: false,
        };
        let pre = match self.cached_or_compile(module, module_bytes, nan) {
            Ok(pre) => pre,
            Err(e) => return failed(e.to_string()),
        };

        let fueled = self.metering == Metering::FuelAndEpoch;
        let charges = HostCharges::default();
        let stdout = CappedOutput::new(
            usize_or_max(limits.max_output_bytes),
            WhenFull::Fail,
            charges.clone(),
        );
        let stderr = CappedOutput::new(MAX_STDERR, WhenFull::Drop, charges.clone());
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input.to_vec()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .arg(PROGRAM_NAME)
            .args(args)
            .secure_random(SeededRng::new(seed, 0).charging(charges.clone()))
            .insecure_random(SeededRng::new(seed, 1).charging(charges.clone()))
            .insecure_random_seed(SeededRng::new(seed, 2).next_u128())
            .wall_clock(VirtualWallClock::default())
            .monotonic_clock(VirtualMonotonicClock::default())
            .build_p1();
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(usize_or_max(limits.memory_bytes))
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .memories(MAX_MEMORIES_PER_TASK as usize)
            .tables(MAX_TABLES_PER_TASK as usize)
            .build();
        let restored = hooks.resume_from();
        let resumed = restored.is_some();
        let fuel_before = restored.as_ref().map_or(0, |c| c.fuel_used);
        // A resumed run may use what the earlier runs left of the budget.
        let fuel_budget = limits.fuel.saturating_sub(fuel_before);
        let mut store = Store::new(
            &self.engine(nan).engine,
            TaskState {
                wasi,
                limiter: TaskLimiter {
                    limits: store_limits,
                    charges: charges.clone(),
                    fuel_budget: if fueled { fuel_budget } else { u64::MAX },
                },
                charges,
                hooks: hooks.clone(),
                restored,
                fuel_before,
                fuel_at_restore: None,
                fuel_budget,
            },
        );
        store.limiter(|state| &mut state.limiter);
        if fueled && let Err(e) = store.set_fuel(fuel_budget) {
            return failed(format!("cannot set the fuel budget: {e:#}"));
        }
        // Every tick, ask the hooks whether to go on (they may pause), and
        // end the run once it has *run* (pauses excluded) for `wall_ms`; the
        // next tick may come at any moment, so one extra tick guarantees the
        // module at least its full `wall_ms`.
        let wall = Duration::from_millis(limits.wall_ms).saturating_add(EPOCH_TICK);
        let mut paused = Duration::ZERO;
        let run_started = Instant::now();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |ctx| {
            let before = Instant::now();
            let pace = ctx.data().hooks.pace();
            paused = paused.saturating_add(before.elapsed());
            if let Pace::Stop(why) = pace {
                return Err(Stopped(why).into());
            }
            // Compiled code saved its fuel at its last call, so the engine's
            // count here is at least the true one: passing it means the
            // budget is gone. (It cannot be lowered here: the running code
            // would overwrite it from its register.)
            if fueled
                && let Ok(remaining) = ctx.get_fuel()
                && ctx.data().out_of_fuel(remaining)
            {
                return Err(Trap::OutOfFuel.into());
            }
            if run_started.elapsed().saturating_sub(paused) > wall {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(1))
        });

        let mut stopped = false;
        let failure = match pre.instantiate(&mut store) {
            Err(e) => Some(format!("module cannot be instantiated: {e:#}")),
            Ok(instance) => match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                Err(_) => Some(SandboxError::NoStart.to_string()),
                Ok(start) => match start.call(&mut store, ()) {
                    Ok(()) => None,
                    Err(e) => {
                        stopped = e.downcast_ref::<Stopped>().is_some();
                        describe_failure(&e, limits, &stdout)
                    }
                },
            },
        };
        let (fuel_used, failure) = if fueled {
            let remaining = store.get_fuel().unwrap_or(0);
            // Host charges may pass the budget between two checks; whatever
            // ended the run then, on another host a check came first, so
            // the outcome is the fuel limit everywhere.
            let failure = if !stopped && store.data().out_of_fuel(remaining) {
                Some(fuel_exhausted(limits))
            } else {
                failure
            };
            (store.data().fuel_used(remaining), failure)
        } else {
            (0, failure)
        };
        drop(store);

        let outcome = match failure {
            None => RunOutcome::Success(stdout.take()),
            Some(message) => RunOutcome::Error(message),
        };
        RunReport {
            outcome,
            fuel_used,
            stderr: stderr.take(),
            elapsed: started.elapsed(),
            resumed,
        }
    }

    fn engine(&self, nan: NanMode) -> &TaskEngine {
        match nan {
            NanMode::Canonical => &self.canonical,
            NanMode::Fast => &self.fast,
        }
    }

    /// The linked module for `module` in one NaN mode: from memory, else
    /// from the disk cache, else compiled from `module_bytes` (and written to
    /// the disk cache).
    fn cached_or_compile(
        &self,
        module: &Hash,
        module_bytes: &[u8],
        nan: NanMode,
    ) -> Result<InstancePre<TaskState>, SandboxError> {
        let key = (*module, nan);
        if let Some(pre) = self.lock_cache().get(&key) {
            return Ok(pre.clone());
        }
        let engine = self.engine(nan);
        // Compile outside the lock so other tasks keep running meanwhile; two
        // tasks missing on the same module at once both compile (and both
        // write the same file atomically), which is harmless.
        let pre = match engine.read_compiled(module) {
            Some(compiled) => engine.link(&compiled)?,
            None => {
                let actual = Hash::of(module_bytes);
                if actual != *module {
                    return Err(SandboxError::HashMismatch {
                        expected: module.to_hex(),
                        actual: actual.to_hex(),
                    });
                }
                let compiled = engine.compile(module_bytes)?;
                self.compiles.fetch_add(1, Ordering::Relaxed);
                let pre = engine.link(&compiled)?;
                engine.write_compiled(module, &compiled);
                pre
            }
        };
        let mut cache = self.lock_cache();
        if cache.len() >= MODULE_CACHE_ENTRIES
            && let Some(victim) = cache.keys().next().copied()
        {
            cache.remove(&victim);
        }
        cache.insert(key, pre.clone());
        Ok(pre)
    }

    /// The module cache, even if a thread panicked while holding it: the map
    /// is never left half-updated.
    fn lock_cache(&self) -> MutexGuard<'_, HashMap<(Hash, NanMode), InstancePre<TaskState>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        drop(self.stop_ticker.take());
        if let Some(ticker) = self.ticker.take() {
            // The ticker cannot panic; if it somehow did, there is nothing
            // left to clean up.
            let _ = ticker.join();
        }
    }
}

impl TaskEngine {
    /// The engine of one NaN mode, its linker, id and compiled-module folder.
    fn new(
        nan: NanMode,
        metering: Metering,
        cache_dir: Option<&Path>,
    ) -> Result<TaskEngine, SandboxError> {
        let engine = Engine::new(&engine_config(nan, metering))
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let linker = wasi_linker(&engine)?;
        let id = match nan {
            NanMode::Canonical => CANONICAL_ENGINE_ID.to_string(),
            NanMode::Fast => format!("{ENGINE_ID}/{}", std::env::consts::ARCH),
        };
        let id = match metering {
            Metering::FuelAndEpoch => id,
            Metering::EpochOnly => id.replacen("/fuel-host1/", "/nofuel-bench-only/", 1),
            Metering::Unmetered => {
                id.replacen("/fuel-host1/epoch-10ms/", "/unmetered-bench-only/", 1)
            }
        };
        let compiled_dir = cache_dir.map(|dir| {
            let id_hash = blake3::hash(id.as_bytes()).to_hex();
            dir.join(&id_hash[..16])
        });
        Ok(TaskEngine {
            engine,
            linker,
            id,
            compiled_dir,
        })
    }

    fn compile(&self, module_bytes: &[u8]) -> Result<Module, SandboxError> {
        Module::new(&self.engine, module_bytes).map_err(|e| SandboxError::Compile(format!("{e:#}")))
    }

    /// Links a compiled module against WASI and checks its entry point.
    fn link(&self, module: &Module) -> Result<InstancePre<TaskState>, SandboxError> {
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

    /// Where `module`'s compiled code lives in the disk cache, if there is one.
    fn compiled_path(&self, module: &Hash) -> Option<PathBuf> {
        let dir = self.compiled_dir.as_ref()?;
        Some(dir.join(format!("{}.{COMPILED_EXTENSION}", module.to_hex())))
    }

    /// `module`'s compiled code from the disk cache, or `None` on a miss.
    /// A file that is there but unusable is logged and treated as a miss
    /// (the caller recompiles and overwrites it).
    fn read_compiled(&self, module: &Hash) -> Option<Module> {
        let path = self.compiled_path(module)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read a compiled module, compiling again: {e}");
                return None;
            }
        };
        match self.deserialize_verified(module, &bytes) {
            Ok(compiled) => Some(compiled),
            Err(reason) => {
                tracing::warn!(path = %path.display(), "ignoring a compiled module, compiling again: {reason}");
                None
            }
        }
    }

    /// Turns the bytes of a compiled-module file back into a module, once
    /// the checksum shows they are what [`TaskEngine::write_compiled`] wrote
    /// for this engine id and this module.
    #[allow(unsafe_code)]
    fn deserialize_verified(&self, module: &Hash, file: &[u8]) -> Result<Module, String> {
        let checksum_end = COMPILED_MAGIC.len() + blake3::OUT_LEN;
        if file.len() < checksum_end || !file.starts_with(COMPILED_MAGIC) {
            return Err("not a compiled-module file of this version".to_string());
        }
        let (header, serialized) = file.split_at(checksum_end);
        let checksum = compiled_checksum(&self.id, module, serialized);
        if header[COMPILED_MAGIC.len()..] != *checksum.as_bytes() {
            return Err("checksum mismatch (torn write or corruption)".to_string());
        }
        // SAFETY: `Module::deserialize` trusts its input to be code that
        // `Module::serialize` produced; it cannot check machine code. These
        // bytes are exactly what `write_compiled` wrote from
        // `Module::serialize` on an engine with this configuration: the
        // checksum just verified binds them to this engine id (which names the
        // configuration) and this module hash, and it was checked on the
        // bytes in memory, so a later change to the file cannot reach them
        // (unlike `deserialize_file`, which maps the file). wasmtime still
        // checks its exact version, the CPU features and the settings that
        // matter for safety, and refuses a mismatch, which the caller treats
        // as a miss; it ignores NaN canonicalization, which is why the engine
        // id is in the checksum and the folder name. Whoever could forge a
        // file here can write the worker's data folder, and so could already
        // replace the worker itself.
        unsafe { Module::deserialize(&self.engine, serialized) }.map_err(|e| format!("{e:#}"))
    }

    /// Writes `compiled` to the disk cache, if there is one. Failure only
    /// costs a recompilation next time, so it is logged, not returned.
    fn write_compiled(&self, module: &Hash, compiled: &Module) {
        let (Some(dir), Some(path)) = (&self.compiled_dir, self.compiled_path(module)) else {
            return;
        };
        let written = compiled
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|serialized| {
                write_compiled_file(dir, &path, &self.id, module, &serialized)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot cache a compiled module on disk: {e}");
        }
    }
}

/// Writes a compiled-module file atomically: a temporary file in the same
/// folder, renamed over `path`, so readers see the old file, the new one or
/// none, never half of one. No fsync: a file torn by a crash fails its
/// checksum and is simply rewritten.
fn write_compiled_file(
    dir: &Path,
    path: &Path,
    engine_id: &str,
    module: &Hash,
    serialized: &[u8],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(COMPILED_MAGIC)?;
    file.write_all(compiled_checksum(engine_id, module, serialized).as_bytes())?;
    file.write_all(serialized)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// BLAKE3 over the engine id, the module hash and the serialized code, so a
/// file only verifies for the engine and module it was written for.
fn compiled_checksum(engine_id: &str, module: &Hash, serialized: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_derive_key(COMPILED_CHECKSUM_CONTEXT);
    hasher.update(&(engine_id.len() as u64).to_le_bytes());
    hasher.update(engine_id.as_bytes());
    hasher.update(&module.0);
    hasher.update(serialized);
    hasher.finalize()
}

/// The engine configuration every worker uses for one NaN mode.
fn engine_config(nan: NanMode, metering: Metering) -> Config {
    let mut config = Config::new();
    config
        .consume_fuel(metering == Metering::FuelAndEpoch)
        .epoch_interruption(metering != Metering::Unmetered)
        // `Config::wasm_threads` only exists with wasmtime's `threads` feature,
        // which we leave off; say "no threads" explicitly all the same.
        .wasm_features(
            WasmFeatures::THREADS | WasmFeatures::SHARED_EVERYTHING_THREADS,
            false,
        )
        .relaxed_simd_deterministic(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .cranelift_opt_level(OptLevel::Speed)
        // The one difference between the two engines (see the module
        // documentation): canonicalization makes NaN bits the same on every
        // architecture, at a cost to float-heavy code.
        .cranelift_nan_canonicalization(nan == NanMode::Canonical);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(POOL_SLOTS)
        .total_memories(POOL_SLOTS)
        .total_tables(POOL_SLOTS)
        .total_stacks(POOL_SLOTS)
        .max_memories_per_module(MAX_MEMORIES_PER_TASK)
        .max_tables_per_module(MAX_TABLES_PER_TASK)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_core_instance_size(8 << 20)
        .max_memory_size(usize_or_max(MAX_TASK_MEMORY));
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// A linker offering WASI preview 1 only, with `poll_oneoff` replaced by a
/// stub: the real one sleeps in host code, where neither fuel nor the epoch
/// deadline can stop it, and sleeping means nothing under virtual clocks.
fn wasi_linker(engine: &Engine) -> Result<Linker<TaskState>, SandboxError> {
    let engine_error = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
    let mut linker = Linker::new(engine);
    // wasmtime-wasi asks for the context once per WASI call: that is where
    // the call is charged. The charge is checked at the next SDK call,
    // epoch tick or the end of the run (see the module documentation).
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut TaskState| {
        state.charges.charge(HOST_CALL_FUEL);
        &mut state.wasi
    })
    .map_err(engine_error)?;
    linker.allow_shadowing(true);
    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "poll_oneoff",
            |mut caller: Caller<'_, TaskState>,
             _subscriptions: i32,
             _events: i32,
             _count: i32,
             _events_written: i32|
             -> wasmtime::Result<i32> {
                charge_host_call(&mut caller)?;
                Ok(ERRNO_NOTSUP)
            },
        )
        .map_err(engine_error)?;
    linker.allow_shadowing(false);
    add_guest_sdk(&mut linker).map_err(engine_error)?;
    Ok(linker)
}

/// Links the guest SDK's host functions (`peergrid_proto::guest`), which
/// hand checkpoints and progress to the task's [`TaskHooks`].
fn add_guest_sdk(linker: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    let module = guest::IMPORT_MODULE;
    linker.func_wrap(
        module,
        guest::CHECKPOINT.name,
        |mut caller: Caller<'_, TaskState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            charge_host_call(&mut caller)?;
            if !caller.data().hooks.wants_checkpoint() {
                return Ok(());
            }
            let len = len as u32 as usize;
            if len > MAX_CHECKPOINT {
                wasmtime::bail!("checkpoint of {len} bytes exceeds the limit of {MAX_CHECKPOINT}");
            }
            let memory = guest_memory(&mut caller)?;
            let mut state = vec![0u8; len];
            memory
                .read(&caller, ptr as u32 as usize, &mut state)
                .map_err(|_| wasmtime::format_err!("checkpoint state lies outside memory"))?;
            let remaining = caller.get_fuel().unwrap_or(0);
            let fuel_used = caller.data().fuel_used(remaining);
            caller
                .data()
                .hooks
                .checkpoint(Checkpoint { state, fuel_used });
            Ok(())
        },
    )?;
    linker.func_wrap(
        module,
        guest::RESTORE_LEN.name,
        |mut caller: Caller<'_, TaskState>| -> wasmtime::Result<i64> {
            charge_host_call(&mut caller)?;
            mark_restore(&mut caller);
            Ok(caller
                .data()
                .restored
                .as_ref()
                .map_or(-1, |c| c.state.len() as i64))
        },
    )?;
    linker.func_wrap(
        module,
        guest::RESTORE.name,
        |mut caller: Caller<'_, TaskState>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            charge_host_call(&mut caller)?;
            mark_restore(&mut caller);
            let Some(state) = caller.data_mut().restored.take() else {
                return Ok(0);
            };
            let n = state.state.len().min(len as u32 as usize);
            let memory = guest_memory(&mut caller)?;
            let written = memory.write(&mut caller, ptr as u32 as usize, &state.state[..n]);
            caller.data_mut().restored = Some(state);
            written.map_err(|_| wasmtime::format_err!("restore buffer lies outside memory"))?;
            Ok(n as i32)
        },
    )?;
    linker.func_wrap(
        module,
        guest::PROGRESS.name,
        |mut caller: Caller<'_, TaskState>, fraction: f64| -> wasmtime::Result<()> {
            charge_host_call(&mut caller)?;
            let fraction = if fraction.is_nan() {
                0.0
            } else {
                fraction.clamp(0.0, 1.0)
            };
            caller.data().hooks.progress(fraction);
            Ok(())
        },
    )?;
    Ok(())
}

/// Remembers the fuel used when a resumed run first reads its checkpoint.
fn mark_restore(caller: &mut Caller<'_, TaskState>) {
    if caller.data().restored.is_some() && caller.data().fuel_at_restore.is_none() {
        let remaining = caller.get_fuel().unwrap_or(0);
        let used = caller
            .data()
            .fuel_budget
            .saturating_sub(remaining)
            .saturating_add(caller.data().charges.total());
        caller.data_mut().fuel_at_restore = Some(used);
    }
}

/// The calling module's exported `memory`, which the SDK's calls point into.
fn guest_memory(caller: &mut Caller<'_, TaskState>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => wasmtime::bail!("the guest SDK needs the module to export its `memory`"),
    }
}

/// Turns the error that ended `_start` into the researcher's message, or
/// `None` for a clean `exit(0)`.
fn describe_failure(
    error: &wasmtime::Error,
    limits: &TaskLimits,
    stdout: &CappedOutput,
) -> Option<String> {
    if stdout.overflowed() {
        return Some(format!("output exceeds {} bytes", limits.max_output_bytes));
    }
    if let Some(I32Exit(status)) = error.downcast_ref::<I32Exit>() {
        return (*status != 0).then(|| format!("module exited with status {status}"));
    }
    if let Some(stopped) = error.downcast_ref::<Stopped>() {
        return Some(stopped.to_string());
    }
    Some(match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => fuel_exhausted(limits),
        Some(Trap::Interrupt) => format!("wall-clock limit of {} ms exceeded", limits.wall_ms),
        Some(Trap::StackOverflow) => "stack overflow".to_string(),
        Some(trap) => format!("module trapped: {trap}"),
        None => format!("module failed: {error:#}"),
    })
}

/// The researcher's message for a run that used up its fuel.
fn fuel_exhausted(limits: &TaskLimits) -> String {
    format!("fuel limit of {} exhausted", limits.fuel)
}

/// `value` as a `usize`, saturating on 32-bit hosts.
fn usize_or_max(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// What a [`CappedOutput`] does with bytes beyond its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WhenFull {
    /// Trap the module: stdout is the result, and a truncated result is wrong.
    Fail,
    /// Keep the first bytes and drop the rest: stderr is only diagnostics.
    Drop,
}

/// An in-memory stdout or stderr with a hard cap, shared between the WASI
/// context and the host (clones see the same buffer).
///
/// wasmtime-wasi's `MemoryOutputPipe` reports a full pipe to the guest as a
/// write error, which a guest may ignore (losing output silently) or turn into
/// a panic (failing on too much logging); this type does what each stream
/// needs instead.
#[derive(Clone)]
struct CappedOutput {
    captured: Arc<Mutex<Captured>>,
    cap: usize,
    when_full: WhenFull,
    /// Every byte offered is charged, kept or not: the host copied it.
    charges: HostCharges,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl CappedOutput {
    fn new(cap: usize, when_full: WhenFull, charges: HostCharges) -> CappedOutput {
        CappedOutput {
            captured: Arc::default(),
            cap,
            when_full,
            charges,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.captured.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends what fits; false when bytes had to be refused.
    fn append(&self, bytes: &[u8]) -> bool {
        self.charges
            .charge((bytes.len() as u64).div_ceil(OUTPUT_BYTES_PER_FUEL));
        let mut captured = self.lock();
        let room = self.cap.saturating_sub(captured.bytes.len());
        if bytes.len() <= room {
            captured.bytes.extend_from_slice(bytes);
            return true;
        }
        captured.overflowed = true;
        if self.when_full == WhenFull::Drop {
            captured.bytes.extend_from_slice(&bytes[..room]);
            return true;
        }
        false
    }

    fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().bytes)
    }

    fn overflow_message(&self) -> String {
        format!("output exceeds {} bytes", self.cap)
    }
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        if self.append(&bytes) {
            Ok(())
        } else {
            Err(StreamError::trap(&self.overflow_message()))
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: overflow is judged in `write`, where the bytes are.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(if self.append(buf) {
            Ok(buf.len())
        } else {
            Err(std::io::Error::other(self.overflow_message()))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// A wall clock that starts at 2000-01-01T00:00:00Z and advances
/// [`CLOCK_STEP_NANOS`] per reading, so every run sees the same times.
#[derive(Default)]
struct VirtualWallClock {
    readings: std::cell::Cell<u64>,
}

impl HostWallClock for VirtualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(CLOCK_STEP_NANOS)
    }

    fn now(&self) -> Duration {
        let n = self.readings.get();
        self.readings.set(n.saturating_add(1));
        Duration::from_secs(VIRTUAL_EPOCH_SECS)
            .saturating_add(Duration::from_nanos(n.saturating_mul(CLOCK_STEP_NANOS)))
    }
}

/// A monotonic clock that starts at zero and advances [`CLOCK_STEP_NANOS`]
/// per reading.
#[derive(Default)]
struct VirtualMonotonicClock {
    readings: std::cell::Cell<u64>,
}

impl HostMonotonicClock for VirtualMonotonicClock {
    fn resolution(&self) -> u64 {
        CLOCK_STEP_NANOS
    }

    fn now(&self) -> u64 {
        let n = self.readings.get();
        self.readings.set(n.saturating_add(1));
        n.saturating_mul(CLOCK_STEP_NANOS)
    }
}

/// xoshiro256** (Blackman and Vigna), seeded through splitmix64: a small,
/// well-studied generator whose output is fully determined by the seed. Not
/// cryptographic, on purpose: a task's "secure" randomness must be
/// reproducible by every replica.
struct SeededRng {
    state: [u64; 4],
    /// Charged for every draw, when this is one of the module's generators
    /// (see [`SeededRng::charging`]).
    charges: Option<HostCharges>,
}

impl SeededRng {
    /// A generator for `seed`; `stream` separates the generators of one task.
    fn new(seed: u64, stream: u64) -> SeededRng {
        let mut mix = seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F);
        let mut state = [0; 4];
        for word in &mut state {
            *word = splitmix64(&mut mix);
        }
        SeededRng {
            state,
            charges: None,
        }
    }

    /// This generator, charging `charges` for every draw.
    fn charging(self, charges: HostCharges) -> SeededRng {
        SeededRng {
            charges: Some(charges),
            ..self
        }
    }

    fn next(&mut self) -> u64 {
        if let Some(charges) = &self.charges {
            charges.charge(RANDOM_DRAW_FUEL);
        }
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    fn next_u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}

/// The randomness seed of unit `unit` of job `job`: every replica of a
/// unit draws the same random numbers.
pub fn unit_seed(job: u64, unit: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"peergrid-seed-v1");
    h.update(&job.to_le_bytes());
    h.update(&unit.to_le_bytes());
    let out = h.finalize();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(seed)
}

#[cfg(test)]
mod tests;
