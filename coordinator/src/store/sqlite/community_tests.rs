#![allow(clippy::unwrap_used)]
//! Hosts' names and task lists, and teams, against a real SQLite file.

use super::tests::test_signature as signature;
use super::*;
use crate::quorum::CopyState;
use peergrid_proto::spec::{JobSettings, UnitSpec};
use rusqlite::Connection;

fn success(output: Hash, fuel: u64) -> CopyState {
    CopyState::Success {
        output,
        fuel,
        engine: "e1".into(),
        resumed: false,
    }
}

fn job_of_units(store: &SqliteStore, units: usize) -> JobId {
    let input = b"in".to_vec();
    let ih = Hash::of(&input);
    store.put_blob(&ih, &input).unwrap();
    store.put_blob(&Hash([9; 32]), b"module").unwrap();
    store
        .create_job(
            &JobSubmission {
                name: "primes".into(),
                module: Hash([9; 32]),
                args: vec![],
                settings: JobSettings::default(),
                signature: signature(),
                validator: Default::default(),
                plots: Vec::new(),
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

fn account(id: u8, name: &str, team: &str) -> Account {
    Account {
        id: hex::encode([id; 32]),
        name: name.into(),
        team: team.into(),
    }
}

/// Host a's copies of five units end five ways, and a sixth is running:
/// its task list names each state, newest first, in pages, with credit
/// only where its result was valid and the credit granted.
#[test]
fn a_hosts_task_list_names_what_became_of_each_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
    let job = job_of_units(&store, 7);
    let host = |k: u8| {
        store
            .upsert_host(&[k; 32], &HostFacts::default(), "t", 1)
            .unwrap()
    };
    let (a, b, c) = (host(1), host(2), host(3));
    let (good, bad) = (Hash::of(b"good"), Hash::of(b"bad"));
    let mut ops = Vec::new();
    // Unit n is sent to a at 100·n: the list is newest first.
    for unit in 1..=7 {
        ops.push(StoreOp::Assign {
            unit,
            host: a,
            sent_ms: 100 * unit,
            deadline_ms: 10_000 + unit,
            single: false,
        });
    }
    for (unit, h) in [(1, b), (2, b), (2, c)] {
        ops.push(StoreOp::Assign {
            unit,
            host: h,
            sent_ms: 50,
            deadline_ms: 10_000,
            single: false,
        });
    }
    let report = |unit, host, state| StoreOp::Report {
        unit,
        host,
        state,
        elapsed_ms: 1500,
        received_ms: 2000 + unit,
    };
    // 1: a agrees with b (valid); 2: b and c agree, a did not (invalid);
    // 3: an error; 4: timed out; 5: a success awaiting its quorum;
    // 6: voided (given back); 7: running.
    ops.push(report(1, a, success(good, 500)));
    ops.push(report(1, b, success(good, 500)));
    ops.push(report(2, a, success(bad, 400)));
    ops.push(report(2, b, success(good, 400)));
    ops.push(report(2, c, success(good, 400)));
    ops.push(report(
        3,
        a,
        CopyState::Error("module trapped: unreachable\nmore".into()),
    ));
    ops.push(StoreOp::TimedOut { unit: 4, host: a });
    ops.push(report(5, a, success(good, 70)));
    ops.push(StoreOp::Void {
        unit: 6,
        host: a,
        reason: "given back".into(),
    });
    for (unit, fuel, hosts) in [(1, 500, vec![a, b]), (2, 400, vec![b, c])] {
        ops.push(StoreOp::Validate {
            pending_credit: false,
            unit,
            output: good,
            fuel,
            hosts,
            at_ms: 3000,
        });
    }
    store
        .apply(&ops, &[(good, b"good".to_vec()), (bad, b"bad".to_vec())])
        .unwrap();

    assert_eq!(store.host_task_count(a).unwrap(), 7);
    let tasks = store.host_tasks(a, 0, 50).unwrap();
    let seen: Vec<(u64, &str, u64)> = tasks
        .iter()
        .map(|t| (t.unit, t.state.as_str(), t.credit))
        .collect();
    assert_eq!(
        seen,
        [
            (7, "in_progress", 0),
            (6, "voided", 0),
            (5, "pending", 0),
            (4, "timed_out", 0),
            (3, "error", 0),
            (2, "invalid", 0),
            (1, "valid", 500),
        ]
    );
    let valid = &tasks[6];
    assert_eq!(
        (valid.job, valid.job_name.as_str(), valid.unit_name.as_str()),
        (job, "primes", "u1")
    );
    assert_eq!(
        (
            valid.sent_ms,
            valid.received_ms,
            valid.elapsed_ms,
            valid.fuel
        ),
        (100, Some(2001), Some(1500), Some(500))
    );
    assert_eq!(
        tasks[4].error.as_deref(),
        Some("module trapped: unreachable"),
        "the first line of the error"
    );
    assert_eq!((tasks[0].received_ms, tasks[0].deadline_ms), (None, 10_007));
    // Pages: offset and limit.
    let page: Vec<u64> = store
        .host_tasks(a, 2, 3)
        .unwrap()
        .iter()
        .map(|t| t.unit)
        .collect();
    assert_eq!(page, [5, 4, 3]);
    assert!(store.host_tasks(a, 7, 50).unwrap().is_empty());
    assert!(store.host_tasks(a, u64::MAX, 50).unwrap().is_empty());
    // b's valid copy of unit 2; c has only that one.
    assert_eq!(store.host_tasks(c, 0, 50).unwrap()[0].state, "valid");
    assert_eq!(store.host_task_count(c).unwrap(), 1);
    assert_eq!(store.host_task_count(999).unwrap(), 0);
}

/// A team is founded by the first account naming it, joined whatever
/// the ASCII case, left by naming another or none, and deleted with its
/// last host; a Hello without an attachment keeps the host's team.
#[test]
fn teams_are_founded_joined_and_left_through_hellos() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
    let facts = HostFacts {
        name: "Ada's laptop".into(),
        cpu_model: "AMD Ryzen 7 5800X".into(),
        slots: 3,
        cores: 8,
        ..HostFacts::default()
    };
    let ada = store
        .upsert_host_in(&[1; 32], &facts, "t", &account(10, "Ada", "Rust"), 5)
        .unwrap();
    let h = store.host(ada).unwrap().unwrap();
    assert_eq!(
        (
            h.name.as_str(),
            h.cpu_model.as_str(),
            h.slots,
            h.cores,
            h.team.as_str()
        ),
        ("Ada's laptop", "AMD Ryzen 7 5800X", 3, 8, "Rust")
    );
    assert_eq!(h.display_name(), "Ada's laptop");
    let rust = store.team_by_name("rust").unwrap().unwrap();
    assert_eq!(
        (rust.name.as_str(), rust.founder.as_str(), rust.created_ms),
        ("Rust", hex::encode([10u8; 32]).as_str(), 5)
    );
    assert_eq!(h.team_id, Some(rust.id));
    assert_eq!(store.team(rust.id).unwrap(), Some(rust.clone()));

    // Bob's host joins under another spelling: one team, founded by Ada.
    let bob = store
        .upsert_host_in(
            &[2; 32],
            &HostFacts::default(),
            "t",
            &account(11, "Bob", "RUST"),
            6,
        )
        .unwrap();
    assert_eq!(store.teams().unwrap(), vec![rust.clone()]);
    let b = store.host(bob).unwrap().unwrap();
    assert_eq!((b.team_id, b.team.as_str()), (Some(rust.id), "Rust"));
    assert_eq!(b.display_name(), format!("host-{}", hex::encode([2u8; 4])));
    let members: Vec<HostId> = store
        .team_hosts(Some(rust.id))
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(members, [ada, bob]);

    // A Hello without an attachment keeps Ada's host in the team.
    store
        .upsert_host(&[1; 32], &HostFacts::default(), "t", 7)
        .unwrap();
    let h = store.host(ada).unwrap().unwrap();
    assert_eq!(h.team_id, Some(rust.id));
    assert_eq!(h.name, "", "a name is what the latest Hello says");

    // Ada founds C; Rust keeps Bob.
    store
        .upsert_host_in(&[1; 32], &facts, "t", &account(10, "Ada", "C"), 8)
        .unwrap();
    let c = store.team_by_name("C").unwrap().unwrap();
    assert_eq!(store.teams().unwrap().len(), 2);
    assert_eq!(store.team_hosts(None).unwrap().len(), 2);
    // Bob leaves every team: Rust has no host left and is gone.
    store
        .upsert_host_in(
            &[2; 32],
            &HostFacts::default(),
            "t",
            &account(11, "Bob", ""),
            9,
        )
        .unwrap();
    assert_eq!(store.teams().unwrap(), vec![c.clone()]);
    assert_eq!(store.team(rust.id).unwrap(), None);
    assert_eq!(store.host(bob).unwrap().unwrap().team_id, None);
    let anyone: Vec<HostId> = store
        .team_hosts(None)
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(anyone, [ada]);
    assert_eq!(store.team_by_name("nobody").unwrap(), None);
    assert_eq!(store.team(u64::MAX).unwrap(), None);
}

/// A database made before hosts had names, CPU models, slots and teams
/// opens with them added (empty, 0, none), and its hosts can join teams.
#[test]
fn an_older_database_gains_host_names_and_teams() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path, false).unwrap();
    let id = store
        .upsert_host(&[5; 32], &HostFacts::default(), "t", 2)
        .unwrap();
    drop(store);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE schema_version; DROP INDEX hosts_team; DROP TABLE teams;
         ALTER TABLE hosts DROP COLUMN name; ALTER TABLE hosts DROP COLUMN cpu_model;
         ALTER TABLE hosts DROP COLUMN slots; ALTER TABLE hosts DROP COLUMN team_id;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, false).unwrap();
    let h = store.host(id).unwrap().unwrap();
    assert_eq!(
        (h.name.as_str(), h.cpu_model.as_str(), h.slots, h.team_id),
        ("", "", 0, None)
    );
    assert!(store.teams().unwrap().is_empty());
    store
        .upsert_host_in(
            &[5; 32],
            &HostFacts {
                name: "old box".into(),
                slots: 2,
                ..HostFacts::default()
            },
            "t",
            &account(1, "Ada", "Veterans"),
            3,
        )
        .unwrap();
    let h = store.host(id).unwrap().unwrap();
    assert_eq!(
        (h.name.as_str(), h.slots, h.team.as_str()),
        ("old box", 2, "Veterans")
    );
    // Opening it again changes nothing.
    drop(store);
    let store = SqliteStore::open(&path, false).unwrap();
    assert_eq!(store.teams().unwrap().len(), 1);
}
