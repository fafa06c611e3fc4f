//! End-to-end throughput: validated work units per second through a real
//! coordinator process, over real QUIC on loopback, with N simulated
//! workers that answer instantly (output = BLAKE3 of the input), so the
//! figure measures the grid, not the science.
//!
//! ```text
//! cargo bench -p peergrid-tests --bench throughput
//! BENCH_UNITS=100000 BENCH_WORKERS=8 BENCH_BATCH=128 cargo bench -p peergrid-tests --bench throughput
//! BENCH_KEEP=1 cargo bench -p peergrid-tests --bench throughput   # keeps the database
//! ```
//!
//! Prints units/s, tasks/s, the coordinator's peak memory (VmHWM) and
//! CPU time, and the load generator's CPU time. Needs the release
//! binaries (`scripts/test` or `cargo build --release --bins` builds them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use peergrid_client::Client;
use peergrid_proto::spec::{JobSettings, JobSubmission, UnitSpec};
use peergrid_proto::wire::{Exchange, HostFacts, Outcome, Reply, Request, TaskReport};
use peergrid_proto::{Hash, JoinString};
use peergrid_tests::{Coordinator, lyapunov_wasm};
use peergrid_worker::net;

/// (utime + stime) in seconds, and VmHWM in KiB, of a process.
fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command: state is index 0, utime 11, stime 12.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

