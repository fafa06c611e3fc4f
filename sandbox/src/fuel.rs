//! Fuel charged for work the host does for a module, and the memory and
//! table caps that charge growth.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::{ResourceLimiter, StoreLimits, Trap};

/// Fuel charged for every call of a WASI or guest SDK function, on top of
/// the call instruction itself: about what such a call costs in host time
/// (see `docs/sandbox.md`, "Fuel").
pub(crate) const HOST_CALL_FUEL: u64 = 1_000;
/// Fuel charged for every attempt to grow a memory or a table, granted or
/// not: about what a refused `memory.grow` costs in host time.
pub(crate) const GROW_ATTEMPT_FUEL: u64 = 500;
/// Fuel charged for every 64 KiB page a memory is given, at instantiation
/// or by `memory.grow`: about what the kernel spends mapping and zeroing it
/// when the module first touches it, and clearing it when the task ends.
pub(crate) const GROW_PAGE_FUEL: u64 = 10_000;
/// Bytes in a wasm page (what [`GROW_PAGE_FUEL`] is charged per).
const WASM_PAGE_BYTES: usize = 64 * 1024;
/// Bytes the host may copy from a module's stdout and stderr per unit of
/// fuel: about what a copy costs against an instruction.
pub(crate) const OUTPUT_BYTES_PER_FUEL: u64 = 4;
/// Fuel charged for every draw from a module's random generator:
/// wasmtime-wasi's `random_get` draws once per byte, through a trait
/// object, and spends about as long on it as wasm does on 16 instructions.
pub(crate) const RANDOM_DRAW_FUEL: u64 = 16;

/// Fuel charged for work the host does on a module's behalf (calls,
/// growth, bytes moved), counted beside the engine's fuel (see the module
/// documentation). Clones share one count: the WASI context's streams and
/// random generators hold one.
#[derive(Clone, Default)]
pub(crate) struct HostCharges(Arc<AtomicU64>);

impl HostCharges {
    pub(crate) fn charge(&self, fuel: u64) {
        // One thread runs a task; the atomic only makes the count shareable
        // with the WASI context's `Send` parts.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                Some(total.saturating_add(fuel))
            });
    }

    pub(crate) fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The memory and table caps of one task, charging every growth attempt.
pub(crate) struct TaskLimiter {
    pub(crate) limits: StoreLimits,
    pub(crate) charges: HostCharges,
    /// This run's fuel budget: once the charges alone pass it, the run is
    /// out of fuel whatever the engine has left, and growth traps at once.
    /// `u64::MAX` when the sandbox meters no fuel.
    pub(crate) fuel_budget: u64,
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
