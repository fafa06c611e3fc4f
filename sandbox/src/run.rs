//! [`Sandbox`]: builds the two engines and the epoch ticker, keeps linked
//! modules in memory, and runs one task within its budget.
//!
//! A run builds a `Store` with the task's budget (memory, fuel, capped
//! output), instantiates the linked module and calls `_start`. Every epoch
//! tick (10 ms) a callback asks the caller's [`TaskHooks::pace`], which may
//! sleep on the task's thread (the duty cycle, a suspension) or stop the
//! task; time spent paused does not count against `wall_ms`. Whatever ends
//! the run becomes a [`RunReport`], never a panic.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use peergrid_proto::Hash;
use peergrid_proto::limits::{
    MAX_MEMORIES_PER_TASK, MAX_STDERR, MAX_TABLE_ELEMENTS, MAX_TABLES_PER_TASK,
};
use peergrid_proto::wire::TaskLimits;
use wasmtime::{InstancePre, Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;

use crate::engine::{EPOCH_TICK, Metering, TaskEngine, usize_or_max};
use crate::fuel::{HostCharges, TaskLimiter};
use crate::host::TaskState;
use crate::task::{NanMode, Pace, RunOutcome, RunReport, SandboxError, SandboxTask, TaskHooks};
use crate::wasi::{CappedOutput, WhenFull, task_wasi};

/// Compiled modules kept in memory. A worker serves a handful of jobs at a
/// time, so a small cache keeps every hot module without growing unbounded.
const MODULE_CACHE_ENTRIES: usize = 64;

/// Engine settings every worker uses identically, so results are comparable.
///
/// Build one per process and share it: it owns the compilers, the instance
/// pools, the module cache and the epoch ticker thread.
pub struct Sandbox {
    /// NaN canonicalization off: the default, fastest engine, whose NaN bits
    /// may depend on the architecture.
    pub(crate) fast: TaskEngine,
    /// NaN canonicalization on, otherwise identical to `fast`: for units
    /// whose replicas disagreed across architectures.
    pub(crate) canonical: TaskEngine,
    /// Fuel and epoch for `fuel` jobs, epoch alone for `fixed` ones.
    metering: Metering,
    /// Compiled, already linked modules by (module hash, NaN mode), so
    /// repeated work units of a job skip compilation. Only modules that
    /// compiled and linked enter.
    cache: Mutex<HashMap<(Hash, NanMode), InstancePre<TaskState>>>,
    /// Modules compiled from wasm since this sandbox was built (not loaded
    /// from memory or disk): what the disk cache exists to keep at zero
    /// after a restart, so tests count it.
    pub(crate) compiles: AtomicU64,
    /// Dropping the sender tells the ticker thread to stop at once.
    stop_ticker: Option<mpsc::Sender<()>>,
    /// The thread that advances both engines' epochs every [`EPOCH_TICK`];
    /// joined on drop.
    ticker: Option<JoinHandle<()>>,
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

impl Sandbox {
    /// Builds both engines, links WASI and starts the epoch ticker thread.
    ///
    /// With `cache_dir`, compiled modules are also kept there (the folder is
    /// created when the first module is written), so that the next process
    /// skips compilation.
    pub fn new(cache_dir: Option<&Path>) -> Result<Sandbox, SandboxError> {
        Sandbox::with_metering(cache_dir, Metering::FuelAndEpoch)
    }

    /// The in-process sandbox of `fixed` jobs: no fuel in the generated
    /// code, the epoch deadline alone. It runs only tasks whose limits say
    /// [`peergrid_proto::spec::Metering::Fixed`]; results carry no fuel
    /// (`fuel_used` is 0) and its engine ids say `fixed`.
    pub fn fixed(cache_dir: Option<&Path>) -> Result<Sandbox, SandboxError> {
        Sandbox::with_metering(cache_dir, Metering::FixedEpoch)
    }

    /// The sandbox for tasks metered as `metering` says: [`Sandbox::new`]
    /// or [`Sandbox::fixed`].
    pub fn for_metering(
        cache_dir: Option<&Path>,
        metering: peergrid_proto::spec::Metering,
    ) -> Result<Sandbox, SandboxError> {
        match metering {
            peergrid_proto::spec::Metering::Fuel => Sandbox::new(cache_dir),
            peergrid_proto::spec::Metering::Fixed => Sandbox::fixed(cache_dir),
        }
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

    /// The sandbox of a task runner process (`peergrid-runner`), which
    /// runs one task at a time under the daemon's control: `fixed` false
    /// counts fuel in the generated code, `fixed` true counts nothing.
    /// There are no epoch checks (the daemon kills the process at the
    /// deadline and pauses it with signals), so [`TaskHooks::pace`] is never
    /// called and `wall_ms` is not enforced here.
    pub fn for_runner(cache_dir: Option<&Path>, fixed: bool) -> Result<Sandbox, SandboxError> {
        let metering = match fixed {
            true => Metering::RunnerFixed,
            false => Metering::RunnerFuel,
        };
        Sandbox::with_metering(cache_dir, metering)
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
    /// results to record: [`ENGINE_ID`](crate::ENGINE_ID) plus the CPU
    /// architecture, or [`CANONICAL_ENGINE_ID`](crate::CANONICAL_ENGINE_ID)
    /// alone.
    pub fn engine_id(&self, nan: NanMode) -> &str {
        &self.engine(nan).id
    }

    /// Whether a run of `module` in mode `nan` may need its bytes: it is
    /// not linked in memory (the disk cache, if any, is read only given the
    /// bytes, so that a bad file there costs a compilation, not the task).
    pub fn needs_bytes(&self, module: &Hash, nan: NanMode) -> bool {
        !self.lock_cache().contains_key(&(*module, nan))
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
        // A task metered otherwise than this sandbox would run with no fuel
        // cap, or count fuel its job does not want: refused, not guessed.
        if limits.metering.fueled() != self.metering.fueled() && !self.metering.bench_only() {
            return failed(format!(
                "a {:?}-metered task cannot run in this sandbox, which {} fuel",
                limits.metering,
                if self.metering.fueled() {
                    "counts"
                } else {
                    "counts no"
                }
            ));
        }
        let pre = match self.cached_or_compile(module, module_bytes, nan) {
            Ok(pre) => pre,
            Err(e) => return failed(e.to_string()),
        };

        let fueled = self.metering.fueled();
        let charges = HostCharges::default();
        let stdout = CappedOutput::new(
            usize_or_max(limits.max_output_bytes),
            WhenFull::Fail,
            charges.clone(),
        );
        let stderr = CappedOutput::new(MAX_STDERR, WhenFull::KeepEnd, charges.clone());
        let wasi = task_wasi(input, args, seed, &stdout, &stderr, &charges);
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(usize_or_max(limits.memory_bytes))
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .memories(MAX_MEMORIES_PER_TASK as usize)
            .tables(MAX_TABLES_PER_TASK as usize)
            .build();
        hooks.started();
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
        let disk = engine.compiled.as_ref();
        let pre = match disk.and_then(|disk| disk.read(module)) {
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
                if let Some(disk) = disk {
                    disk.write(module, &compiled);
                }
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
        peergrid_os::lock(&self.cache)
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
