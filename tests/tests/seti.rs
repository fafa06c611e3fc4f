//! The SETI-style example on the grid: detections from validated results
//! equal those of the native run of the same code, and every strong
//! injected signal is found.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use peergrid_tests::{Coordinator, bin, seti_wasm};
use serde_json::Value;

fn merge(args: &[&str]) -> Value {
    let out = Command::new(bin("seti-merge")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "seti-merge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = args[args.iter().position(|a| *a == "--out").unwrap() + 1];
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

#[test]
fn grid_detections_equal_native_and_strong_signals_are_all_found() {
    let dir = tempfile::tempdir().unwrap();
    let job_dir = dir.path().join("seti");
    let inputs = job_dir.join("inputs");
    let truth = dir.path().join("truth.json");
    let out = Command::new(bin("seti-gen"))
        .args([
            "--seed",
            "7",
            "--channels",
            "2",
            "--segments",
            "2",
            "--signals",
            "8",
            "--out",
        ])
        .arg(&inputs)
        .arg("--truth")
        .arg(&truth)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seti-gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = job_dir.join("job.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"seti test\"\nmodule = {:?}\nquorum = 2\ndeadline_secs = 300\nmemory_mb = 192\nfuel = 200_000_000_000\n\n[inputs]\ndir = \"inputs\"\n",
            seti_wasm().to_string_lossy()
        ),
    )
    .unwrap();

    let coordinator = Coordinator::start(dir.path()).unwrap();
    let _workers = coordinator.workers(dir.path(), "w", 2).unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let s = coordinator
        .wait_finished(job, Duration::from_secs(300))
        .unwrap();
    assert_eq!(s["validated"], 4, "{s}");
    let dataset = dir.path().join("dataset.jsonl");
    let out = coordinator.cli(&[
        "results",
        "export",
        &job.to_string(),
        "--out",
        &dataset.to_string_lossy(),
    ]);
    assert!(out.status.success());

    let (grid_report, native_report) =
        (dir.path().join("grid.json"), dir.path().join("native.json"));
    let t = truth.to_string_lossy();
    let grid = merge(&[
        "--dataset",
        &dataset.to_string_lossy(),
        "--truth",
        &t,
        "--out",
        &grid_report.to_string_lossy(),
    ]);
    let native = merge(&[
        "--native",
        &inputs.to_string_lossy(),
        "--truth",
        &t,
        "--out",
        &native_report.to_string_lossy(),
    ]);
    assert_eq!(
        grid["detection_list"], native["detection_list"],
        "grid and native detections differ"
    );
    assert!(grid["detections"].as_u64().unwrap() > 0);

    let strong: Vec<&Value> = grid["bands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["snr_min"].as_f64().unwrap() >= 12.0 && b["injected"].as_u64().unwrap() > 0)
        .collect();
    assert!(
        !strong.is_empty(),
        "the observation has strong signals: {}",
        grid["bands"]
    );
    for band in strong {
        assert_eq!(
            band["found"], band["injected"],
            "recall below 100 % at high SNR: {band}"
        );
    }
}
