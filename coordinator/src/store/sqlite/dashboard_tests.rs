#![allow(clippy::unwrap_used)]
use super::tests::test_signature as signature;
use super::*;
use crate::credit::Credit;
use crate::quorum::CopyState;
use peergrid_proto::spec::{JobSettings, UnitSpec};
use std::collections::HashMap;

fn success(output: Hash, fuel: u64) -> CopyState {
    CopyState::Success {
        output,
        fuel,
        engine: "e1".into(),
        resumed: false,
    }
}

/// A job of units `u1`…`u<units>` (ids 1…) in `store`.
fn job_of_units(store: &SqliteStore, units: usize) -> JobId {
    let input = b"in".to_vec();
    let ih = Hash::of(&input);
    store.put_blob(&ih, &input).unwrap();
    store.put_blob(&Hash([9; 32]), b"module").unwrap();
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

/// Each host's credit summed grant by grant over the dataset, seen at
/// `now`: the reference the stored tallies must equal.
fn credit_from_dataset(store: &SqliteStore, now: u64) -> HashMap<String, Credit> {
    let mut by_host: HashMap<String, Credit> = HashMap::new();
    for g in store.credit_page(None, 0, 1000).unwrap() {
        for h in &g.hosts {
            by_host
                .entry(h.clone())
                .or_default()
                .grant(g.fuel, g.validated_ms, now);
        }
    }
    by_host
}

fn assert_tallies_match_the_dataset(store: &SqliteStore, now: u64) {
    let expected = credit_from_dataset(store, now);
    for h in store.hosts().unwrap() {
        let want = expected.get(&h.public_key).copied().unwrap_or_default();
        let got = h.credit.at(now);
        assert_eq!(got.total, want.total, "host {}", h.id);
        assert!(
            (got.recent - want.recent).abs() <= 1e-9 * want.recent.max(1.0),
            "host {}: {} vs {}",
            h.id,
            got.recent,
            want.recent
        );
    }
}

/// Account names were self-chosen and proved nothing: an older
/// database's names are kept as display names, the hosts anonymous
/// until they attach with a key.
#[test]
fn old_account_names_become_display_names_of_anonymous_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path, false).unwrap();
    let id = store
        .upsert_host(&[5; 32], &HostFacts::default(), "t", 2)
        .unwrap();
    drop(store);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE schema_version; ALTER TABLE hosts DROP COLUMN account_name; UPDATE hosts SET account = 'alice';
             INSERT INTO bans (kind, name, reason, at_ms) VALUES ('account', 'alice', 'spam', 1);",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, false).unwrap();
    let host = store.host(id).unwrap().unwrap();
    assert_eq!(
        (host.account.as_str(), host.account_name.as_str()),
        ("", "alice")
    );
    // The ban of the name now holds each host that ran under it.
    let bans: Vec<BanTarget> = store
        .bans()
        .unwrap()
        .into_iter()
        .map(|b| b.target)
        .collect();
    assert_eq!(bans, vec![BanTarget::Host(id)]);
    // A host that attaches with a key is recorded under it.
    let ada = Account {
        id: "ab".repeat(32),
        name: "Ada".into(),
        ..Account::default()
    };
    store
        .upsert_host_in(&[5; 32], &HostFacts::default(), "t", &ada, 3)
        .unwrap();
    let host = store.host(id).unwrap().unwrap();
    assert_eq!(
        (host.account.as_str(), host.account_name.as_str()),
        (ada.id.as_str(), "Ada")
    );
    // A Hello without an attachment does not detach it.
    store
        .upsert_host(&[5; 32], &HostFacts::default(), "t", 4)
        .unwrap();
    let host = store.host(id).unwrap().unwrap();
    assert_eq!((host.account, host.account_name), (ada.id, ada.name));
}