/// CPU seconds per thread name of a process (tokio workers summed).
fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for t in tasks.flatten() {
        let path = t.path();
        let name = std::fs::read_to_string(path.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        *by_name.entry(name).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    by_name
}

fn self_cpu() -> f64 {
    proc_usage(std::process::id()).0
}

fn main() {
    let units = peergrid_tests::env_or("BENCH_UNITS", 50_000) as usize;
    let workers = peergrid_tests::env_or("BENCH_WORKERS", 8) as usize;
    let batch = peergrid_tests::env_or("BENCH_BATCH", 128) as u32;
    let quorum = peergrid_tests::env_or("BENCH_QUORUM", 2) as u32;

    let dir = tempfile::tempdir().unwrap();
    // The simulated workers are fresh identities asking for big batches:
    // lift the limits a real new host meets (docs/security.md), which the
    // benchmark does not measure.
    let coordinator = Coordinator::start_with(
        dir.path(),
        &[
            "--new-host-cores",
            "1024",
            "--in-flight-per-core",
            "1024",
            "--new-host-quota-per-core",
            "1000000",
            // 8 hosts of 64 cores at the default 1 024 tasks per core and
            // day stop at about 262 000 units.
            "--daily-quota-per-core",
            "1000000",
        ],
    )
    .unwrap();
    let pid = coordinator.pid().unwrap();
    let client = Client::new(&coordinator.http, Some(coordinator.token.clone()));

    // A job of `units` distinct small inputs.
    let module = std::fs::read(lyapunov_wasm()).unwrap();
    let mut blobs = vec![(Hash::of(&module), module.clone())];
    let mut unit_specs = Vec::with_capacity(units);
    for i in 0..units {
        let input = format!("{{\"unit\":{i}}}").into_bytes();
        let h = Hash::of(&input);
        unit_specs.push(UnitSpec {
            name: i.to_string(),
            input: h,
        });
        blobs.push((h, input));
    }
    let t = Instant::now();
    client.upload(&blobs).unwrap();
    let upload = t.elapsed();
    let t = Instant::now();
    let job = client
        .submit(&JobSubmission {
            plots: Vec::new(),
            name: "throughput".into(),
            module: Hash::of(&module),
            args: vec![],
            settings: JobSettings {
                quorum,
                ..JobSettings::default()
            },
            units: unit_specs,
            validator: Default::default(),
            terms: Default::default(),
            signature: {
                let r = coordinator.researcher().unwrap();
                peergrid_proto::signing::sign_module(
                    &r.key,
                    &r.endorsement,
                    &Hash::of(&module),
                    &[],
                )
            },
        })
        .unwrap();
    let submit = t.elapsed();
    println!(
        "setup: uploaded {} blobs in {:.2} s ({:.0}/s), submitted {units} units in {:.2} s",
        blobs.len(),
        upload.as_secs_f64(),
        blobs.len() as f64 / upload.as_secs_f64(),
        submit.as_secs_f64()
    );

    let join: JoinString = coordinator.join.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));
    let exchanges = Arc::new(AtomicU64::new(0));
    let (cpu0, _) = proc_usage(pid);
    let threads0 = thread_cpu(pid);
    let self0 = self_cpu();
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let join = join.clone();
            let done = done.clone();
            let issued = issued.clone();
            let exchanges = exchanges.clone();
            rt.spawn(async move {
                let key = SigningKey::from_bytes(&[w as u8 + 1; 32]);
                let facts = HostFacts {
                    cores: 64,
                    ..HostFacts::default()
                };
                // Each simulated worker on its own network, as volunteers are.
                let from = peergrid_tests::loopback_network();
                let session = net::connect(&join, &key, facts, Some(from)).await.unwrap();
                let mut reports = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let req = Request::Exchange(Exchange {
                        reports: std::mem::take(&mut reports),
                        want: batch,
                        returned: vec![],
                        held: None,
                    });
                    let reply = match net::request(&session.connection, &req).await.unwrap() {
                        Reply::Exchange(r) => r,
                        other => panic!("{other:?}"),
                    };
                    exchanges.fetch_add(1, Ordering::Relaxed);
                    issued.fetch_add(reply.tasks.len() as u64, Ordering::Relaxed);
                    for t in &reply.tasks {
                        reports.push(TaskReport {
                            unit: t.unit,
                            outcome: Outcome::Success(
                                blake3::hash(&t.input).to_hex().as_bytes().to_vec(),
                            ),
                            fuel_used: 1,
                            elapsed_ms: 0,
                            engine: "simulated".into(),
                            resumed: false,
                        });
                    }
                    if reply.tasks.is_empty() && reports.is_empty() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    let mut peak_rss = 0;
    let mut status_ms = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        peak_rss = peak_rss.max(proc_usage(pid).1);
        let t = Instant::now();
        let s = client.status(job).unwrap().status;
        status_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if s.finished {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no finish in 10 minutes: {s:?}"
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let (cpu1, hwm) = proc_usage(pid);
    let threads1 = thread_cpu(pid);
    let self1 = self_cpu();
    let validated = client.status(job).unwrap().status.validated;
    println!(
        "workers: {workers} simulated over QUIC, batch {batch}, quorum {quorum}, on {}",
        peergrid_tests::cpu_model()
    );
    println!(
        "validated: {validated} units in {elapsed:.2} s = {:.0} validated units/s",
        validated as f64 / elapsed
    );
    println!(
        "tasks issued: {} ({:.0}/s) in {} exchanges",
        issued.load(Ordering::Relaxed),
        issued.load(Ordering::Relaxed) as f64 / elapsed,
        exchanges.load(Ordering::Relaxed)
    );
    println!(
        "coordinator: {:.2} s CPU ({:.0} % of one core), peak RSS {} MiB",
        cpu1 - cpu0,
        100.0 * (cpu1 - cpu0) / elapsed,
        hwm.max(peak_rss) / 1024
    );
    let breakdown: Vec<String> = threads1
        .iter()
        .map(|(name, t)| (name, t - threads0.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, t)| *t >= 0.01)
        .map(|(name, t)| format!("{name} {t:.2} s"))
        .collect();
    println!("coordinator CPU by thread: {}", breakdown.join(", "));
    status_ms.sort_by(f64::total_cmp);
    println!(
        "job status while it ran: {} calls, {:.1} / {:.1} / {:.1} ms (min / median / max)",
        status_ms.len(),
        status_ms[0],
        status_ms[status_ms.len() / 2],
        status_ms[status_ms.len() - 1]
    );
    println!(
        "load generator (this process): {:.2} s CPU ({:.0} % of one core)",
        self1 - self0,
        100.0 * (self1 - self0) / elapsed
    );
    time_pages(&coordinator, job, validated);
    // BENCH_KEEP=1 keeps the coordinator's folder (its database) to study.
    if std::env::var_os("BENCH_KEEP").is_some() {
        drop(coordinator);
        println!("kept: {}", dir.keep().display());
    }
}

/// Every dashboard page and status call over the finished job's dataset:
/// min / median / max of 5 requests each (exports, which stream every
/// row, are not pages).
fn time_pages(coordinator: &Coordinator, job: u64, rows: u64) {
    let agent = ureq::Agent::new_with_defaults();
    let pages = [
        "/".to_string(),
        "/jobs".into(),
        format!("/jobs/{job}"),
        format!("/jobs/{job}/failed"),
        "/dataset".into(),
        "/volunteers".into(),
        "/hosts".into(),
        "/hosts/1".into(),
        "/teams".into(),
        "/api/v1/overview".into(),
        "/api/v1/jobs".into(),
        format!("/api/v1/jobs/{job}"),
        format!("/api/v1/jobs/{job}/progress"),
        "/api/v1/dataset".into(),
        "/api/v1/hosts".into(),
        "/api/v1/throughput".into(),
        "/metrics".into(),
    ];
    println!("pages over {rows} dataset rows (ms, min / median / max of 5):");
    let mut slowest = 0f64;
    for page in &pages {
        let mut ms: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let mut resp = agent
                    .get(format!("{}{page}", coordinator.http))
                    .call()
                    .unwrap_or_else(|e| panic!("GET {page}: {e}"));
                resp.body_mut().read_to_vec().unwrap();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        slowest = slowest.max(ms[2]);
        println!("  {page:<28} {:8.1} {:8.1} {:8.1}", ms[0], ms[2], ms[4]);
    }
    println!("slowest page (median): {slowest:.1} ms (goal < 50 ms at 1 000 000 rows)");
}
