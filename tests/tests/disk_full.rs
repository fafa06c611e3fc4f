//! A coordinator whose disk fills up: its data folder on a small tmpfs,
//! filled by a file beside it while a job runs. Below the free-space
//! reserve it must refuse growth (new hosts, uploads, results) with a
//! clear error and keep serving reads and known hosts' exchanges; once
//! space is back, the job finishes with nothing lost.
//!
//! Needs root (to mount the tmpfs); CI runs as root.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use peergrid_proto::JoinString;
use peergrid_proto::wire::{ErrorCode, Exchange, Reply, Request};
use peergrid_tests::{Coordinator, JobOptions, loopback_network, lyapunov_job, lyapunov_native};
use peergrid_worker::net;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mib: u64) -> Tmpfs {
        assert!(
            rustix::process::geteuid().is_root(),
            "the disk-full test mounts a tmpfs and needs root: run it as root (CI does)"
        );
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .expect("running mount (util-linux)");
        assert!(
            out.status.success(),
            "mounting a tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    fn free_bytes(&self) -> u64 {
        let s = rustix::fs::statvfs(&self.0).unwrap();
        s.f_bavail * s.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn hello(join: &JoinString, seed: u8, from: IpAddr) -> Result<net::Session, net::NetError> {
    peergrid_tests::connect_host(join, seed, 1, from).await
}

#[test]
fn below_the_reserve_growth_is_refused_service_goes_on_and_nothing_is_lost() {
    let work = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&work.path().join("disk"), 64);
    let coordinator = Coordinator::start_with(&disk.0, &["--storage-reserve-mb", "16"]).unwrap();
    let join: JoinString = coordinator.join.parse().unwrap();
    let units = 24;
    let spec = lyapunov_job(
        work.path(),
        &JobOptions {
            units,
            iterations: 400_000,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let rt = runtime();
    // A host the coordinator knows before the disk fills.
    let known_from = loopback_network();
    rt.block_on(hello(&join, 7, known_from)).unwrap();
    let workers = coordinator.workers(work.path(), "w", 2).unwrap();
    peergrid_tests::wait_for("a first validated unit", Duration::from_secs(120), || {
        let s = coordinator.status(job).ok()?;
        (s["validated"].as_u64()? >= 1).then_some(())
    })
    .unwrap();

    // Fill the disk to 8 MiB free: below the 16 MiB reserve.
    let filler = disk.0.join("filler");
    let size = disk.free_bytes().saturating_sub(8 << 20);
    std::fs::write(&filler, vec![0u8; size as usize]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let low_since = Instant::now();

    rt.block_on(async {
        // A new host is refused, saying why.
        match hello(&join, 8, loopback_network()).await {
            Err(net::NetError::Refused(e)) => {
                assert_eq!(e.code, ErrorCode::Busy, "{}", e.message);
                assert!(e.message.contains("short of disk space"), "{}", e.message);
            }
            Err(e) => panic!("expected Busy, got {e}"),
            Ok(_) => panic!("a new host got in below the reserve"),
        }
        // A known host comes back and is served: no results taken, no
        // work sent, told when to ask again.
        let known = hello(&join, 7, known_from).await.unwrap();
        let req = Request::Exchange(Exchange {
            reports: vec![],
            want: 4,
            returned: vec![],
            held: Some(vec![]),
        });
        match net::request(&known.connection, &req).await.unwrap() {
            Reply::Exchange(r) => {
                assert!(r.tasks.is_empty(), "work sent below the reserve");
                assert!(r.retry_after_ms >= 5_000, "{}", r.retry_after_ms);
            }
            other => panic!("{other:?}"),
        }
    });
    // Uploads and submissions are refused with the reason.
    let second = lyapunov_job(&work.path().join("second"), &JobOptions::default()).unwrap();
    let out = coordinator.cli(&["job", "submit", second.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a job was taken below the reserve");
    assert!(stderr.contains("short of disk space"), "{stderr}");
    // Reads are served.
    let status = coordinator.status(job).unwrap();
    let validated_low = status["validated"].as_u64().unwrap();
    assert!(validated_low < units as u64, "{status}");
    // The workers keep computing, but no result is taken while low: they
    // hold finished reports the coordinator has not acknowledged.
    let unsettled = || -> i64 {
        workers
            .iter()
            .map(|w| {
                w.db()
                    .unwrap()
                    .query_row("SELECT count(*) FROM reports", [], |r| r.get::<_, i64>(0))
                    .unwrap()
            })
            .sum()
    };
    peergrid_tests::wait_for(
        "a report held back by a worker",
        Duration::from_secs(60),
        || (unsettled() > 0).then_some(()),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(8).saturating_sub(low_since.elapsed()));
    let status = coordinator.status(job).unwrap();
    assert_eq!(
        status["validated"].as_u64().unwrap(),
        validated_low,
        "{status}"
    );

    assert!(unsettled() > 0, "held-back reports went missing while low");
    // Space comes back: the job finishes, every unit once and correct.
    std::fs::remove_file(&filler).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(180))
        .unwrap();
    assert_eq!(status["validated"], units, "{status}");
    assert_eq!(status["failed"], 0, "{status}");
    let inputs = peergrid_tests::inputs_by_name(work.path()).unwrap();
    let rows = coordinator.dataset(job).unwrap();
    assert_eq!(rows.len(), units);
    for row in rows {
        let name = row["name"].as_str().unwrap();
        let want = lyapunov_native(&inputs[name]).unwrap();
        let got = row["output"].as_str().unwrap();
        assert_eq!(got.as_bytes(), &want[..], "unit {name}");
    }
    let log = coordinator.log().unwrap();
    assert!(log.contains("disk space below the reserve"), "{log}");
    assert!(
        !log.contains("storing results failed"),
        "a commit failed:\n{log}"
    );
    drop(workers);
    drop(coordinator);
}
