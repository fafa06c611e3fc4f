//! Strangers' bytes: malformed frames, a wrong ALPN, broken job specs, a
//! wrong token, a module that is not wasm. Each gets a clear error and
//! the coordinator keeps serving everyone else.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ed25519_dalek::SigningKey;
use peergrid_proto::JoinString;
use peergrid_proto::codec;
use peergrid_proto::wire::{ErrorCode, Exchange, HostFacts, Reply, Request};
use peergrid_tests::{Coordinator, JobOptions, Worker, job_spec, lyapunov_job};
use peergrid_worker::net;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn error_code(reply: &[u8]) -> (ErrorCode, String) {
    match codec::decode::<Reply>(reply).unwrap() {
        Reply::Error(e) => (e.code, e.message),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn malformed_frames_and_wrong_alpn_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let join: JoinString = coordinator.join.parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        // Garbage instead of Hello: an error naming the problem, then the
        // connection is closed.
        let (_ep, conn) = net::connect_raw(&join, peergrid_proto::wire::ALPN, None)
            .await
            .unwrap();
        let reply = net::request_bytes(&conn, b"\xff\xff\xff\xffnot bincode")
            .await
            .unwrap();
        let (code, msg) = error_code(&reply);
        assert_eq!(code, ErrorCode::Malformed);
        assert!(msg.contains("malformed"), "{msg}");

        // A well-formed request that is not Hello first.
        let (_ep, conn) = net::connect_raw(&join, peergrid_proto::wire::ALPN, None)
            .await
            .unwrap();
        let ex = Request::Exchange(Exchange {
            reports: vec![],
            want: 1,
            returned: vec![],
            held: None,
        });
        let reply = net::request_bytes(&conn, &codec::encode(&ex).unwrap())
            .await
            .unwrap();
        assert_eq!(error_code(&reply).0, ErrorCode::Unauthenticated);

        // A forged Hello: someone else's key, our signature.
        let key = SigningKey::from_bytes(&[7; 32]);
        let session = net::connect(&join, &key, HostFacts::default(), None)
            .await
            .unwrap();
        let hello = peergrid_proto::wire::Hello {
            host_key: SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes(),
            timestamp_ms: peergrid_os::now_ms(),
            signature: vec![0; 64],
            facts: HostFacts::default(),
            worker_version: "forger".into(),
            account: None,
        };
        let (_ep, conn) = net::connect_raw(&join, peergrid_proto::wire::ALPN, None)
            .await
            .unwrap();
        let reply = net::request_bytes(&conn, &codec::encode(&Request::Hello(hello)).unwrap())
            .await
            .unwrap();
        let (code, msg) = error_code(&reply);
        assert_eq!(code, ErrorCode::Unauthenticated);
        assert!(msg.contains("signature"), "{msg}");

        // After Hello, a malformed frame is answered and the same
        // connection keeps working.
        let reply = net::request_bytes(&session.connection, b"\x02garbage")
            .await
            .unwrap();
        assert_eq!(error_code(&reply).0, ErrorCode::Malformed);
        let reply = net::request(&session.connection, &ex).await.unwrap();
        assert!(matches!(reply, Reply::Exchange(_)), "{reply:?}");

        // A report for a unit this host was never given is refused by name.
        let ex = Request::Exchange(Exchange {
            reports: vec![peergrid_proto::wire::TaskReport {
                unit: 999_999,
                outcome: peergrid_proto::wire::Outcome::Success(b"forged".to_vec()),
                fuel_used: 1,
                elapsed_ms: 1,
                engine: "forged".into(),
                resumed: false,
            }],
            want: 0,
            returned: vec![],
            held: None,
        });
        match net::request(&session.connection, &ex).await.unwrap() {
            Reply::Exchange(r) => {
                assert!(r.accepted.is_empty());
                assert_eq!(r.rejected.len(), 1);
                assert!(
                    r.rejected[0].1.contains("finished or unknown"),
                    "{:?}",
                    r.rejected
                );
            }
            other => panic!("{other:?}"),
        }

        // A wrong ALPN fails the handshake with a clear TLS error.
        let err = net::connect_raw(&join, b"http/1.1", None)
            .await
            .expect_err("wrong ALPN must fail");
        let text = err.to_string();
        assert!(
            text.contains("protocol") || text.contains("ALPN") || text.contains("alert"),
            "{text}"
        );

        // A join string with the wrong fingerprint is refused by the worker side.
        let mut wrong = join.clone();
        wrong.cert_sha256[0] ^= 1;
        let err = net::connect_raw(&wrong, peergrid_proto::wire::ALPN, None)
            .await
            .expect_err("wrong pin must fail");
        assert!(
            err.to_string().contains("certificate") || err.to_string().contains("fingerprint"),
            "{err}"
        );
    });

    // The server still serves others: a real worker completes a job.
    let _w: Vec<Worker> = coordinator.workers(dir.path(), "w", 2).unwrap();
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 4,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(60))
        .unwrap();
    assert_eq!(status["validated"], 4);
}

