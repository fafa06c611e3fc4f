#![allow(clippy::unwrap_used)]
use super::*;
use crate::store::SqliteStore;

fn tables(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A new database gets every step, each recorded with its summary.
#[test]
fn a_new_database_is_at_the_latest_version_with_each_step_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteStore::open(&path, false).unwrap());
    let status = SqliteStore::schema_status(&path).unwrap();
    assert_eq!(status.version, SCHEMA_VERSION);
    assert!(status.has_tables);
    assert!(status.pending.is_empty());
    let recorded: Vec<(u32, &str)> = status
        .applied
        .iter()
        .map(|s| (s.version, s.summary.as_str()))
        .collect();
    let steps: Vec<(u32, &str)> = MIGRATIONS.iter().map(|m| (m.version, m.summary)).collect();
    assert_eq!(recorded, steps);
    // Opening it again applies nothing.
    drop(SqliteStore::open(&path, false).unwrap());
    assert_eq!(SqliteStore::schema_status(&path).unwrap(), status);
}

/// A database a newer release upgraded is refused, and left as it was:
/// this release would not know what its newer tables mean.
#[test]
fn a_database_from_a_newer_release_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteStore::open(&path, false).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_version (version, applied_ms, summary) VALUES (?1, 5, 'from the future')",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(conn);
    let before = SqliteStore::schema_status(&path).unwrap();
    let err = SqliteStore::open(&path, false).err().unwrap();
    assert!(
        matches!(err, StoreError::NewerSchema { found, known } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{err}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
    assert_eq!(SqliteStore::schema_status(&path).unwrap(), before);
}

fn make_a(c: &Connection) -> Result<(), StoreError> {
    Ok(c.execute_batch("CREATE TABLE a (x INTEGER)")?)
}
fn make_b_then_fail(c: &Connection) -> Result<(), StoreError> {
    c.execute_batch("CREATE TABLE b (x INTEGER); INSERT INTO a VALUES (1)")?;
    Err(StoreError::Corrupt("step 2 fails".into()))
}
fn make_b(c: &Connection) -> Result<(), StoreError> {
    Ok(c.execute_batch("CREATE TABLE b (x INTEGER); INSERT INTO a VALUES (2)")?)
}

/// A step that fails halfway is undone whole, and the database stays at
/// the step before it; the next attempt applies only what is missing.
#[test]
fn a_failing_step_leaves_the_database_at_the_last_step_that_completed() {
    let mut conn = Connection::open_in_memory().unwrap();
    let one = Migration {
        version: 1,
        summary: "a",
        apply: make_a,
    };
    let failing = [
        Migration {
            version: 1,
            summary: "a",
            apply: make_a,
        },
        Migration {
            version: 2,
            summary: "b",
            apply: make_b_then_fail,
        },
    ];
    let err = migrate_with(&mut conn, &failing, 7).err().unwrap();
    assert!(err.to_string().contains("step 2 fails"), "{err}");
    assert_eq!(status(&conn).unwrap().applied.len(), 1);
    assert_eq!(status(&conn).unwrap().applied[0].version, 1);
    assert_eq!(tables(&conn), ["a", "schema_version"]);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "the failed step's insert is undone");

    let fixed = [
        one,
        Migration {
            version: 2,
            summary: "b",
            apply: make_b,
        },
    ];
    assert_eq!(migrate_with(&mut conn, &fixed, 8).unwrap(), [2]);
    assert_eq!(tables(&conn), ["a", "b", "schema_version"]);
    let applied = status(&conn).unwrap().applied;
    assert_eq!(
        applied
            .iter()
            .map(|s| (s.version, s.at_ms))
            .collect::<Vec<_>>(),
        [(1, 7), (2, 8)]
    );
    assert_eq!(
        migrate_with(&mut conn, &fixed, 9).unwrap(),
        Vec::<u32>::new()
    );
}

