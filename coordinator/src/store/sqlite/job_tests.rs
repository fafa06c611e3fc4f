//! Units numbered within their job, and cancelled jobs, in the store.

#![allow(clippy::unwrap_used)]
use super::tests::test_signature as signature;
use super::*;
use peergrid_proto::spec::{JobSettings, UnitSpec};

/// A job of `units` units, named `u1`…, in `store`.
fn job_of(store: &SqliteStore, units: usize) -> JobId {
    let input = b"in".to_vec();
    let ih = Hash::of(&input);
    store.put_blob(&ih, &input).unwrap();
    store
        .create_job(
            &JobSubmission {
                plots: Vec::new(),
                name: "j".into(),
                module: Hash([9; 32]),
                args: vec![],
                settings: JobSettings::default(),
                signature: signature(),
                validator: Default::default(),
                terms: Default::default(),
                units: (1..=units)
                    .map(|n| UnitSpec {
                        name: format!("u{n}"),
                        input: ih,
                    })
                    .collect(),
            },
            1,
        )
        .unwrap()
}

fn validate(store: &SqliteStore, unit: UnitId, host: HostId, out: &[u8]) {
    super::tests::validate_with(store, unit, &[host], out, 1);
}

/// The active units the feeder loads, by id, with the key their seeds
/// derive from (`LoadedUnit::number`).
fn loaded_numbers(store: &SqliteStore) -> Vec<(UnitId, JobId, u64)> {
    store
        .load_active_units(0, 100, usize::MAX)
        .unwrap()
        .iter()
        .map(|u| (u.id, u.job, u.number))
        .collect()
}

#[test]
fn units_are_numbered_within_their_job_in_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
    let host = store
        .upsert_host(&[1; 32], &HostFacts::default(), "t", 1)
        .unwrap();
    let first = job_of(&store, 3);
    let second = job_of(&store, 2);
    assert_eq!(
        loaded_numbers(&store),
        vec![
            (1, first, 1),
            (2, first, 2),
            (3, first, 3),
            (4, second, 1),
            (5, second, 2)
        ]
    );
    // Unit id 5 is the second job's unit 2.
    validate(&store, 5, host, b"five");
    let rows = store.dataset_page(second, 0, 10).unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.unit, r.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(2, "u2")]
    );
    assert_eq!(rows[0].output, b"five");
    assert_eq!(rows[0].seed_unit, 2, "a new job's seeds follow its numbers");
    // Pages after a number: after 1 the row is there, after 2 it is not.
    assert_eq!(store.dataset_index(second, 1, 1).unwrap().len(), 1);
    assert!(store.dataset_index(second, 2, 1).unwrap().is_empty());
    assert!(store.dataset_index(first, 0, 10).unwrap().is_empty());
    // Failed units and their logs by number.
    store
        .apply(
            &[StoreOp::Fail {
                unit: 4,
                reason: "too many errors".into(),
                at_ms: 4,
            }],
            &[],
        )
        .unwrap();
    let failed = store.failed_units(second).unwrap();
    assert_eq!(failed.iter().map(|f| f.unit).collect::<Vec<_>>(), vec![1]);
    let logs = store.failed_unit_logs(second, 0, 10).unwrap();
    assert_eq!(logs.iter().map(|f| f.unit).collect::<Vec<_>>(), vec![1]);
    assert!(store.failed_unit_logs(second, 1, 10).unwrap().is_empty());
    let unit = store.unit_logs(second, 1).unwrap().unwrap();
    assert_eq!(
        (unit.unit, unit.name.as_str(), unit.state.as_str()),
        (1, "u1", "failed")
    );
    assert!(store.unit_logs(second, 3).unwrap().is_none());
    // Credit pages still follow project-wide ids, and say the number.
    let grants = store.credit_page(None, 0, 10).unwrap();
    assert_eq!(
        grants
            .iter()
            .map(|g| (g.unit, g.number))
            .collect::<Vec<_>>(),
        vec![(5, 2)]
    );
}

#[test]
fn an_older_database_gets_its_units_numbered_within_each_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path, false).unwrap();
    let first = job_of(&store, 2);
    let second = job_of(&store, 3);
    drop(store);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE schema_version; DROP INDEX units_job_number; ALTER TABLE units DROP COLUMN number;
         ALTER TABLE jobs DROP COLUMN cancelled_ms; ALTER TABLE jobs DROP COLUMN seed_by_number;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, false).unwrap();
    // Their units keep the seeds they ran with (from their ids) ...
    assert_eq!(
        loaded_numbers(&store),
        vec![
            (1, first, 1),
            (2, first, 2),
            (3, second, 3),
            (4, second, 4),
            (5, second, 5)
        ]
    );
    // ... and are numbered within their jobs wherever users see them.
    let unit = store.unit_logs(second, 1).unwrap().unwrap();
    assert_eq!((unit.unit, unit.name.as_str()), (1, "u1"));
    assert_eq!(store.unit_logs(second, 3).unwrap().unwrap().name, "u3");
    // A job submitted now seeds by number.
    let third = job_of(&store, 1);
    assert_eq!(loaded_numbers(&store).last(), Some(&(6, third, 1)));
    assert_eq!(
        store.job_status(second).unwrap().unwrap().cancelled_ms,
        None
    );
}

#[test]
fn a_cancelled_job_keeps_its_rows_and_its_other_units_are_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
    let host = store
        .upsert_host(&[1; 32], &HostFacts::default(), "t", 1)
        .unwrap();
    let job = job_of(&store, 3);
    let other = job_of(&store, 1);
    validate(&store, 1, host, b"one");
    let assign = |unit| StoreOp::Assign {
        unit,
        host,
        sent_ms: 5,
        deadline_ms: 100,
        single: false,
    };
    store.apply(&[assign(2), assign(4)], &[]).unwrap();
    store
        .apply(
            &[StoreOp::Cancel {
                job,
                reason: "the job was cancelled".into(),
                at_ms: 9,
            }],
            &[],
        )
        .unwrap();
    let status = store.job_status(job).unwrap().unwrap();
    assert_eq!(
        (
            status.validated,
            status.cancelled,
            status.units_total,
            status.finished
        ),
        (1, 2, 3, true)
    );
    assert_eq!(status.cancelled_ms, Some(9));
    assert_eq!(store.dataset_page(job, 0, 10).unwrap().len(), 1);
    // Neither the feeder nor the in-progress count sees them again; the
    // other job is untouched.
    assert_eq!(loaded_numbers(&store), vec![(4, other, 1)]);
    assert_eq!(status.in_progress, 0);
    let copy: String = store
        .read(|c| {
            Ok(
                c.query_row("SELECT state FROM results WHERE unit_id = 2", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .unwrap();
    assert_eq!(copy, "voided");
    // A later repair of the cancelled job's row does not reopen its unit.
    store
        .apply(
            &[StoreOp::Repair {
                host,
                reason: "caught".into(),
                at_ms: 10,
            }],
            &[],
        )
        .unwrap();
    let status = store.job_status(job).unwrap().unwrap();
    assert_eq!(
        (status.validated, status.cancelled, status.finished),
        (0, 3, true)
    );
    assert_eq!(loaded_numbers(&store), vec![(4, other, 1)]);
}