#[test]
fn credit_tallies_follow_the_dataset_and_are_rebuilt_for_old_databases() {
    const DAY: u64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path, false).unwrap();
    job_of_units(&store, 4);
    let host = |k: u8| {
        store
            .upsert_host(&[k; 32], &HostFacts::default(), "t", 1)
            .unwrap()
    };
    let (a, b, c) = (host(1), host(2), host(3));
    let validate = |unit, fuel, hosts: Vec<HostId>, at_ms| StoreOp::Validate {
        pending_credit: false,
        unit,
        output: Hash([unit as u8; 32]),
        fuel,
        hosts,
        at_ms,
    };
    // Out of time order, and unit 1 validated twice: the second row
    // replaces the first, whose grants are taken back.
    store
        .apply(
            &[
                validate(2, 7_000_000_000, vec![b, c], 20 * DAY),
                validate(1, 5_000_000_000, vec![a, b], 3 * DAY),
                validate(3, 1_000, vec![a], 11 * DAY),
            ],
            &[],
        )
        .unwrap();
    store
        .apply(&[validate(1, 9_000_000_000, vec![b, c], 12 * DAY)], &[])
        .unwrap();
    let now = 30 * DAY;
    assert_tallies_match_the_dataset(&store, now);
    let b_total = store.host(b).unwrap().unwrap().credit.total;
    assert_eq!(b_total, 16_000_000_000, "units 1 (replaced) and 2");
    assert_eq!(store.host(a).unwrap().unwrap().credit.total, 1_000);
    drop(store);

    // A database made before the tallies: its hosts have no credit
    // columns until it is opened, which fills them from the dataset.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE schema_version; DROP INDEX hosts_credit")
        .unwrap();
    for column in ["credit_total", "credit_recent", "credit_at_ms"] {
        conn.execute_batch(&format!("ALTER TABLE hosts DROP COLUMN {column}"))
            .unwrap();
    }
    drop(conn);
    let store = SqliteStore::open(&path, false).unwrap();
    assert_tallies_match_the_dataset(&store, now);
    assert_eq!(store.host(b).unwrap().unwrap().credit.total, b_total);
}

