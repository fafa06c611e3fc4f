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
