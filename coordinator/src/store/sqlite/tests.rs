#![allow(clippy::unwrap_used)]
use super::*;
use crate::quorum::{Copy, CopyState};
use peergrid_proto::signing::ModuleSignature;
use peergrid_proto::spec::{JobSettings, UnitSpec, Validator};

/// A well-formed signature for jobs the store tests create.
pub(crate) fn test_signature() -> ModuleSignature {
    ModuleSignature {
        endorsement: peergrid_proto::signing::Endorsement {
            researcher_key: "00".repeat(32),
            name: "Ada".into(),
            project_signature: "00".repeat(64),
        },
        signature: "00".repeat(64),
    }
}

/// A job of `module` with one unit per input, named `u0`, `u1`, ….
pub(crate) fn submission(module: Hash, validator: Validator, inputs: &[Hash]) -> JobSubmission {
    JobSubmission {
        plots: Vec::new(),
        name: "j".into(),
        module,
        args: vec![],
        settings: JobSettings::default(),
        signature: test_signature(),
        validator,
        terms: Default::default(),
        units: inputs
            .iter()
            .enumerate()
            .map(|(n, input)| UnitSpec {
                name: format!("u{n}"),
                input: *input,
            })
            .collect(),
    }
}

/// Opens `path`, which applies every step it lacks, and checks it is then
/// at this build's version.
pub(crate) fn open_at_latest(path: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(path, false).unwrap();
    assert_eq!(
        SqliteStore::schema_status(path).unwrap().version,
        SCHEMA_VERSION
    );
    store
}

/// A copy of `unit` sent to `host` at `at` and reported with `output`.
pub(crate) fn success_copy(unit: UnitId, host: HostId, output: Hash, at: u64) -> [StoreOp; 2] {
    [
        StoreOp::Assign {
            unit,
            host,
            sent_ms: at,
            deadline_ms: at + 100,
            single: false,
        },
        StoreOp::Report {
            unit,
            host,
            state: CopyState::Success {
                output,
                fuel: 5,
                engine: "e".into(),
                resumed: false,
            },
            elapsed_ms: 1,
            received_ms: at + 1,
        },
    ]
}

/// `unit` validated at `at + 2` with `out`, from a copy of each of `hosts`.
pub(crate) fn validate_with(
    store: &SqliteStore,
    unit: UnitId,
    hosts: &[HostId],
    out: &[u8],
    at: u64,
) {
    let output = Hash::of(out);
    let mut ops: Vec<StoreOp> = hosts
        .iter()
        .flat_map(|h| success_copy(unit, *h, output, at))
        .collect();
    ops.push(StoreOp::Validate {
        unit,
        output,
        fuel: 5,
        hosts: hosts.to_vec(),
        at_ms: at + 2,
        pending_credit: false,
    });
    store.apply(&ops, &[(output, out.to_vec())]).unwrap();
}

