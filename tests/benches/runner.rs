//! Per-task start in a warm task runner process, the round trip to the
//! daemon included: a trivial module (cached) sent as a task over the
//! runner's pipe and its report read back, against the same task in the
//! in-process sandbox. Prints figures with the CPU model; asserts nothing
//! about time. Figures and the command live in docs/sandbox-performance.md:
//!
//! ```text
//! cargo build --release --workspace --bins --features peergrid-worker/simulate-fault
//! cargo bench -p peergrid-tests --bench runner
//! ```

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use peergrid_proto::Hash;
use peergrid_proto::runner::{RunTask, RunnerOutcome};
use peergrid_proto::spec::Metering;
use peergrid_proto::wire::TaskLimits;
use peergrid_runner::{Runner, RunnerCommand};
use peergrid_worker::sandbox::{NanMode, RunOutcome, Sandbox, SandboxTask};

/// Tasks per timed batch; the figure is a batch's mean.
const TASKS: u32 = 2000;
/// Timed batches: min, median and max are printed.
const BATCHES: usize = 7;

const LIMITS: TaskLimits = TaskLimits {
    memory_bytes: 64 << 20,
    fuel: 1 << 30,
    max_output_bytes: 1 << 20,
    wall_ms: 60_000,
    metering: Metering::Fuel,
};

fn main() -> Result<()> {
    let module =
        wat::parse_str(r#"(module (func (export "_start")) (memory (export "memory") 1))"#)?;
    let hash = Hash::of(&module);
    println!(
        "task start, a trivial cached module: {} ({}), mean of {TASKS} tasks per batch, {BATCHES} batches",
        peergrid_tests::cpu_model(),
        std::env::consts::ARCH
    );

    let mut runner = Runner::start(&RunnerCommand {
        program: peergrid_tests::bin("peergrid-runner"),
        prefix: Vec::new(),
        cache: None,
    })?;
    for (label, metering) in [("fuel", Metering::Fuel), ("fixed", Metering::Fixed)] {
        let task = RunTask {
            module: hash,
            module_bytes: None,
            input: Vec::new(),
            args: Vec::new(),
            seed: 1,
            limits: TaskLimits { metering, ..LIMITS },
            canonical_nan: false,
            resume: None,
            checkpoint_every_ms: 0,
        };
        let mut batches = Vec::new();
        for batch in 0..=BATCHES {
            let started = Instant::now();
            for _ in 0..TASKS {
                let report = runner.run(task.clone(), &module, |_| {})?;
                if report.outcome != RunnerOutcome::Success(Vec::new()) {
                    bail!("the trivial task failed: {:?}", report.outcome);
                }
            }
            // The first batch warms the runner (compilation) and is not kept.
            if batch > 0 {
                batches.push(micros(started.elapsed()));
            }
        }
        println!(
            "  warm runner, {label:5} mode, round trip included: {} µs (min / median / max)",
            peergrid_tests::min_median_max(batches)
        );
    }

    let sandbox = Sandbox::new(None)?;
    let task = SandboxTask {
        module: &hash,
        module_bytes: &module,
        input: &[],
        args: &[],
        seed: 1,
        limits: &LIMITS,
        nan: NanMode::Fast,
    };
    let mut batches = Vec::new();
    for batch in 0..=BATCHES {
        let started = Instant::now();
        for _ in 0..TASKS {
            if sandbox.run(&task).outcome != RunOutcome::Success(Vec::new()) {
                bail!("the trivial task failed in process");
            }
        }
        if batch > 0 {
            batches.push(micros(started.elapsed()));
        }
    }
    println!(
        "  in-process sandbox (a thread of the worker):  {} µs (min / median / max)",
        peergrid_tests::min_median_max(batches)
    );
    Ok(())
}

fn micros(batch: Duration) -> f64 {
    batch.as_secs_f64() * 1e6 / f64::from(TASKS)
}
