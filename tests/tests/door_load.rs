//! The workers' door under a crowd: 10,000 idle authenticated QUIC
//! connections and a churn of connections that never say Hello, while
//! three real workers finish a job. Before the door had rooms of its own
//! (`seats.rs`), the crowd filled the one cap of 10,000 and every real
//! worker was refused for as long as it stayed.
//!
//! Figures (memory per idle connection, handshakes per second) come from
//! the `door` benchmark, never from this test.

use std::time::Duration;

use peergrid_proto::JoinString;
use peergrid_tests::flood::Flood;
use peergrid_tests::{Coordinator, JobOptions, lyapunov_job};

#[test]
fn ten_thousand_idle_connections_never_shut_out_real_workers() {
    let dir = tempfile::tempdir().unwrap();
    // Idle hosts are not closed for idleness during the test: only
    // newcomers may take their seats.
    let coordinator = Coordinator::start_with(dir.path(), &["--idle-secs", "3600"]).unwrap();
    let units = 12;
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let join: JoinString = coordinator.join.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // 10,000 hosts from 200 addresses, each saying Hello and then
        // nothing; 1,100 strangers from 22 more that never say Hello.
        let flood = Flood::start(&join, 10_000, 1_100).await.unwrap();
        assert_eq!(
            flood.hosts_open(),
            10_000,
            "the crowd could not open its connections: {} failed, first failures: {:?}",
            flood
                .counts
                .failed
                .load(std::sync::atomic::Ordering::Relaxed),
            flood.counts.errors.lock().unwrap()
        );
        eprintln!(
            "10,000 idle hosts connected in {:?} ({} tries failed)",
            flood.hosts_opened_in,
            flood
                .counts
                .retries
                .load(std::sync::atomic::Ordering::Relaxed)
        );

        // Every stranger in too (1,100 for a room of 1,024: they push
        // each other out) before the workers come.
        let strangers = &flood.counts.stranger_handshakes;
        tokio::task::block_in_place(|| {
            peergrid_tests::wait_for(
                "the strangers' handshakes",
                Duration::from_secs(120),
                || (strangers.load(std::sync::atomic::Ordering::Relaxed) >= 1_100).then_some(()),
            )
        })
        .unwrap();

        let workers = coordinator.workers(dir.path(), "w", 3).unwrap();
        let status = tokio::task::block_in_place(|| {
            coordinator.wait_finished(job, Duration::from_secs(240))
        })
        .unwrap();
        assert_eq!(status["validated"], units, "{status}");

        // No worker was ever refused or cut off: each connected once and
        // never had to retry. Two workers can finish the job before the
        // third's handshake completes on a busy machine, so wait for it.
        for w in &workers {
            tokio::task::block_in_place(|| {
                peergrid_tests::wait_for(
                    "each worker's connection",
                    Duration::from_secs(60),
                    || {
                        let lines = w.log_lines().ok()?;
                        lines
                            .iter()
                            .any(|l| l.contains(" connected") || l.contains("retrying in"))
                            .then_some(())
                    },
                )
            })
            .unwrap();
        }
        for w in &workers {
            let lines = w.log_lines().unwrap();
            let retries: Vec<_> = lines.iter().filter(|l| l.contains("retrying in")).collect();
            assert!(retries.is_empty(), "a worker was refused: {retries:#?}");
            assert_eq!(
                lines.iter().filter(|l| l.contains(" connected")).count(),
                1,
                "a worker connected more than once"
            );
        }
        // The door was full: each worker took the seat of an idle host,
        // and the crowd is still there.
        let evicted = flood
            .counts
            .hosts_evicted
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            evicted >= 3,
            "only {evicted} idle hosts gave way to 3 workers"
        );
        assert!(
            flood.hosts_open() >= 9_900,
            "the crowd fell to {}",
            flood.hosts_open()
        );
        flood.stop().await;
    });
}
