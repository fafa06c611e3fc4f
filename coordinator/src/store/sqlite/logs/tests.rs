#![allow(clippy::unwrap_used)]

use std::path::Path;

use peergrid_proto::Hash;
use peergrid_proto::spec::{JobSettings, JobSubmission, UnitSpec};
use peergrid_proto::wire::HostFacts;
use rusqlite::Connection;

use super::super::tests::test_signature;
use crate::quorum::CopyState;
use crate::store::{ErrorLog, HostId, ReadStore, SqliteStore, StderrTail, Store, StoreOp};

/// A job of three units and two hosts; returns the job and host ids.
fn job(store: &SqliteStore) -> (u64, [HostId; 2]) {
    let input = Hash::of(b"in");
    store.put_blob(&input, b"in").unwrap();
    store.put_blob(&Hash::of(b"m"), b"m").unwrap();
    let sub = JobSubmission {
        plots: Vec::new(),
        name: "j".into(),
        module: Hash::of(b"m"),
        args: vec![],
        settings: JobSettings::default(),
        signature: test_signature(),
        validator: Default::default(),
        terms: Default::default(),
        units: ["a", "b", "c"]
            .map(|n| UnitSpec {
                name: n.into(),
                input,
            })
            .to_vec(),
    };
    let job = store.create_job(&sub, 1).unwrap();
    let hosts = [1u8, 2].map(|k| {
        store
            .upsert_host(&[k; 32], &HostFacts::default(), "t", 2)
            .unwrap()
    });
    (job, hosts)
}

fn error(unit: u64, host: HostId, msg: &str, at: u64) -> [StoreOp; 2] {
    [
        StoreOp::Assign {
            unit,
            host,
            sent_ms: 3,
            deadline_ms: 99,
            single: false,
        },
        StoreOp::Report {
            unit,
            host,
            state: CopyState::Error(msg.into()),
            elapsed_ms: 1,
            received_ms: at,
        },
    ]
}

/// Unit 1 failed after two errors (the later one without stderr), unit 2
/// failed without an error result, unit 3 is still active with one error.
fn fill(store: &SqliteStore, hosts: [HostId; 2]) {
    let mut ops = Vec::new();
    ops.extend(error(1, hosts[0], "trap one", 10));
    ops.extend(error(1, hosts[1], "trap two", 20));
    ops.extend(error(3, hosts[1], "trap three", 30));
    ops.push(StoreOp::Fail {
        unit: 1,
        reason: "2 error results".into(),
        at_ms: 21,
    });
    ops.push(StoreOp::Fail {
        unit: 2,
        reason: "disagreeing".into(),
        at_ms: 22,
    });
    let tails = [
        (1, hosts[0], "panicked: one"),
        (3, hosts[1], "panicked: three"),
    ]
    .map(|(unit, host, text)| StderrTail {
        unit,
        host,
        text: text.into(),
    });
    store.apply_with_stderr(&ops, &[], &tails).unwrap();
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, false).unwrap()
}

#[test]
fn failed_units_come_with_their_last_error_and_every_unit_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("db.sqlite"));
    let (job, hosts) = job(&store);
    fill(&store, hosts);

    let failed = store.failed_unit_logs(job, 0, 10).unwrap();
    assert_eq!(
        failed.iter().map(|u| u.unit).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let last = failed[0].last_error.as_ref().unwrap();
    assert_eq!((last.host, last.error.as_str()), (hosts[1], "trap two"));
    assert_eq!(last.stderr, None);
    assert_eq!(last.host_key, hex::encode([2u8; 32]));
    assert_eq!(failed[1].last_error, None);
    assert_eq!(failed[1].reason, "disagreeing");
    // Paging: after unit 1, at most one.
    let page = store.failed_unit_logs(job, 1, 1).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].unit, 2);

    let unit = store.unit_logs(job, 1).unwrap().unwrap();
    assert_eq!(unit.state, "failed");
    assert_eq!(unit.reason.as_deref(), Some("2 error results"));
    assert_eq!(
        unit.errors,
        vec![
            ErrorLog {
                host: hosts[0],
                host_key: hex::encode([1u8; 32]),
                received_ms: 10,
                error: "trap one".into(),
                stderr: Some("panicked: one".into()),
            },
            ErrorLog {
                host: hosts[1],
                host_key: hex::encode([2u8; 32]),
                received_ms: 20,
                error: "trap two".into(),
                stderr: None,
            },
        ]
    );
    let active = store.unit_logs(job, 3).unwrap().unwrap();
    assert_eq!((active.state.as_str(), active.reason), ("active", None));
    assert_eq!(active.errors[0].stderr.as_deref(), Some("panicked: three"));
    // Another job's unit, or none at all.
    assert_eq!(store.unit_logs(job + 1, 1).unwrap(), None);
    assert_eq!(store.unit_logs(job, 99).unwrap(), None);
    assert!(store.failed_unit_logs(job + 1, 0, 10).unwrap().is_empty());
}

/// A database made before stderr was kept gains the column; what it
/// held is still served, without stderr.
#[test]
fn an_older_database_gains_the_stderr_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = open(&path);
    let (job, hosts) = job(&store);
    store
        .apply(&error(1, hosts[0], "old trap", 5), &[])
        .unwrap();
    drop(store);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE schema_version; ALTER TABLE results DROP COLUMN stderr")
        .unwrap();
    drop(conn);

    let store = open(&path);
    let unit = store.unit_logs(job, 1).unwrap().unwrap();
    assert_eq!(unit.errors[0].error, "old trap");
    assert_eq!(unit.errors[0].stderr, None);
    fill(&store, hosts);
    let unit = store.unit_logs(job, 3).unwrap().unwrap();
    assert_eq!(unit.errors[0].stderr.as_deref(), Some("panicked: three"));
}
