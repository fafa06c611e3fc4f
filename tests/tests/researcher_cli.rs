//! The researcher's CLI in daily use against a real coordinator (issue
//! #15): an export never destroys the file it would replace, `peergrid
//! login` replaces the four environment variables, and a server address
//! without a scheme is explained.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use peergrid_tests::{Coordinator, JobOptions, bin, lyapunov_job};

/// `peergrid ARGS` with none of the four variables and the profile in
/// `config` (XDG_CONFIG_HOME), run in `cwd`.
fn peergrid(config: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(bin("peergrid"))
        .env_remove("PEERGRID_SERVER")
        .env_remove("PEERGRID_TOKEN")
        .env_remove("PEERGRID_KEY")
        .env_remove("PEERGRID_ENDORSEMENT")
        .env("XDG_CONFIG_HOME", config)
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn small_job(dir: &Path) -> std::path::PathBuf {
    lyapunov_job(
        dir,
        &JobOptions {
            units: 4,
            iterations: 500,
            quorum: 1,
            deadline_secs: 60,
        },
    )
    .unwrap()
}

/// `results export --out keep.csv` of an unknown job, or while the server
/// is down, fails clearly and leaves keep.csv as it was; a good export
/// replaces it with bytes that match the checksum manifest.
#[test]
fn a_failed_export_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Coordinator::start(dir.path()).unwrap();
    let keep = dir.path().join("keep.csv");
    let old = "job,unit\nprecious,rows\n";
    std::fs::write(&keep, old).unwrap();
    let keep_arg = keep.to_string_lossy().into_owned();
    let export = |c: &Coordinator, job: &str| {
        c.cli(&[
            "results", "export", job, "--format", "csv", "--out", &keep_arg,
        ])
    };

    let out = export(&coordinator, "999");
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("no job 999") && said.contains("is left as it was"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), old);

    // A good export replaces it.
    let _workers = coordinator.workers(dir.path(), "w", 1).unwrap();
    let job = coordinator.submit(&small_job(dir.path())).unwrap();
    coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    let out = export(&coordinator, &job.to_string());
    assert!(out.status.success(), "{}", stderr(&out));
    let new = std::fs::read(&keep).unwrap();
    assert!(new.iter().filter(|b| **b == b'\n').count() >= 5);
    let manifest: serde_json::Value =
        ureq::get(format!("{}/api/v1/jobs/{job}/manifest", coordinator.http))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
    assert_eq!(
        manifest["exports"]["csv"]["blake3"],
        blake3::hash(&new).to_hex().as_str()
    );
    assert!(stderr(&out).contains("as the checksum manifest says"));

    // The server goes away: the file stays.
    coordinator.kill();
    let out = export(&coordinator, &job.to_string());
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("cannot reach the coordinator") && said.contains("is left as it was"),
        "{said}"
    );
    assert_eq!(std::fs::read(&keep).unwrap(), new);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// After `peergrid login`, `job list` and `job submit` work without any
/// variable, from another folder; a flag and a variable still beat the
/// profile; a wrong token is refused and not saved.
#[test]
fn login_replaces_the_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let config = dir.path().join("config");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let profile = config.join("peergrid").join("config.toml");

    let out = peergrid(
        &config,
        dir.path(),
        &[
            "login",
            "--server",
            &coordinator.http,
            "--token",
            "pgt_wrong",
        ],
    );
    assert!(!out.status.success(), "a wrong token is refused");
    assert!(!profile.exists(), "and not saved");

    let out = peergrid(
        &config,
        dir.path(),
        &[
            "login",
            "--server",
            &coordinator.http,
            "--token",
            &coordinator.token,
            "--key",
            "researcher.key",
            "--endorsement",
            "researcher.endorsement",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&profile).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let out = peergrid(&config, &elsewhere, &["job", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let spec = small_job(dir.path());
    let out = peergrid(
        &config,
        &elsewhere,
        &["job", "submit", "--quiet", &spec.to_string_lossy()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        out.stderr.is_empty(),
        "--quiet prints only the id: {}",
        stderr(&out)
    );
    let out = peergrid(&config, &elsewhere, &["job", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("job {id} ")));

    // A flag, then a variable, beat the profile.
    let nowhere = "http://127.0.0.1:9";
    let out = peergrid(&config, &elsewhere, &["--server", nowhere, "job", "list"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(nowhere), "{}", stderr(&out));
    let out = Command::new(bin("peergrid"))
        .env("XDG_CONFIG_HOME", &config)
        .env("PEERGRID_SERVER", nowhere)
        .args(["job", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains(nowhere), "{}", stderr(&out));
}

/// `--server 127.0.0.1:PORT` says to add `http://`.
#[test]
fn a_server_without_a_scheme_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = peergrid(
        dir.path(),
        dir.path(),
        &["--server", "127.0.0.1:47080", "job", "list"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("write `http://127.0.0.1:47080`"),
        "{}",
        stderr(&out)
    );
}

/// Before: `job submit` and `verify` printed only sentences (scripts
/// parsed "verified: unit …"), and the worker's `config` only TOML. Now
/// each prints JSON with `--json`, parsed here from real runs.
#[test]
fn commands_that_print_data_speak_json() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let spec = small_job(dir.path());
    let out = coordinator.cli(&["job", "submit", "--json", &spec.to_string_lossy()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stderr.is_empty(),
        "--json prints nothing else: {}",
        stderr(&out)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["units"], 4, "{said}");
    assert!(
        said["uploaded_blobs"].as_u64().unwrap() >= 5,
        "module and inputs: {said}"
    );
    let job = said["job_id"].as_u64().unwrap();

    let _workers = coordinator.workers(dir.path(), "w", 1).unwrap();
    coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    let out = coordinator.cli(&["verify", &job.to_string(), "3", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["job"].as_u64(), v["unit"].as_u64()),
        (Some(job), Some(3)),
        "{v}"
    );
    assert_eq!(v["matches"], true, "{v}");
    assert_eq!(v["expected_output"], v["got_output"], "{v}");

    let file = dir.path().join("worker.toml");
    std::fs::write(&file, "cpu_time_percent = 30\n").unwrap();
    let out = Command::new(bin("peergrid-worker"))
        .args(["config", "--json", "--cores", "2", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["preferences"]["cpu_time_percent"], 30, "{c}");
    assert_eq!(c["preferences"]["cores"], 2, "flags applied: {c}");
    assert_eq!(c["file"], file.display().to_string(), "{c}");
}