/// When a unit validates, the bytes of the outputs that lost go, and
/// only those nothing else names.
#[test]
fn outputs_that_lost_their_quorum_are_deleted_unless_named_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
    let blob = |bytes: &[u8]| {
        let h = Hash::of(bytes);
        store.put_blob(&h, bytes).unwrap();
        h
    };
    let input = blob(b"in");
    let module = blob(b"module");
    let sub = submission(module, Validator::Bitwise, &[input, input]);
    store.create_job(&sub, 1).unwrap();
    let hosts: Vec<HostId> = (1..=5u8)
        .map(|k| {
            store
                .upsert_host(&[k; 32], &HostFacts::default(), "t", 2)
                .unwrap()
        })
        .collect();
    let good = blob(b"good");
    let forged = blob(b"forged");
    let shared = blob(b"forged too, but another unit's host claimed it as well");
    let same_as_input = input;
    let late = blob(b"claimed again in the validation's own batch");
    let report = |unit, host, output| {
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
                state: CopyState::Success {
                    output,
                    fuel: 7,
                    engine: "e".into(),
                    resumed: false,
                },
                elapsed_ms: 1,
                received_ms: 4,
            },
        ]
    };
    let mut ops = Vec::new();
    ops.extend(report(1, hosts[0], good));
    ops.extend(report(1, hosts[1], good));
    ops.extend(report(1, hosts[2], forged));
    ops.extend(report(1, hosts[3], shared));
    ops.extend(report(1, hosts[4], late));
    // Unit 2 is still open, and one of its hosts claimed `shared`.
    ops.extend(report(2, hosts[3], shared));
    ops.extend(report(2, hosts[2], same_as_input));
    store.apply(&ops, &[]).unwrap();
    // The group-commit writer merges batches: a report naming `late`
    // may follow the validation in one transaction, its blob insert
    // (a no-op, the bytes are there) before both.
    let mut batch = vec![StoreOp::Validate {
        pending_credit: false,
        unit: 1,
        output: good,
        fuel: 7,
        hosts: vec![hosts[0], hosts[1]],
        at_ms: 5,
    }];
    batch.extend(report(2, hosts[4], late));
    store.apply(&batch, &[]).unwrap();
    assert!(
        store.get_blob(&late).unwrap().is_some(),
        "a report in the same batch names it"
    );
    assert_eq!(
        store.get_blob(&forged).unwrap(),
        None,
        "the loser's output is gone"
    );
    assert!(
        store.get_blob(&good).unwrap().is_some(),
        "the dataset's output stays"
    );
    assert!(
        store.get_blob(&shared).unwrap().is_some(),
        "another unit names it"
    );
    assert!(store.get_blob(&input).unwrap().is_some());
    assert!(store.get_blob(&module).unwrap().is_some());
    // The record of what the loser claimed stays.
    let claimed: Vec<u8> = store
        .writer
        .lock()
        .unwrap()
        .query_row(
            "SELECT output_hash FROM results WHERE unit_id = 1 AND host_id = ?1",
            [hosts[2]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(claimed, forged.0.to_vec());
}

/// A caught host's validated rows move to the history, its copies are
/// voided and the units come back, in order, for the feeder.
#[test]
fn repair_reopens_the_rows_a_caught_host_validated() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
    let input = b"in".to_vec();
    let ih = Hash::of(&input);
    store.put_blob(&ih, &input).unwrap();
    store.put_blob(&Hash([9; 32]), b"module").unwrap();
    let unit = |name: &str| UnitSpec {
        name: name.into(),
        input: ih,
    };
    let sub = JobSubmission {
        plots: Vec::new(),
        name: "j".into(),
        module: Hash([9; 32]),
        args: vec![],
        settings: JobSettings::default(),
        signature: test_signature(),
        validator: Default::default(),
        terms: Default::default(),
        units: vec![unit("a"), unit("b"), unit("c")],
    };
    store.create_job(&sub, 1).unwrap();
    let liar = store
        .upsert_host(&[5; 32], &HostFacts::default(), "t", 2)
        .unwrap();
    let other = store
        .upsert_host(&[6; 32], &HostFacts::default(), "t", 2)
        .unwrap();
    let out = b"forged".to_vec();
    let oh = Hash::of(&out);
    let mut ops = Vec::new();
    for u in 1..=3 {
        for host in [liar, other] {
            ops.push(StoreOp::Assign {
                unit: u,
                host,
                sent_ms: 3,
                deadline_ms: 99,
                single: false,
            });
            ops.push(StoreOp::Report {
                unit: u,
                host,
                state: CopyState::Success {
                    output: oh,
                    fuel: 7,
                    engine: "e".into(),
                    resumed: false,
                },
                elapsed_ms: 1,
                received_ms: 4,
            });
        }
        let hosts = if u == 3 {
            vec![other]
        } else {
            vec![liar, other]
        };
        ops.push(StoreOp::Validate {
            pending_credit: false,
            unit: u,
            output: oh,
            fuel: 7,
            hosts,
            at_ms: 5,
        });
    }
    store.apply(&ops, &[(oh, out)]).unwrap();
    assert_eq!(store.dataset_page(1, 0, 10).unwrap().len(), 3);
    let reason = "host 1 was caught: its result for unit 9 was invalid".to_string();
    store
        .apply(
            &[StoreOp::Repair {
                host: liar,
                reason: reason.clone(),
                at_ms: 50,
            }],
            &[],
        )
        .unwrap();
    let rows = store.dataset_page(1, 0, 10).unwrap();
    assert_eq!(rows.len(), 1, "only the row the liar did not stand in");
    let reopened = store.load_reopened_units(0, 10, usize::MAX).unwrap();
    assert_eq!(
        reopened.iter().map(|(_, u)| u.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(reopened[0].0 < reopened[1].0, "in order");
    for (_, u) in &reopened {
        assert!(
            u.copies
                .iter()
                .any(|c| c.host == liar && c.state == CopyState::Voided(reason.clone()))
        );
        assert!(
            u.copies
                .iter()
                .any(|c| c.host == other && matches!(c.state, CopyState::Success { .. }))
        );
    }
    assert!(
        store
            .load_reopened_units(reopened[1].0, 10, usize::MAX)
            .unwrap()
            .is_empty()
    );
    store
        .read(|c| {
            let (n, why): (i64, String) = c.query_row(
                "SELECT count(*), max(reason) FROM dataset_history WHERE replaced_ms = 50",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            assert_eq!((n, why), (2, reason.clone()));
            Ok(())
        })
        .unwrap();
    // A dispute reopens one row and marks the unit.
    store
        .apply(&[StoreOp::Dispute { unit: 3, at_ms: 60 }], &[])
        .unwrap();
    let disputed = store
        .load_reopened_units(reopened[1].0, 10, usize::MAX)
        .unwrap();
    assert_eq!(disputed.len(), 1);
    assert!(disputed[0].1.disputed && disputed[0].1.id == 3);
    assert!(store.dataset_page(1, 0, 10).unwrap().is_empty());
}

#[test]
fn job_round_trip_and_restart_recovers_copies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path, false).unwrap();
    let input = b"unit input".to_vec();
    let ih = Hash::of(&input);
    store.put_blob(&ih, &input).unwrap();
    store.put_blob(&Hash([9; 32]), b"module").unwrap();
    assert_eq!(
        store.missing_blobs(&[ih, Hash([1; 32])]).unwrap(),
        vec![Hash([1; 32])]
    );
    let sub = JobSubmission {
        plots: Vec::new(),
        name: "j".into(),
        module: Hash([9; 32]),
        args: vec!["-x".into()],
        settings: JobSettings::default(),
        signature: test_signature(),
        validator: Default::default(),
        terms: Default::default(),
        units: vec![
            UnitSpec {
                name: "a".into(),
                input: ih,
            },
            UnitSpec {
                name: "b".into(),
                input: ih,
            },
        ],
    };
    let job = store.create_job(&sub, 1).unwrap();
    let host = store
        .upsert_host(&[5; 32], &HostFacts::default(), "t", 2)
        .unwrap();
    let out = b"answer".to_vec();
    let oh = Hash::of(&out);
    store
        .apply(
            &[
                StoreOp::Assign {
                    unit: 1,
                    host,
                    sent_ms: 3,
                    deadline_ms: 99,
                    single: false,
                },
                StoreOp::Assign {
                    unit: 2,
                    host,
                    sent_ms: 3,
                    deadline_ms: 99,
                    single: true,
                },
                StoreOp::Report {
                    unit: 1,
                    host,
                    state: CopyState::Success {
                        output: oh,
                        fuel: 7,
                        engine: "e".into(),
                        resumed: false,
                    },
                    elapsed_ms: 1,
                    received_ms: 4,
                },
                StoreOp::Validate {
                    pending_credit: false,
                    unit: 1,
                    output: oh,
                    fuel: 7,
                    hosts: vec![host],
                    at_ms: 5,
                },
            ],
            &[(oh, out.clone())],
        )
        .unwrap();
    drop(store);

    let store = SqliteStore::open(&path, false).unwrap();
    let st = store.job_status(job).unwrap().unwrap();
    assert_eq!(
        (st.units_total, st.validated, st.in_progress, st.pending),
        (2, 1, 1, 0)
    );
    let active = store.load_active_units(0, 10, usize::MAX).unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].input, input);
    assert_eq!(active[0].input_len, input.len() as u64);
    // An input of at least `bytes_below` bytes comes without its bytes,
    // with its length and hash (it goes to workers by reference).
    let by_reference = store.load_active_units(0, 10, input.len()).unwrap();
    assert!(by_reference[0].input.is_empty());
    assert_eq!(
        (by_reference[0].input_len, by_reference[0].input_hash),
        (input.len() as u64, ih)
    );
    assert_eq!(
        active[0].copies,
        vec![Copy {
            host,
            state: CopyState::InProgress { deadline_ms: 99 }
        }]
    );
    assert!(active[0].single, "sent as a single copy");
    drop(store);

    // A later copy sent to another host with the quorum's rules: the
    // latest assignment decides.
    let store = SqliteStore::open(&path, false).unwrap();
    let other = store
        .upsert_host(&[6; 32], &HostFacts::default(), "t", 2)
        .unwrap();
    store
        .apply(
            &[StoreOp::Assign {
                unit: 2,
                host: other,
                sent_ms: 50,
                deadline_ms: 99,
                single: false,
            }],
            &[],
        )
        .unwrap();
    assert!(!store.load_active_units(0, 10, usize::MAX).unwrap()[0].single);
    let rows = store.dataset_page(job, 0, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].output, out);
    assert_eq!(rows[0].hosts, vec![hex::encode([5u8; 32])]);
    assert_eq!(
        store.job_info(job).unwrap().unwrap().args,
        vec!["-x".to_string()]
    );
}