/// A database from before versions (no `schema_version`, columns
/// missing) is brought up to the layout and stamped, keeping its rows.
#[test]
fn a_database_from_before_versions_is_brought_up_and_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteStore::open(&path, false).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE schema_version;
         DROP TABLE blob_uploads;
         ALTER TABLE hosts DROP COLUMN cpu_model;
         INSERT INTO bans (kind, name, reason, at_ms) VALUES ('host', '9', 'kept', 1);",
    )
    .unwrap();
    drop(conn);
    let old = SqliteStore::schema_status(&path).unwrap();
    assert_eq!((old.version, old.has_tables), (0, true));
    assert_eq!(old.pending.len(), MIGRATIONS.len());

    drop(SqliteStore::open(&path, false).unwrap());
    let status = SqliteStore::schema_status(&path).unwrap();
    assert_eq!(status.version, SCHEMA_VERSION);
    let conn = Connection::open(&path).unwrap();
    let (cpu_model, bans): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM pragma_table_info('hosts') WHERE name = 'cpu_model'),
                    (SELECT count(*) FROM bans WHERE reason = 'kept')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((cpu_model, bans), (1, 1));
}

/// A database made by step 1 alone (a release from before steps 2 and 3)
/// gains its loose uploads and kept counts from its rows, and loses the
/// copies of finished units still marked out.
#[test]
fn a_database_at_step_one_gains_its_loose_uploads_and_kept_counts() {
    use crate::store::{Bucket, ReadStore, Store};
    use peergrid_proto::Hash;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let mut conn = Connection::open(&path).unwrap();
    assert_eq!(migrate_with(&mut conn, &MIGRATIONS[..1], 1).unwrap(), [1]);
    let [loose, module, output] = [1u8, 2, 3].map(|n| Hash([n; 32]));
    let settings = serde_json::to_string(&peergrid_proto::spec::JobSettings::default()).unwrap();
    let signature = serde_json::to_string(&crate::store::sqlite::tests::test_signature()).unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO blobs (hash, data) VALUES (X'{loose}', x'aa'), (X'{module}', x'bbbb'), (X'{output}', x'cccccc');
         INSERT INTO jobs (id, name, module_hash, args_json, settings_json, signature_json, created_ms)
           VALUES (1, 'j', X'{module}', '[]', '{settings}', '{signature}', 1);
         INSERT INTO units (id, job_id, name, input_hash, state, number)
           VALUES (1, 1, 'a', X'{module}', 'validated', 1), (2, 1, 'b', X'{module}', 'active', 2);
         INSERT INTO results (unit_id, host_id, state, sent_ms, deadline_ms, received_ms, output_hash, fuel)
           VALUES (1, 1, 'success', 1, 2, 120000, X'{output}', 7),
                  (1, 2, 'in_progress', 1, 2, NULL, NULL, NULL),
                  (2, 1, 'in_progress', 1, 2, NULL, NULL, NULL);
         INSERT INTO dataset (unit_id, job_id, output_hash, fuel, hosts_json, engines_json, validated_ms)
           VALUES (1, 1, X'{output}', 7, '[]', '[]', 180000);"
    ))
    .unwrap();
    drop(conn);

    let store = crate::store::sqlite::tests::open_at_latest(&path);
    let status = store.job_status(1).unwrap().unwrap();
    assert_eq!(
        (status.validated, status.in_progress, status.pending),
        (1, 1, 0),
        "unit 2's copy is out; unit 1's late copy is voided"
    );
    let size = store.dataset_size(Some(1)).unwrap();
    assert_eq!((size.rows, size.bytes), (1, 3));
    assert_eq!(
        store.validated_buckets(1, 60_000).unwrap(),
        [Bucket {
            start_ms: 180_000,
            count: 1,
            fuel: 7
        }]
    );
    assert_eq!(
        store.result_buckets(0, 60_000).unwrap(),
        [Bucket {
            start_ms: 120_000,
            count: 1,
            fuel: 7
        }]
    );
    assert_eq!(store.collect_blobs(u64::MAX, 10).unwrap(), [loose]);
    assert!(
        store.get_blob(&module).unwrap().is_some() && store.get_blob(&output).unwrap().is_some()
    );
}
