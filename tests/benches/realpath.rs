//! The real path: a `peergrid-coordinator serve` process and real
//! `peergrid-worker` processes (task runners and all) over QUIC on
//! loopback, a Lyapunov job of many tiny units (a few iterations each, so
//! the grid's overhead is what is timed, not the science). Prints validated
//! units per second from submission to the job's end, and each side's CPU
//! time per task, with the CPU model; asserts nothing about time.
//!
//! ```text
//! cargo build --release --workspace --bins --features peergrid-worker/simulate-fault,peergrid-runner/simulate-fault
//! cargo bench -p peergrid-tests --bench realpath
//! BENCH_UNITS=2000 BENCH_WORKERS=2 cargo bench -p peergrid-tests --bench realpath
//! ```

use std::time::{Duration, Instant};

use anyhow::Result;
use peergrid_tests::{Coordinator, JobOptions, children, cpu_time, lyapunov_job};

/// CPU time of `pid` and of its children now alive (a worker's task
/// runners).
fn with_children(pid: u32) -> Duration {
    let own = cpu_time(pid).unwrap_or_default();
    children(pid)
        .into_iter()
        .map(|c| cpu_time(c).unwrap_or_default())
        .sum::<Duration>()
        + own
}

fn main() -> Result<()> {
    let units = peergrid_tests::env_or("BENCH_UNITS", 2000) as usize;
    let workers = peergrid_tests::env_or("BENCH_WORKERS", 2) as usize;
    let dir = tempfile::tempdir()?;
    let c = Coordinator::start(dir.path())?;
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units,
            iterations: 10,
            quorum: 2,
            deadline_secs: 600,
        },
    )?;
    let pool = c.workers(dir.path(), "w", workers)?;
    // Let the workers connect and start their runners before the clock.
    std::thread::sleep(Duration::from_secs(3));
    let coordinator_pid = c.pid().expect("the coordinator runs");
    let cpu_before: Vec<Duration> = pool.iter().map(|w| with_children(w.pid())).collect();
    let coordinator_before = cpu_time(coordinator_pid)?;

    let started = Instant::now();
    let job = c.submit(&spec)?;
    let finished = c.wait_finished(job, Duration::from_secs(1800))?;
    let took = started.elapsed();
    assert_eq!(
        finished["validated"].as_u64(),
        Some(units as u64),
        "{finished}"
    );

    let tasks = (units * 2) as f64;
    let worker_cpu: Duration = pool
        .iter()
        .zip(&cpu_before)
        .map(|(w, before)| with_children(w.pid()).saturating_sub(*before))
        .sum();
    let coordinator_cpu = cpu_time(coordinator_pid)?.saturating_sub(coordinator_before);
    println!(
        "real path: {workers} worker processes (1 slot each, task runners), quorum 2, on {}",
        peergrid_tests::cpu_model()
    );
    println!(
        "validated: {units} units in {:.2} s = {:.0} validated units/s (from submission, upload included)",
        took.as_secs_f64(),
        units as f64 / took.as_secs_f64()
    );
    println!(
        "workers: {:.2} s CPU for {} tasks = {:.2} ms per task (runners included)",
        worker_cpu.as_secs_f64(),
        tasks,
        worker_cpu.as_secs_f64() * 1000.0 / tasks
    );
    println!(
        "coordinator: {:.2} s CPU = {:.2} ms per validated unit",
        coordinator_cpu.as_secs_f64(),
        coordinator_cpu.as_secs_f64() * 1000.0 / units as f64
    );
    Ok(())
}
