//! The workers' door under a crowd: how fast a coordinator process takes
//! QUIC handshakes with a signed Hello, and what an idle authenticated
//! connection costs it in memory. Real QUIC on loopback, from 200
//! addresses (`peergrid_tests::flood`).
//!
//! ```text
//! cargo bench -p peergrid-tests --bench door
//! BENCH_CONNECTIONS=5000 BENCH_RUNS=5 cargo bench -p peergrid-tests --bench door
//! ```
//!
//! Each run starts a fresh coordinator, opens the connections (256
//! handshakes in flight at once) and reads the coordinator's VmRSS before
//! and after. Prints each run and min/median/max. Needs the release
//! binaries (`scripts/test` builds them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use peergrid_proto::JoinString;
use peergrid_tests::flood::Flood;
use peergrid_tests::{Coordinator, cpu_model, cpu_time, rss_kib};

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter.
    let connections = peergrid_tests::env_or("BENCH_CONNECTIONS", 10_000) as usize;
    let runs = (peergrid_tests::env_or("BENCH_RUNS", 3) as usize).max(1);
    println!(
        "door: {connections} idle authenticated connections, {runs} runs, on {}",
        cpu_model()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut rates, mut cpu_rates, mut per_conn) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = Coordinator::start(dir.path()).unwrap();
        let pid = coordinator.pid().unwrap();
        let join: JoinString = coordinator.join.parse().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let before = rss_kib(pid);
        let cpu_before = cpu_time(pid).unwrap().as_secs_f64();
        let flood = rt.block_on(Flood::start(&join, connections, 0)).unwrap();
        let open = flood.hosts_open();
        let cpu = cpu_time(pid).unwrap().as_secs_f64() - cpu_before;
        // Let the handshakes' transient buffers go.
        std::thread::sleep(Duration::from_secs(3));
        let after = rss_kib(pid);
        let rate = connections as f64 / flood.hosts_opened_in.as_secs_f64();
        let kib = after.saturating_sub(before) as f64 / open.max(1) as f64;
        let per_cpu_second = connections as f64 / cpu.max(0.01);
        println!(
            "run {run}: {open} open in {:.1} s = {rate:.0} handshakes+Hello/s ({} tries failed and retried); \
             coordinator CPU {cpu:.1} s = {per_cpu_second:.0} per CPU second; \
             coordinator RSS {} MiB -> {} MiB = {kib:.1} KiB per idle connection",
            flood.hosts_opened_in.as_secs_f64(),
            flood
                .counts
                .retries
                .load(std::sync::atomic::Ordering::Relaxed),
            before / 1024,
            after / 1024,
        );
        rates.push(rate);
        cpu_rates.push(per_cpu_second);
        per_conn.push(kib);
        rt.block_on(flood.stop());
    }
    println!(
        "handshakes+Hello per second, min / median / max: {}",
        peergrid_tests::min_median_max(rates)
    );
    println!(
        "handshakes+Hello per coordinator CPU second, min / median / max: {}",
        peergrid_tests::min_median_max(cpu_rates)
    );
    println!(
        "KiB per idle connection, min / median / max: {}",
        peergrid_tests::min_median_max(per_conn)
    );
}
