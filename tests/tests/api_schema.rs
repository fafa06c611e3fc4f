//! The coordinator's HTTP API against its own OpenAPI document: a real
//! coordinator with a finished job (validated units, hosts with credit)
//! is checked by `scripts/api-check` (schemathesis), which fails on any
//! 5xx and on any response the document does not describe.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use peergrid_tests::{Coordinator, JobOptions, lyapunov_job};

/// `scripts/api-check`'s exit code when schemathesis is not installed.
const MISSING_SCHEMATHESIS: i32 = 3;

#[test]
fn every_response_matches_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 4,
            iterations: 2000,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let status = {
        let _workers = coordinator.workers(dir.path(), "w", 2).unwrap();
        coordinator
            .wait_finished(job, Duration::from_secs(120))
            .unwrap()
    };
    assert_eq!(status["validated"], 4, "{status}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/api-check");
    let out = Command::new(&script)
        .arg(&coordinator.http)
        .env("PEERGRID_TOKEN", &coordinator.token)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(MISSING_SCHEMATHESIS),
        "schemathesis is missing: run scripts/setup, which installs it in .tools/venv \
         (or `pip install schemathesis`)\n{stderr}"
    );
    assert!(
        out.status.success(),
        "schemathesis found responses the OpenAPI document does not allow \
         ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
