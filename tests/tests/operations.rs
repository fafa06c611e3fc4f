//! Running a coordinator over time, through the real binaries: `backup`
//! while it serves, and a restore from the copy that finishes the job;
//! `migrate`, which brings a database from before schema versions up to
//! this release's (`--status` only says what it would do); and a
//! database a newer release upgraded, which stops every command that
//! opens it, `serve` included, and is left as it was.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use peergrid_proto::JoinString;
use peergrid_tests::{Coordinator, JobOptions, bin, lyapunov_job, wait_for};
use rusqlite::Connection;

fn coordinator(args: &[&str]) -> Output {
    Command::new(bin("peergrid-coordinator"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A project made by `init`, its folder and database file.
fn project(dir: &Path) -> (String, std::path::PathBuf) {
    let data = dir.join("project");
    let out = coordinator(&["init", "--data", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let db = data.join("coordinator.sqlite");
    assert!(db.exists(), "init made no {}", db.display());
    (data.to_str().unwrap().to_string(), db)
}

/// The steps a database records, as (version, summary).
fn recorded_steps(db: &Path) -> Vec<(i64, String)> {
    let conn = Connection::open(db).unwrap();
    let present: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if !present {
        return Vec::new();
    }
    let mut stmt = conn
        .prepare("SELECT version, summary FROM schema_version ORDER BY version")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A database a newer release upgraded: `bans`, `migrate` and `serve`
/// refuse it with an error naming both versions, and nothing in
/// it changes. (Before versions, every command opened it as if it were
/// its own.)
#[test]
fn a_database_from_a_newer_release_is_refused_by_every_command_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (data, db) = project(dir.path());
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL, summary TEXT NOT NULL);
             INSERT INTO schema_version (version, applied_ms, summary)
                 VALUES (1000, 1, 'a release from the future');",
        )
        .unwrap();
    }
    let before = recorded_steps(&db);

    for args in [
        &["bans", "--data", &data][..],
        &["migrate", "--data", &data][..],
    ] {
        let out = coordinator(args);
        let said = text(&out);
        assert!(!out.status.success(), "{args:?} accepted it:\n{said}");
        assert!(
            said.contains("version 1000") && said.contains("newer"),
            "{args:?} does not say why:\n{said}"
        );
    }

    let mut serve = Command::new(bin("peergrid-coordinator"))
        .args([
            "serve",
            "--data",
            &data,
            "--quic",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(20) {
            serve.kill().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = serve.wait_with_output().unwrap();
    let said = text(&out);
    let status = status.unwrap_or_else(|| panic!("serve ran on it for 20 s:\n{said}"));
    assert!(!status.success(), "{said}");
    assert!(
        said.contains("version 1000") && said.contains("newer"),
        "{said}"
    );

    assert_eq!(recorded_steps(&db), before, "the database was changed");
}

/// A database from before schema versions (no `schema_version`, a column
/// its release did not have): `migrate --status` says what it would
/// apply and changes nothing; `migrate` applies it, keeping the rows;
/// a second `migrate` has nothing to do.
#[test]
fn migrate_brings_a_database_from_before_versions_up_and_says_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let (data, db) = project(dir.path());
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "DROP TABLE schema_version;
             ALTER TABLE hosts DROP COLUMN cpu_model;
             INSERT INTO bans (kind, name, reason, at_ms) VALUES ('host', '42', 'spam', 1);",
        )
        .unwrap();
    }

    let out = coordinator(&["migrate", "--status", "--data", &data]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("schema version 0"), "{said}");
    assert!(said.contains("to apply step 1:"), "{said}");
    assert!(
        recorded_steps(&db).is_empty(),
        "--status changed the database"
    );

    let out = coordinator(&["migrate", "--data", &data]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("applying step 1:"), "{said}");
    // Every step, in order, each said as it is applied.
    let steps = recorded_steps(&db);
    let numbers: Vec<_> = steps.iter().map(|s| s.0).collect();
    assert_eq!(
        numbers,
        (1..=steps.len() as i64).collect::<Vec<_>>(),
        "{steps:?}"
    );
    assert!(steps.len() >= 3, "{steps:?}");
    for (n, _) in &steps {
        assert!(said.contains(&format!("applying step {n}:")), "{said}");
    }

    let out = coordinator(&["migrate", "--data", &data]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("up to date"), "{said}");
    assert_eq!(recorded_steps(&db), steps);

    let out = coordinator(&["bans", "--data", &data]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("spam"), "the ban was lost:\n{said}");
    let conn = Connection::open(&db).unwrap();
    let cpu_model: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('hosts') WHERE name = 'cpu_model'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(cpu_model, 1);
}

/// `backup` of a project while it serves a job and workers report: the
/// copy keeps the private keys private and holds a sound database; a
/// second backup into the same folder is refused. Restored (the original
/// gone, `serve --data COPY` on the same address), it is the same project
/// to the workers, who finish the job on it (the copies that were out at
/// the backup time out there and are sent again); the dataset equals the
/// one the original finished meanwhile, row for row.
#[test]
fn a_backup_taken_while_serving_is_restored_and_finishes_the_job() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let mut c = Coordinator::start(dir.path()).unwrap();
    let spec = lyapunov_job(
        dir.path(),
        &JobOptions {
            units: 40,
            iterations: 50_000,
            // Copies out when the backup was taken are lost with the
            // original; the copy waits this long for them, then sends
            // their units to other hosts.
            deadline_secs: 10,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = c.submit(&spec).unwrap();
    // Four hosts: a unit whose two copies were out at the backup needs
    // two more hosts after the restore (a host gets one copy of a unit).
    let workers = c.workers(dir.path(), "w", 4).unwrap();
    wait_for("a first validated unit", Duration::from_secs(60), || {
        (c.status(job).ok()?["validated"].as_u64()? > 0).then_some(())
    })
    .unwrap();
    // Paused while the backup is taken, so that the job cannot finish
    // first however loaded the machine is.
    for w in &workers {
        w.control(&["pause"]).unwrap();
    }

    let data = c.data.to_str().unwrap().to_string();
    let copy = dir.path().join("backup");
    let copy_arg = copy.to_str().unwrap().to_string();
    let out = coordinator(&["backup", "--data", &data, "--to", &copy_arg]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("schema version"), "{}", text(&out));
    for w in &workers {
        w.control(&["resume"]).unwrap();
    }
    let finished = c.wait_finished(job, Duration::from_secs(120)).unwrap();
    assert_eq!(finished["validated"], 40, "{finished}");
    let original = c.dataset(job).unwrap();

    for (file, mode) in [("project.key", 0o600), ("tls/key.der", 0o600), (".", 0o700)] {
        let got = std::fs::metadata(copy.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(got, mode, "{file} is {got:o} in the copy");
    }
    let conn = Connection::open(copy.join("coordinator.sqlite")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (units, rows): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM units), (SELECT count(*) FROM dataset)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    drop(conn);
    assert_eq!(units, 40);
    assert!(
        (1..40).contains(&rows),
        "the copy holds {rows} dataset rows: not a snapshot taken mid-job"
    );
    let out = coordinator(&["backup", "--data", &data, "--to", &copy_arg]);
    assert!(!out.status.success(), "a second backup overwrote the first");
    assert!(text(&out).contains("already exists"), "{}", text(&out));

    // Restore: the original is lost, the copy serves where it served.
    let join_before: JoinString = c.join.parse().unwrap();
    let quic = c.quic.clone();
    c.kill();
    std::fs::remove_dir_all(&c.data).unwrap();
    c.data = copy;
    c.serve(&quic).unwrap();
    let join_after: JoinString = c.join.parse().unwrap();
    assert_eq!(join_after.cert_sha256, join_before.cert_sha256);
    assert_eq!(join_after.project_key, join_before.project_key);
    let done = c.wait_finished(job, Duration::from_secs(120)).unwrap();
    assert_eq!(done["validated"], 40, "{done}");
    let restored = c.dataset(job).unwrap();
    let by_unit = |rows: &[serde_json::Value]| {
        let mut v: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r["unit"].to_string(), r["output"].to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(by_unit(&restored), by_unit(&original));
    drop(workers);
}
