//! Loose uploads and their garbage collection in the store.

#![allow(clippy::unwrap_used)]
use super::tests::submission;
use super::*;
use peergrid_proto::spec::Validator;

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap()
}

fn upload(store: &SqliteStore, bytes: &[u8]) -> Hash {
    let h = Hash::of(bytes);
    store.put_blob(&h, bytes).unwrap();
    h
}

/// A time after every upload so far, by `ms`.
fn later(ms: u64) -> u64 {
    peergrid_os::now_ms() + ms
}

#[test]
fn an_upload_no_job_claims_is_collected_after_the_grace_period_and_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let started = peergrid_os::now_ms();
    let loose = upload(&store, b"uploaded, never submitted");
    let module = upload(&store, b"module");
    let validator = upload(&store, b"validator module");
    let input = Hash::of(b"input");
    let also_loose = Hash::of(b"in a batch, never submitted");
    store
        .put_blobs(&[
            (input, b"input".to_vec()),
            (also_loose, b"in a batch, never submitted".to_vec()),
        ])
        .unwrap();
    store
        .create_job(
            &submission(module, Validator::Custom { module: validator }, &[input]),
            1,
        )
        .unwrap();
    // Within the grace period: nothing goes.
    assert!(store.collect_blobs(started, 10).unwrap().is_empty());
    let mut collected = store.collect_blobs(later(1), 10).unwrap();
    collected.sort();
    let mut expected = vec![loose, also_loose];
    expected.sort();
    assert_eq!(collected, expected);
    assert_eq!(store.get_blob(&loose).unwrap(), None);
    assert_eq!(store.get_blob(&also_loose).unwrap(), None);
    for kept in [module, validator, input] {
        assert!(store.get_blob(&kept).unwrap().is_some(), "{kept}");
    }
    // Nothing is left to collect, and a page is a page.
    assert!(store.collect_blobs(later(1), 10).unwrap().is_empty());
    for n in 0..5u8 {
        upload(&store, &[n; 3]);
    }
    assert_eq!(store.collect_blobs(later(1), 2).unwrap().len(), 2);
    assert_eq!(store.collect_blobs(later(1), 10).unwrap().len(), 3);
}

/// A loose upload whose bytes a task returned, or that a job already
/// names, keeps its bytes: garbage is what nothing names.
#[test]
fn an_upload_a_result_or_a_job_names_is_never_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let module = upload(&store, b"module");
    let input = upload(&store, b"input");
    store
        .create_job(&submission(module, Validator::Bitwise, &[input]), 1)
        .unwrap();
    let host = store
        .upsert_host(&[1; 32], &HostFacts::default(), "t", 1)
        .unwrap();
    // The same bytes as a task's output, uploaded before the task reported.
    let output = upload(&store, b"an output");
    let ops = super::tests::success_copy(1, host, output, 1);
    store
        .apply(&ops, &[(output, b"an output".to_vec())])
        .unwrap();
    // Bytes a job names uploaded again, the list entry put back by hand:
    // the collector checks what names a blob, not only the list.
    upload(&store, b"input");
    store
        .write(|c| {
            c.execute(
                "INSERT OR REPLACE INTO blob_uploads (hash, at_ms) VALUES (?1, 0)",
                [&input.0[..]],
            )?;
            Ok(())
        })
        .unwrap();
    assert!(store.collect_blobs(later(1), 10).unwrap().is_empty());
    for kept in [module, input, output] {
        assert!(store.get_blob(&kept).unwrap().is_some(), "{kept}");
    }
    let listed: u64 = store
        .read(|c| Ok(c.query_row("SELECT count(*) FROM blob_uploads", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(listed, 0, "what something names is off the list");
}

/// Uploading a loose blob again, or a submission asking about it, starts
/// its grace period afresh.
#[test]
fn uploading_or_asking_again_starts_the_grace_period_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let blob = upload(&store, b"loose");
    let asked = later(10 * 3600 * 1000);
    store
        .touch_uploads(&[blob, Hash::of(b"unknown")], asked)
        .unwrap();
    assert!(store.collect_blobs(asked - 1, 10).unwrap().is_empty());
    assert_eq!(store.collect_blobs(asked + 1, 10).unwrap(), vec![blob]);
    // Gone, then uploaded again: loose from now.
    let before = peergrid_os::now_ms();
    upload(&store, b"loose");
    assert!(store.collect_blobs(before, 10).unwrap().is_empty());
    assert_eq!(store.collect_blobs(later(1), 10).unwrap(), vec![blob]);
}

/// Step 2 on a database from before it lists exactly the blobs nothing
/// names, wherever the naming row is.
#[test]
fn the_migration_lists_only_what_nothing_names_in_an_older_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteStore::open(&path, false).unwrap());
    let hashes: Vec<Hash> = (0..8u8).map(|n| Hash::of(&[n])).collect();
    let hex = |h: &Hash| format!("X'{}'", h);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE blob_uploads; DELETE FROM schema_version WHERE version >= 2;")
        .unwrap();
    for (n, h) in hashes.iter().enumerate() {
        conn.execute(
            "INSERT INTO blobs (hash, data) VALUES (?1, ?2)",
            rusqlite::params![&h.0[..], vec![n as u8]],
        )
        .unwrap();
    }
    let validator = serde_json::to_string(&Validator::Custom { module: hashes[2] }).unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO jobs (id, name, module_hash, args_json, settings_json, signature_json, created_ms, validator_json)
           VALUES (1, 'j', {module}, '[]', '{{}}', '{{}}', 1, '{validator}');
         INSERT INTO units (id, job_id, name, input_hash) VALUES (1, 1, 'u', {input});
         INSERT INTO results (unit_id, host_id, state, sent_ms, deadline_ms, output_hash)
           VALUES (1, 1, 'success', 1, 2, {result});
         INSERT INTO retired_results (unit_id, host_id, state, sent_ms, deadline_ms, output_hash, resumed, single, retired_ms, reason)
           VALUES (1, 2, 'success', 1, 2, {retired}, 0, 0, 3, 'r');
         INSERT INTO dataset (unit_id, job_id, output_hash, fuel, hosts_json, engines_json, validated_ms)
           VALUES (1, 1, {dataset}, 1, '[]', '[]', 1);
         INSERT INTO dataset_history (unit_id, job_id, output_hash, fuel, hosts_json, engines_json, validated_ms, replaced_ms, reason)
           VALUES (1, 1, {history}, 1, '[]', '[]', 1, 2, 'r');",
        module = hex(&hashes[0]),
        input = hex(&hashes[1]),
        result = hex(&hashes[3]),
        retired = hex(&hashes[4]),
        dataset = hex(&hashes[5]),
        history = hex(&hashes[6]),
    ))
    .unwrap();
    drop(conn);
    let store = crate::store::sqlite::tests::open_at_latest(&path);
    assert_eq!(store.collect_blobs(later(1), 10).unwrap(), vec![hashes[7]]);
    for kept in &hashes[..7] {
        assert!(store.get_blob(kept).unwrap().is_some(), "{kept}");
    }
}
