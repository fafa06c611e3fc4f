//! Code signing end to end: the coordinator refuses unsigned or
//! unendorsed submissions, and workers refuse what a compromised
//! coordinator host slips into its own database.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ed25519_dalek::SigningKey;
use peergrid_proto::Hash;
use peergrid_proto::signing::{self, ModuleSignature};
use peergrid_tests::{Coordinator, JobOptions, Worker, lyapunov_job};

#[test]
fn the_coordinator_refuses_a_job_signed_by_an_unendorsed_key() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 2,
            ..JobOptions::default()
        },
    )
    .unwrap();
    // A key endorsed by some other key than the project's.
    let mallory = SigningKey::from_bytes(&[3; 32]);
    std::fs::write(
        dir.path().join("mallory.key"),
        hex::encode(mallory.to_bytes()),
    )
    .unwrap();
    let forged = signing::endorse(
        &SigningKey::from_bytes(&[4; 32]),
        &mallory.verifying_key().to_bytes(),
        "Mallory",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mallory.endorsement"),
        serde_json::to_string(&forged).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(peergrid_tests::bin("peergrid"))
        .env("PEERGRID_SERVER", &coordinator.http)
        .env("PEERGRID_TOKEN", &coordinator.token)
        .args(["job", "submit", &spec.to_string_lossy(), "--key"])
        .arg(dir.path().join("mallory.key"))
        .arg("--endorsement")
        .arg(dir.path().join("mallory.endorsement"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("403") && msg.contains("endorsement"), "{msg}");
    assert!(
        coordinator.cli(&["job", "list"]).stdout.is_empty(),
        "no job was stored"
    );
}

/// The coordinator host is compromised: with write access to its own
/// database it changes one job's arguments, re-signs another with an
/// unendorsed key, and forges an endorsement for a third. Workers refuse
/// all three; the honest job next to them completes.
#[test]
fn workers_refuse_what_a_compromised_coordinator_signs() {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Coordinator::start(dir.path()).unwrap();
    let mut jobs = Vec::new();
    for i in 0..4 {
        let sub = dir.path().join(format!("job{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let spec = lyapunov_job(
            &sub,
            &JobOptions {
                units: 2,
                ..JobOptions::default()
            },
        )
        .unwrap();
        jobs.push(coordinator.submit(&spec).unwrap());
    }
    let quic = coordinator.quic.clone();
    coordinator.kill();

    let db = rusqlite::Connection::open(coordinator.data.join("coordinator.sqlite")).unwrap();
    let module: Vec<u8> = db
        .query_row(
            "SELECT module_hash FROM jobs WHERE id = ?1",
            [jobs[0]],
            |r| r.get(0),
        )
        .unwrap();
    let module = Hash(module.try_into().unwrap());
    let project = SigningKey::from_bytes(&[0; 32]); // not the project key: the host does not have it offline
    let stranger = SigningKey::from_bytes(&[5; 32]);
    let real: ModuleSignature = serde_json::from_str(
        &db.query_row::<String, _, _>(
            "SELECT signature_json FROM jobs WHERE id = ?1",
            [jobs[0]],
            |r| r.get(0),
        )
        .unwrap(),
    )
    .unwrap();
    // 1. Tampered arguments under the original signature.
    db.execute(
        "UPDATE jobs SET args_json = '[\"--scale\",\"2\"]' WHERE id = ?1",
        [jobs[1]],
    )
    .unwrap();
    // 2. Signed by an unendorsed key, reusing the real endorsement.
    let sig = signing::sign_module(&stranger, &real.endorsement, &module, &[]);
    db.execute(
        "UPDATE jobs SET signature_json = ?1 WHERE id = ?2",
        rusqlite::params![serde_json::to_string(&sig).unwrap(), jobs[2]],
    )
    .unwrap();
    // 3. A forged endorsement.
    let forged =
        signing::endorse(&project, &stranger.verifying_key().to_bytes(), "Mallory").unwrap();
    let sig = signing::sign_module(&stranger, &forged, &module, &[]);
    db.execute(
        "UPDATE jobs SET signature_json = ?1 WHERE id = ?2",
        rusqlite::params![serde_json::to_string(&sig).unwrap(), jobs[3]],
    )
    .unwrap();
    drop(db);

    coordinator.serve(&quic).unwrap();
    let _workers: Vec<Worker> = coordinator.workers(dir.path(), "w", 3).unwrap();
    let honest = coordinator
        .wait_finished(jobs[0], Duration::from_secs(60))
        .unwrap();
    assert_eq!(honest["validated"], 2, "{honest}");
    for (job, what) in
        jobs[1..]
            .iter()
            .zip(["tampered arguments", "unendorsed key", "forged endorsement"])
    {
        let s = coordinator
            .wait_finished(*job, Duration::from_secs(60))
            .unwrap();
        assert_eq!(s["validated"], 0, "{what}: {s}");
        assert_eq!(s["failed"], 2, "{what}: {s}");
        for f in s["failed_units"].as_array().unwrap() {
            assert!(
                f["reason"]
                    .as_str()
                    .unwrap()
                    .contains("refused by the worker"),
                "{what}: {f}"
            );
        }
    }
    // The module never ran for a refused job: no fuel was spent on it.
    let db = coordinator.db();
    let fuel: i64 = db
        .query_row(
            "SELECT coalesce(sum(r.fuel), 0) FROM results r JOIN units u ON u.id = r.unit_id WHERE u.job_id != ?1",
            [jobs[0]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(fuel, 0);
}

/// A compromised coordinator host re-signs a job of a module nobody
/// endorsed: workers check the signature before asking for the module, so
/// its bytes never reach a volunteer's disk.
#[test]
fn workers_never_fetch_a_module_they_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Coordinator::start(dir.path()).unwrap();
    let spec = peergrid_tests::chain_job(
        dir.path(),
        "evil",
        &["3 10 1".to_string()],
        "quorum = 1\nmax_error_results = 1",
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let quic = coordinator.quic.clone();
    coordinator.kill();

    let db = rusqlite::Connection::open(coordinator.data.join("coordinator.sqlite")).unwrap();
    let (module, real): (Vec<u8>, String) = db
        .query_row(
            "SELECT module_hash, signature_json FROM jobs WHERE id = ?1",
            [job],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let module = Hash(module.try_into().unwrap());
    let real: ModuleSignature = serde_json::from_str(&real).unwrap();
    let stranger = SigningKey::from_bytes(&[5; 32]);
    let sig = signing::sign_module(&stranger, &real.endorsement, &module, &[]);
    db.execute(
        "UPDATE jobs SET signature_json = ?1 WHERE id = ?2",
        rusqlite::params![serde_json::to_string(&sig).unwrap(), job],
    )
    .unwrap();
    drop(db);

    coordinator.serve(&quic).unwrap();
    let worker =
        Worker::start(&coordinator.join, &dir.path().join("w"), &["--cores", "1"]).unwrap();
    let s = coordinator
        .wait_finished(job, Duration::from_secs(60))
        .unwrap();
    assert_eq!(s["failed"], 1, "{s}");
    let reason = s["failed_units"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("refused by the worker"), "{reason}");
    let cached = worker.data.join("modules").join(format!("{module}.wasm"));
    assert!(
        !cached.exists(),
        "the worker fetched and cached the module of a task it refused: {}",
        cached.display()
    );
}