#[test]
fn broken_specs_wrong_tokens_and_non_wasm_modules_are_refused_clearly() {
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
    let good = std::fs::read_to_string(&spec).unwrap();

    let stderr = |out: std::process::Output| {
        assert!(!out.status.success(), "expected failure");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // A broken spec: the message names the field.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, good.replace("quorum = 2", "quorum = 0")).unwrap();
    let msg = stderr(coordinator.cli(&["job", "submit", &broken.to_string_lossy()]));
    assert!(msg.contains("quorum"), "{msg}");
    std::fs::write(&broken, "name = \"x\"\nmodule = [").unwrap();
    let msg = stderr(coordinator.cli(&["job", "submit", &broken.to_string_lossy()]));
    assert!(msg.contains("TOML"), "{msg}");
    std::fs::write(
        &broken,
        good.replace("dir = \"inputs\"", "dir = \"nowhere\""),
    )
    .unwrap();
    let msg = stderr(coordinator.cli(&["job", "submit", &broken.to_string_lossy()]));
    assert!(msg.contains("nowhere"), "{msg}");

    // A wrong token.
    let out = std::process::Command::new(peergrid_tests::bin("peergrid"))
        .env("PEERGRID_SERVER", &coordinator.http)
        .env("PEERGRID_KEY", &coordinator.researcher_key)
        .env("PEERGRID_ENDORSEMENT", &coordinator.researcher_endorsement)
        .args([
            "--token",
            "pgt_wrong",
            "job",
            "submit",
            &spec.to_string_lossy(),
        ])
        .output()
        .unwrap();
    let msg = stderr(out);
    assert!(
        msg.contains("401") && msg.contains("wrong researcher token"),
        "{msg}"
    );

    // A module that is not wasm at all: refused at submission.
    let fake = dir.path().join("fake.wasm");
    std::fs::write(&fake, b"#!/bin/sh\nrm -rf /\n").unwrap();
    let bad = dir.path().join("bad-module.toml");
    std::fs::write(
        &bad,
        good.lines()
            .map(|l| {
                if l.starts_with("module") {
                    format!("module = {:?}", fake.to_string_lossy())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let msg = stderr(coordinator.cli(&["job", "submit", &bad.to_string_lossy()]));
    assert!(msg.contains("is not a wasm module"), "{msg}");

    // The guest SDK's import module offers its functions only: another
    // name, or an SDK function with another type, is refused by name.
    for (import, expect) in [
        (
            r#"(import "peergrid" "launch" (func))"#,
            "`peergrid.launch`",
        ),
        (
            r#"(import "peergrid" "checkpoint" (func (param i64)))"#,
            "another type",
        ),
    ] {
        let module = wat::parse_str(format!(
            r#"(module {import} (memory (export "memory") 1) (func (export "_start")))"#
        ))
        .unwrap();
        std::fs::write(&fake, module).unwrap();
        let msg = stderr(coordinator.cli(&["job", "submit", &bad.to_string_lossy()]));
        assert!(msg.contains(expect), "{msg}");
    }

    // Raw HTTP: a body that does not hash to its name, and malformed JSON.
    let agent = ureq_agent();
    let url = format!("{}/api/v1/blobs/{}", coordinator.http, "00".repeat(32));
    let resp = agent
        .put(&url)
        .header("Authorization", &format!("Bearer {}", coordinator.token))
        .send(&b"hello"[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = agent
        .post(&format!("{}/api/v1/jobs", coordinator.http))
        .header("Authorization", &format!("Bearer {}", coordinator.token))
        .header("Content-Type", "application/json")
        .send(&b"{\"name\": 12"[..])
        .unwrap();
    assert!(resp.status().is_client_error());

    // Nothing stored was lost and the server still takes good work.
    let job = coordinator.submit(&spec).unwrap();
    assert_eq!(coordinator.status(job).unwrap()["units_total"], 2);
}

/// A module no worker could instantiate (a table larger than the workers'
/// fixed limit, or an initial memory larger than the job's `memory_mb`) is
/// refused by a real `peergrid job submit`, naming the limit, instead of
/// failing on every volunteer.
#[test]
fn modules_over_the_workers_limits_are_refused_at_submission() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let cases = [
        (
            "table",
            r#"(module (table 200000 funcref) (func (export "_start")))"#,
            "memory_mb = 64",
            "100000",
        ),
        (
            "memory",
            r#"(module (memory 2000) (func (export "_start")))"#,
            "memory_mb = 64",
            "memory_mb = 64",
        ),
    ];
    for (name, wat, settings, limit) in cases {
        let module = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&module, wat::parse_str(wat).unwrap()).unwrap();
        let spec = job_spec(dir.path(), name, &module, 1, settings).unwrap();
        let out = coordinator.cli(&["job", "submit", &spec.to_string_lossy()]);
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: submission was accepted");
        assert!(msg.contains("422") && msg.contains(limit), "{name}: {msg}");
    }
    // The same memory fits a job that asks for enough.
    let module = dir.path().join("memory.wasm");
    let spec = job_spec(dir.path(), "roomy", &module, 1, "memory_mb = 128").unwrap();
    coordinator.submit(&spec).unwrap();
}

fn ureq_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}
