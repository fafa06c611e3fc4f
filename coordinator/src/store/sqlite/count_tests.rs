//! The kept counts (`job_counts`, schema step 3) against a recount of the
//! rows, after every path that changes a unit's state or the dataset.

#![allow(clippy::unwrap_used)]
use super::tests::{submission, validate_with as validate};
use super::*;
use peergrid_proto::spec::Validator;

/// Each job's counts as kept, and as recounted from the rows.
fn kept_and_recounted(store: &SqliteStore) -> (Vec<[i64; 8]>, Vec<[i64; 8]>) {
    let table = |sql: &str| -> Vec<[i64; 8]> {
        store
            .read(|c| {
                let mut stmt = c.prepare(sql)?;
                let rows = stmt.query_map([], |r| {
                    let mut row = [0i64; 8];
                    for (i, v) in row.iter_mut().enumerate() {
                        *v = r.get(i)?;
                    }
                    Ok(row)
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .unwrap()
    };
    let kept = table(
        "SELECT job_id, active, validated, failed, cancelled, dataset_rows, dataset_bytes,
                last_validated_ms
         FROM job_counts ORDER BY job_id",
    );
    let recounted = table(
        "SELECT j.id,
           (SELECT count(*) FROM units u WHERE u.job_id = j.id AND u.state = 'active'),
           (SELECT count(*) FROM units u WHERE u.job_id = j.id AND u.state = 'validated'),
           (SELECT count(*) FROM units u WHERE u.job_id = j.id AND u.state = 'failed'),
           (SELECT count(*) FROM units u WHERE u.job_id = j.id AND u.state = 'cancelled'),
           (SELECT count(*) FROM dataset d WHERE d.job_id = j.id),
           (SELECT coalesce(sum(length(b.data)), 0) FROM dataset d JOIN blobs b ON b.hash = d.output_hash
            WHERE d.job_id = j.id),
           (SELECT coalesce(max(validated_ms), 0) FROM dataset d WHERE d.job_id = j.id)
         FROM jobs j ORDER BY j.id",
    );
    (kept, recounted)
}

/// Rows of two columns and two sums from `sql`.
fn pairs(store: &SqliteStore, sql: &str) -> Vec<[i64; 4]> {
    store
        .read(|c| {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt.query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .unwrap()
}

/// Every kept count equals its recount, except the latest validation,
/// which a reopened row does not lower.
fn assert_counts(store: &SqliteStore, step: &str) {
    assert_eq!(
        pairs(
            store,
            "SELECT 0, minute, count, fuel FROM result_minutes WHERE count > 0 ORDER BY minute"
        ),
        pairs(
            store,
            "SELECT 0, received_ms / 60000, count(*), sum(fuel) FROM
               (SELECT received_ms, fuel FROM results
                WHERE received_ms IS NOT NULL AND output_hash IS NOT NULL
                UNION ALL
                SELECT received_ms, fuel FROM retired_results
                WHERE received_ms IS NOT NULL AND output_hash IS NOT NULL)
             GROUP BY 2 ORDER BY 2"
        ),
        "{step}: successful copies received by minute"
    );
    assert_eq!(
        pairs(
            store,
            "SELECT job_id, minute, count, fuel FROM job_minutes WHERE count > 0
             ORDER BY job_id, minute"
        ),
        pairs(
            store,
            "SELECT job_id, validated_ms / 60000, count(*), sum(fuel) FROM dataset
             GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        "{step}: dataset rows by minute"
    );
    // The charts read the kept minutes.
    let received: u64 = store
        .result_buckets(0, 120_000)
        .unwrap()
        .iter()
        .map(|b| b.count)
        .sum();
    let counted: i64 = pairs(
        store,
        "SELECT 0, 0, coalesce(sum(count), 0), 0 FROM result_minutes",
    )[0][2];
    assert_eq!(received, counted as u64, "{step}");
    let (kept, recounted) = kept_and_recounted(store);
    for row in &kept {
        let buckets = store.validated_buckets(row[0] as u64, 120_000).unwrap();
        let n: u64 = buckets.iter().map(|b| b.count).sum();
        assert_eq!(n, row[5] as u64, "{step}: {buckets:?}");
    }
    assert_eq!(kept.len(), recounted.len(), "{step}");
    for (k, r) in kept.iter().zip(&recounted) {
        assert_eq!(k[..7], r[..7], "{step}: kept {k:?}, recounted {r:?}");
        assert!(k[7] >= r[7], "{step}: {k:?} {r:?}");
    }
    // What the pages read agrees too.
    for row in &kept {
        let status = store.job_status(row[0] as u64).unwrap().unwrap();
        assert_eq!(
            [
                status.pending + status.in_progress,
                status.validated,
                status.failed,
                status.cancelled
            ],
            [row[1] as u64, row[2] as u64, row[3] as u64, row[4] as u64],
            "{step}"
        );
        let size = store.dataset_size(Some(row[0] as u64)).unwrap();
        assert_eq!(
            (size.rows, size.bytes),
            (row[5] as u64, row[6] as u64),
            "{step}"
        );
    }
}

#[test]
fn kept_counts_follow_every_change_of_units_and_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
    let module = Hash::of(b"module");
    let inputs: Vec<Hash> = (0..6u8).map(|i| Hash::of(&[i])).collect();
    let first = store
        .create_job(&submission(module, Validator::Bitwise, &inputs), 1)
        .unwrap();
    let second = store
        .create_job(&submission(module, Validator::Bitwise, &inputs[..3]), 2)
        .unwrap();
    assert_counts(&store, "submitted");
    let hosts: Vec<HostId> = (1..=3u8)
        .map(|k| {
            store
                .upsert_host(&[k; 32], &HostFacts::default(), "t", 1)
                .unwrap()
        })
        .collect();

    // A copy out: its unit is in progress, along `results_out`.
    store
        .apply(
            &[StoreOp::Assign {
                unit: 6,
                host: hosts[2],
                sent_ms: 5,
                deadline_ms: 100_000,
                single: false,
            }],
            &[],
        )
        .unwrap();
    let status = store.job_status(first).unwrap().unwrap();
    assert_eq!((status.in_progress, status.pending), (1, 5));
    // A third copy of unit 4, still out when the unit validates below: it
    // is voided then, and counts no more.
    let [assign, _] = super::tests::success_copy(4, hosts[2], Hash::of(b"x"), 5);
    store.apply(&[assign], &[]).unwrap();
    for unit in 1..=4 {
        validate(
            &store,
            unit,
            &hosts[..2],
            format!("out {unit}").as_bytes(),
            61_000 * unit,
        );
    }
    assert_counts(&store, "validated");
    let left_out: (String, String) = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT state, error FROM results WHERE unit_id = 4 AND host_id = ?1",
                [hosts[2]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap();
    assert_eq!(left_out.0, "voided", "{left_out:?}");
    assert_eq!(store.job_status(first).unwrap().unwrap().in_progress, 1);
    // Validated again (a row replaced): counted once, its bytes the new ones.
    validate(
        &store,
        2,
        &hosts[2..],
        b"a longer output for unit 2",
        330_000,
    );
    assert_counts(&store, "replaced");
    store
        .apply(
            &[StoreOp::Fail {
                unit: 5,
                reason: "too many errors".into(),
                at_ms: 400_000,
            }],
            &[],
        )
        .unwrap();
    assert_counts(&store, "failed");
    store
        .apply(
            &[StoreOp::Dispute {
                unit: 1,
                at_ms: 410_000,
            }],
            &[],
        )
        .unwrap();
    assert_counts(&store, "disputed");
    store
        .apply(
            &[StoreOp::Repair {
                host: hosts[0],
                reason: "caught".into(),
                at_ms: 420_000,
            }],
            &[],
        )
        .unwrap();
    assert_counts(&store, "repaired");
    let reissued = store
        .reissue(first, &ReissueUnits::Failed, "again", 430_000)
        .unwrap();
    assert!(reissued.is_some());
    assert_counts(&store, "reissued");
    validate(&store, 7, &hosts[1..], b"second job's first", 440_000);
    store
        .apply(
            &[StoreOp::Cancel {
                job: second,
                reason: "the job was cancelled".into(),
                at_ms: 450_000,
            }],
            &[],
        )
        .unwrap();
    assert_counts(&store, "cancelled");
    let (kept, _) = kept_and_recounted(&store);
    assert_eq!(
        kept[1][1..5],
        [0, 1, 0, 2],
        "the second job: 1 validated, 2 cancelled"
    );

    // Every state summed over jobs, as the overview reads it.
    let by_state: u64 = store.units_by_state().unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(by_state, 9);
    let all = store.dataset_size(None).unwrap();
    assert_eq!(all.rows, (kept[0][5] + kept[1][5]) as u64);

    // A database from before the counts gets them filled from its rows.
    drop(store);
    let path = dir.path().join("db.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TRIGGER units_state_counted; DROP TRIGGER dataset_row_counted;
         DROP TRIGGER dataset_row_uncounted;
         DROP TABLE job_counts; DROP TABLE result_minutes; DROP TABLE job_minutes;
         DELETE FROM schema_version WHERE version >= 3;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, false).unwrap();
    assert_counts(&store, "filled by the migration");
    validate(&store, 3, &hosts[2..], b"after the migration", 500_000);
    assert_counts(&store, "kept after the migration");
}
