//! What a task's `Store` holds ([`TaskState`]), and every function a
//! module may import: WASI preview 1 with `poll_oneoff` stubbed out, and the
//! guest SDK's host functions (`peergrid_proto::guest`: `checkpoint`,
//! `restore_len`, `restore`, `progress`), which hand checkpoints and
//! progress to the task's [`TaskHooks`]. Every call is charged
//! [`HOST_CALL_FUEL`] (see `fuel.rs`).

use std::sync::Arc;

use peergrid_proto::guest;
use peergrid_proto::limits::MAX_CHECKPOINT;
use wasmtime::{Caller, Engine, Extern, Linker, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::fuel::{HOST_CALL_FUEL, HostCharges, TaskLimiter};
use crate::task::{Checkpoint, SandboxError, TaskHooks};

/// WASI preview 1 errno `notsup`, returned by the `poll_oneoff` stub.
const ERRNO_NOTSUP: i32 = 58;

/// What a task's `Store` holds.
pub(crate) struct TaskState {
    pub(crate) wasi: WasiP1Ctx,
    /// The memory and table caps, which also charge growth.
    pub(crate) limiter: TaskLimiter,
    /// Fuel charged for host work, shared with the limiter, the output
    /// streams and the random generators that do it.
    pub(crate) charges: HostCharges,
    pub(crate) hooks: Arc<dyn TaskHooks>,
    /// The checkpoint this run resumes from, handed to `restore`.
    pub(crate) restored: Option<Checkpoint>,
    /// Fuel the task's earlier runs used, up to the checkpoint it resumes
    /// from (0 on a fresh start).
    pub(crate) fuel_before: u64,
    /// Fuel this run had used when the guest first read its checkpoint:
    /// the start-up it repeats, not counted twice.
    pub(crate) fuel_at_restore: Option<u64>,
    /// The fuel budget this run started with.
    pub(crate) fuel_budget: u64,
}

impl TaskState {
    /// Fuel the task has used, counting from its very first start: what
    /// earlier runs used up to the checkpoint, plus what this run used
    /// since it read the checkpoint. `remaining` is the engine's count;
    /// host charges are added, and this run's share never exceeds its
    /// budget (a run that passed it reports the budget, whenever the
    /// passing was noticed).
    pub(crate) fn fuel_used(&self, remaining: u64) -> u64 {
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
    pub(crate) fn out_of_fuel(&self, remaining: u64) -> bool {
        self.charges.total() > remaining
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

/// A linker offering WASI preview 1, with `poll_oneoff` replaced by a stub
/// (the real one sleeps in host code, where neither fuel nor the epoch
/// deadline can stop it, and sleeping means nothing under virtual clocks),
/// and the guest SDK.
pub(crate) fn wasi_linker(engine: &Engine) -> Result<Linker<TaskState>, SandboxError> {
    let engine_error = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
    let mut linker = Linker::new(engine);
    // wasmtime-wasi asks for the context once per WASI call: that is where
    // the call is charged. The charge is checked at the next SDK call,
    // epoch tick or the end of the run (see `fuel.rs`).
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
            // An engine without fuel (a `fixed` job) has used none.
            let fuel_used = match caller.get_fuel() {
                Ok(remaining) => caller.data().fuel_used(remaining),
                Err(_) => 0,
            };
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
        let used = match caller.get_fuel() {
            Ok(remaining) => caller
                .data()
                .fuel_budget
                .saturating_sub(remaining)
                .saturating_add(caller.data().charges.total()),
            // An engine without fuel (a `fixed` job) counts none.
            Err(_) => 0,
        };
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