/// A single copy's row grants nothing until its host passes a check;
/// a dispute or a repair takes back what the row granted, from every
/// host it names, and a pending row replaced by a later verdict takes
/// nothing back.
#[test]
fn a_single_copys_credit_is_granted_only_once_its_host_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
    job_of_units(&store, 4);
    let host = |k: u8| {
        store
            .upsert_host(&[k; 32], &HostFacts::default(), "t", 1)
            .unwrap()
    };
    let (a, b) = (host(1), host(2));
    let validate = |unit, fuel, hosts: Vec<HostId>, pending_credit| StoreOp::Validate {
        unit,
        output: Hash([unit as u8; 32]),
        fuel,
        hosts,
        at_ms: 10 + unit,
        pending_credit,
    };
    let total = |h| store.host(h).unwrap().unwrap().credit.total;
    let pending = |h| store.host_standing(h).unwrap().unwrap().pending_credit;
    store
        .apply(
            &[
                validate(1, 100, vec![a], true),
                validate(2, 20, vec![a], true),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(total(a), 0);
    assert!(pending(a) && !pending(b));
    assert!(store.credit_page(None, 0, 10).unwrap().is_empty());
    // A later verdict replacing a pending row takes nothing back.
    store
        .apply(&[validate(2, 30, vec![a, b], false)], &[])
        .unwrap();
    assert_eq!((total(a), total(b)), (30, 30));
    store
        .apply(&[StoreOp::GrantCredit { host: a }], &[])
        .unwrap();
    assert_eq!(total(a), 130);
    assert!(!pending(a));
    assert_tallies_match_the_dataset(&store, 1000);
    // Granted once only.
    store
        .apply(&[StoreOp::GrantCredit { host: a }], &[])
        .unwrap();
    assert_eq!(total(a), 130);
    // An audit disagrees with the granted row: its credit goes back.
    store
        .apply(&[StoreOp::Dispute { unit: 1, at_ms: 45 }], &[])
        .unwrap();
    assert_eq!((total(a), total(b)), (30, 30));
    assert_tallies_match_the_dataset(&store, 1000);

    // Caught with a pending row: only the granted credit goes.
    store
        .apply(
            &[
                StoreOp::Assign {
                    unit: 3,
                    host: a,
                    sent_ms: 40,
                    deadline_ms: 100,
                    single: true,
                },
                StoreOp::Report {
                    unit: 3,
                    host: a,
                    state: CopyState::Success {
                        output: Hash([3; 32]),
                        fuel: 7,
                        engine: "x".into(),
                        resumed: false,
                    },
                    elapsed_ms: 1,
                    received_ms: 41,
                },
                validate(3, 7, vec![a], true),
            ],
            &[],
        )
        .unwrap();
    assert!(pending(a));
    store
        .apply(
            &[StoreOp::Repair {
                host: a,
                reason: "caught".into(),
                at_ms: 50,
            }],
            &[],
        )
        .unwrap();
    assert!(!pending(a), "the pending row went to the history");
    assert_tallies_match_the_dataset(&store, 1000);
}

/// Three hosts on a three-unit job: unit 1 validated by hosts a and b
/// with c disagreeing; unit 2 errored on a and timed out on c; unit 3
/// has a success from a awaiting a verdict.
#[test]
fn dashboard_queries_classify_hosts_and_bucket_results() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
    let job = job_of_units(&store, 3);
    let host = |k: u8, at: u64| {
        store
            .upsert_host(&[k; 32], &HostFacts::default(), "t", at)
            .unwrap()
    };
    let (a, b, c) = (host(1, 10), host(2, 10), host(3, 10));
    let good = b"good".to_vec();
    let bad = b"bad".to_vec();
    let (gh, bh) = (Hash::of(&good), Hash::of(&bad));
    let mut ops = Vec::new();
    for (unit, h) in [(1, a), (1, b), (1, c), (2, a), (2, c), (3, a)] {
        ops.push(StoreOp::Assign {
            unit,
            host: h,
            sent_ms: 100,
            deadline_ms: 1000,
            single: false,
        });
    }
    let report = |unit, host, state, at| StoreOp::Report {
        unit,
        host,
        state,
        elapsed_ms: 1,
        received_ms: at,
    };
    ops.push(report(1, a, success(gh, 500), 120_000));
    ops.push(report(1, b, success(gh, 500), 130_000));
    ops.push(report(1, c, success(bh, 500), 190_000));
    ops.push(report(2, a, CopyState::Error("boom".into()), 195_000));
    ops.push(StoreOp::TimedOut { unit: 2, host: c });
    ops.push(report(3, a, success(gh, 70), 200_000));
    ops.push(StoreOp::Validate {
        pending_credit: false,
        unit: 1,
        output: gh,
        fuel: 500,
        hosts: vec![a, b],
        at_ms: 180_000,
    });
    ops.push(StoreOp::Seen {
        host: a,
        at_ms: 300_000,
    });
    // An older sighting never moves last_seen back.
    ops.push(StoreOp::Seen { host: b, at_ms: 5 });
    store.apply(&ops, &[(gh, good.clone()), (bh, bad)]).unwrap();

    assert_eq!(store.hosts_seen_since(300_000).unwrap(), 1);
    assert_eq!(store.hosts_seen_since(10).unwrap(), 3);
    let hosts = store.hosts().unwrap();
    assert_eq!(hosts.len(), 3);
    assert_eq!(hosts[0].public_key, hex::encode([1u8; 32]));
    assert_eq!(hosts[0].last_seen_ms, 300_000);
    assert_eq!(store.host(b).unwrap().unwrap().last_seen_ms, 10);
    assert_eq!(store.host_by_key(&hex::encode([3u8; 32])).unwrap(), Some(c));
    assert_eq!(store.host_by_key("zz").unwrap(), None);

    let ra = store.host_record(a).unwrap();
    assert_eq!(
        (ra.valid, ra.invalid, ra.unvalidated, ra.errors, ra.timeouts),
        (1, 0, 1, 1, 0)
    );
    let rc = store.host_record(c).unwrap();
    assert_eq!((rc.valid, rc.invalid, rc.errors, rc.timeouts), (0, 1, 0, 1));

    // Per-minute buckets of successes received since 2 minutes in.
    let buckets = store.result_buckets(120_000, 60_000).unwrap();
    assert_eq!(
        buckets,
        vec![
            Bucket {
                start_ms: 120_000,
                count: 2,
                fuel: 1000
            },
            Bucket {
                start_ms: 180_000,
                count: 2,
                fuel: 570
            },
        ]
    );
    assert_eq!(
        store.validated_buckets(job, 60_000).unwrap(),
        vec![Bucket {
            start_ms: 180_000,
            count: 1,
            fuel: 500
        }]
    );
    assert_eq!(
        store.dataset_size(Some(job)).unwrap(),
        DatasetSize {
            rows: 1,
            bytes: good.len() as u64
        }
    );
    assert_eq!(store.dataset_size(Some(job + 1)).unwrap().rows, 0);
    let rows = store.dataset_browse(None, 0, 50).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].unit, rows[0].name.as_str()), (1, "u1"));
    assert_eq!(rows[0].engines, vec!["e1".to_string()]);
    assert!(store.dataset_browse(Some(job), 1, 50).unwrap().is_empty());

    let all = store.credit_page(None, 0, 10).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].fuel, 500);
    let key_b = hex::encode([2u8; 32]);
    assert_eq!(store.credit_page(Some(&key_b), 0, 10).unwrap().len(), 1);
    let key_c = hex::encode([3u8; 32]);
    assert!(store.credit_page(Some(&key_c), 0, 10).unwrap().is_empty());
    assert!(store.credit_page(None, 1, 10).unwrap().is_empty());
}
