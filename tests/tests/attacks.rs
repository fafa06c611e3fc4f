//! A determined stranger against a real coordinator process: hosts that
//! speak the wire protocol over QUIC with hostile choices (several
//! identities on one machine asking back to back and reporting one forged
//! output, a host claiming every core, inflated fuel, oversized and slow
//! greetings), while honest workers finish the job.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use peergrid_proto::JoinString;
use peergrid_proto::wire::{
    Attachment, ErrorCode, Exchange, ExchangeReply, HostFacts, Outcome, Reply, Request, Task,
    TaskReport, attachment_message,
};
use peergrid_tests::{Coordinator, JobOptions, Worker, loopback_network, lyapunov_job};
use peergrid_worker::identity::attach;
use peergrid_worker::net::{self, Session};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn identity(join: &JoinString, seed: u8, cores: u32, from: IpAddr) -> Session {
    peergrid_tests::connect_host(join, seed, cores, from)
        .await
        .unwrap()
}

async fn exchange(s: &Session, reports: Vec<TaskReport>, want: u32) -> ExchangeReply {
    let req = Request::Exchange(Exchange {
        reports,
        want,
        returned: Vec::new(),
        held: None,
    });
    match net::request(&s.connection, &req).await.unwrap() {
        Reply::Exchange(r) => r,
        other => panic!("{other:?}"),
    }
}

/// A coordinator serving a Lyapunov job of `units` units: it, the job's
/// id and its join string.
fn with_job(dir: &std::path::Path, units: usize) -> (Coordinator, u64, JoinString) {
    let coordinator = Coordinator::start(dir).unwrap();
    let spec = lyapunov_job(
        dir,
        &JobOptions {
            units,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let join = coordinator.join.parse().unwrap();
    (coordinator, job, join)
}

/// The first tasks a host gets, asking for `want`: a job's units reach the
/// dispatch window shortly after its submission, not at once.
async fn first_tasks(s: &Session, want: u32) -> Vec<Task> {
    let started = std::time::Instant::now();
    loop {
        let tasks = exchange(s, vec![], want).await.tasks;
        if !tasks.is_empty() || started.elapsed() > Duration::from_secs(20) {
            return tasks;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn forged(task: &Task, fuel: u64) -> TaskReport {
    TaskReport {
        unit: task.unit,
        outcome: Outcome::Success(b"forged".to_vec()),
        fuel_used: fuel,
        elapsed_ms: 1,
        engine: "forged".into(),
        resumed: false,
    }
}

/// Two fresh keys on one machine ask back to back and report the same
/// forged output for everything they get. Before copies were drawn at
/// random and kept off a network that already holds one, they got both
/// copies of the same units and every unit entered the dataset forged.
/// Now an honest worker on another network must take part in every
/// quorum, and the forgeries never agree with it.
#[test]
fn two_identities_of_one_machine_cannot_validate_their_forgery() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, job, join) = with_job(dir.path(), 20);
    let machine = loopback_network();
    let mut second = machine.to_string();
    second.replace_range(second.rfind('.').unwrap().., ".2");
    let second: IpAddr = second.parse().unwrap();
    let rt = runtime();
    let forged_copies = rt.block_on(async {
        let a = identity(&join, 71, 1, machine).await;
        let b = identity(&join, 72, 1, second).await;
        let mut reported = 0;
        for _ in 0..40 {
            let ta = exchange(&a, vec![], 4).await.tasks;
            let tb = exchange(&b, vec![], 4).await.tasks;
            reported += ta.len() + tb.len();
            exchange(&a, ta.iter().map(|t| forged(t, 1000)).collect(), 0).await;
            exchange(&b, tb.iter().map(|t| forged(t, 1000)).collect(), 0).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        reported
    });
    assert!(forged_copies > 0, "the attackers got work");
    // The job says why its units are not going out.
    let waiting = coordinator.status(job).unwrap()["waiting"].clone();
    assert!(
        waiting
            .as_str()
            .is_some_and(|w| w.contains("another network")),
        "{waiting}"
    );
    let _honest = coordinator.workers(dir.path(), "honest", 2).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(180))
        .unwrap();
    let rows = coordinator.dataset(job).unwrap();
    let forged_rows = rows
        .iter()
        .filter(|r| r["output"].as_str() == Some("forged"))
        .count();
    assert_eq!(forged_rows, 0, "forged rows in the dataset: {status}");
    assert_eq!(status["validated"], 20, "{status}");
}

/// A new host claiming `u32::MAX` cores once took all 122 copies of a
/// 61-unit job in one exchange and never reported, stalling the job;
/// now it holds a young host's share and an honest worker gets the rest.
#[test]
fn a_host_claiming_every_core_cannot_hoard_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, job, join) = with_job(dir.path(), 61);
    let rt = runtime();
    let hoarded = rt.block_on(async {
        let h = identity(&join, 81, u32::MAX, loopback_network()).await;
        let got = first_tasks(&h, 256).await.len();
        got + exchange(&h, vec![], 256).await.tasks.len()
    });
    // The default policy: 4 counted cores, 4 copies in flight per core.
    assert!(hoarded > 0 && hoarded <= 16, "hoarded {hoarded} copies");
    let _honest: Vec<Worker> = coordinator.workers(dir.path(), "honest", 2).unwrap();
    let started = std::time::Instant::now();
    loop {
        let status = coordinator.status(job).unwrap();
        let validated = status["validated"].as_u64().unwrap();
        // Units whose copy the hoarder holds wait for its deadline; all
        // the others are validated by the honest workers meanwhile.
        if validated + hoarded as u64 >= 61 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "honest workers were starved: {status}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Reported fuel above the task's limit is refused, so a host cannot
/// claim credit it did not compute.
#[test]
fn fuel_above_the_tasks_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, _job, join) = with_job(dir.path(), 2);
    let rt = runtime();
    rt.block_on(async {
        let h = identity(&join, 91, 1, loopback_network()).await;
        let task = first_tasks(&h, 1).await.first().expect("a task").clone();
        let reply = exchange(&h, vec![forged(&task, 4_000_000_000_000_000_000)], 0).await;
        assert!(reply.accepted.is_empty(), "{reply:?}");
        assert_eq!(reply.rejected.len(), 1);
        assert!(
            reply.rejected[0].1.contains("exceeds the task's limit"),
            "{reply:?}"
        );
    });
    let db = coordinator.db();
    let total: i64 = db
        .query_row(
            "SELECT coalesce(max(credit_total), 0) FROM hosts",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(total, 0);
}

/// A greeting larger than the Hello limit is refused at once; one that
/// never arrives holds the connection only until the Hello deadline.
#[test]
fn oversized_and_silent_greetings_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let join: JoinString = coordinator.join.parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (_ep, conn) = net::connect_raw(&join, peergrid_proto::wire::ALPN, None)
            .await
            .unwrap();
        // 50 MiB of `os` used to be read whole and stored.
        let hello = Request::Hello(peergrid_proto::wire::Hello {
            host_key: [1; 32],
            timestamp_ms: 0,
            signature: vec![0; 64],
            facts: HostFacts {
                os: "x".repeat(1 << 20),
                ..HostFacts::default()
            },
            worker_version: String::new(),
            account: None,
        });
        let bytes = peergrid_proto::codec::encode(&hello).unwrap();
        let reply = net::request_bytes(&conn, &bytes).await.unwrap();
        match peergrid_proto::codec::decode::<Reply>(&reply).unwrap() {
            Reply::Error(e) => assert_eq!(e.code, ErrorCode::TooLarge, "{e}"),
            other => panic!("{other:?}"),
        }

        // A connection that never says Hello is closed after the deadline.
        let (_ep, silent) = net::connect_raw(&join, peergrid_proto::wire::ALPN, None)
            .await
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(30), silent.closed()).await;
        assert!(closed.is_ok(), "a silent connection stayed open for 30 s");
    });
}

/// Hello strings the dashboard stores and shows are bounded and printable
/// (names and teams: bounded, without control or invisible characters).
#[test]
fn a_greeting_with_huge_or_unprintable_facts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let join: JoinString = coordinator.join.parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let key = SigningKey::from_bytes(&[5; 32]);
        let team = |team: &str| {
            Some(peergrid_worker::identity::attach(
                &SigningKey::from_bytes(&[6; 32]),
                &key,
                "ada",
                team,
            ))
        };
        for (facts, account, expected) in [
            (
                HostFacts {
                    arch: "a".repeat(4000),
                    ..HostFacts::default()
                },
                None,
                "printable ASCII",
            ),
            (
                HostFacts {
                    os: "Linux\u{1b}[2J".into(),
                    ..HostFacts::default()
                },
                None,
                "printable ASCII",
            ),
            (
                HostFacts {
                    cpu_model: "Intel\u{1b}]0;pwned\u{7}".into(),
                    ..HostFacts::default()
                },
                None,
                "printable ASCII",
            ),
            // Names may be any language, but bounded and without the
            // characters that hide or reorder text on a leaderboard.
            (
                HostFacts {
                    name: "exe.\u{202E}gnp".into(),
                    ..HostFacts::default()
                },
                None,
                "host name contains the invisible or control character U+202E",
            ),
            (
                HostFacts {
                    name: "é".repeat(40),
                    ..HostFacts::default()
                },
                None,
                "host name is 80 bytes long",
            ),
            (
                HostFacts::default(),
                team("team\nname"),
                "team name contains the invisible or control character U+000A",
            ),
        ] {
            // Signed as a worker would, but sent as is (the worker's own
            // client cleans its facts).
            let timestamp_ms = peergrid_os::now_ms();
            let message = peergrid_proto::wire::hello_message(&join.cert_sha256, timestamp_ms);
            use ed25519_dalek::Signer;
            let hello = Request::Hello(peergrid_proto::wire::Hello {
                host_key: key.verifying_key().to_bytes(),
                timestamp_ms,
                signature: key.sign(&message).to_bytes().to_vec(),
                facts,
                worker_version: "1".into(),
                account,
            });
            let (_ep, conn) = net::connect_raw(&join, peergrid_proto::wire::ALPN, None)
                .await
                .unwrap();
            match net::request(&conn, &hello).await.unwrap() {
                Reply::Error(e) => {
                    assert_eq!(e.code, ErrorCode::Unauthenticated, "{e}");
                    assert!(e.message.contains(expected), "{e}");
                }
                other => panic!("{other:?}"),
            }
        }
    });
    let db = coordinator.db();
    let hosts: i64 = db
        .query_row("SELECT count(*) FROM hosts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(hosts, 0, "nothing stored");
    let teams: i64 = db
        .query_row("SELECT count(*) FROM teams", [], |r| r.get(0))
        .unwrap();
    assert_eq!(teams, 0, "no team made");
}

/// One machine cannot fill the door: past its share of connections, its
/// attempts are refused while a worker on another address is served; and
/// a connection whose host holds no work and asks for none is closed.
#[test]
fn one_address_cannot_fill_the_door_and_idle_connections_close() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start_with(
        dir.path(),
        &["--max-connections-per-ip", "8", "--idle-secs", "2"],
    )
    .unwrap();
    let join: JoinString = coordinator.join.parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let flood = loopback_network();
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(
                net::connect_raw(&join, peergrid_proto::wire::ALPN, Some(flood))
                    .await
                    .unwrap(),
            );
        }
        let refused = net::connect_raw(&join, peergrid_proto::wire::ALPN, Some(flood)).await;
        assert!(refused.is_err(), "a ninth connection from one address");
        // A worker elsewhere is served, and its idle connection is closed
        // after the idle time (it holds no work and asks for none).
        let honest = identity(&join, 61, 1, loopback_network()).await;
        assert!(exchange(&honest, vec![], 0).await.tasks.is_empty());
        let closed =
            tokio::time::timeout(Duration::from_secs(20), honest.connection.closed()).await;
        assert!(closed.is_ok(), "an idle connection stayed open for 20 s");
        drop(held);
    });
}

/// Fresh keys are free, so one address may register only a few new hosts
/// an hour: past that it gets `Busy`, while a host it already registered
/// and a new host from another address still get in.
#[test]
fn one_address_cannot_register_new_hosts_without_end() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator =
        Coordinator::start_with(dir.path(), &["--new-hosts-per-ip-per-hour", "3"]).unwrap();
    let join: JoinString = coordinator.join.parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let from = loopback_network();
        for seed in 81..=83 {
            identity(&join, seed, 1, from).await;
        }
        let facts = HostFacts {
            cores: 1,
            ..HostFacts::default()
        };
        let fourth =
            net::connect(&join, &SigningKey::from_bytes(&[84; 32]), facts, Some(from)).await;
        match fourth {
            Err(net::NetError::Refused(e)) => {
                assert_eq!(e.code, ErrorCode::Busy, "{}", e.message)
            }
            Err(e) => panic!("expected Busy, got {e}"),
            Ok(_) => panic!("a fourth new host from one address got in"),
        }
        // A host this address already registered comes back.
        identity(&join, 81, 1, from).await;
        // A new host from another address is welcome.
        identity(&join, 85, 1, loopback_network()).await;
    });
}

/// An account is a key: nobody attaches a host to an account without the
/// account's key, and an attachment signed for one host does not carry
/// over to another. (Account names were self-chosen: anyone could run
/// hosts as "alice", and get her banned.)
#[test]
fn nobody_attaches_a_host_to_an_account_without_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let join: JoinString = coordinator.join.parse().unwrap();
    let alice = SigningKey::from_bytes(&[70; 32]);
    let alice_host = SigningKey::from_bytes(&[72; 32]);
    let mallory_host = SigningKey::from_bytes(&[71; 32]);
    let facts = || HostFacts {
        cores: 1,
        ..HostFacts::default()
    };
    let refused = |r: Result<Session, net::NetError>| match r {
        Err(net::NetError::Refused(e)) => e,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("a host got into an account it has no key for"),
    };
    let rt = runtime();
    rt.block_on(async {
        // Mallory names Alice's account key but can only sign with her own.
        let forged = Attachment {
            account_key: alice.verifying_key().to_bytes(),
            name: "alice".into(),
            team: String::new(),
            signature: mallory_host
                .sign(&attachment_message(
                    &mallory_host.verifying_key().to_bytes(),
                    "alice",
                    "",
                ))
                .to_bytes()
                .to_vec(),
        };
        let from = Some(loopback_network());
        let e = refused(
            net::connect_attached(&join, &mallory_host, facts(), Some(&forged), from).await,
        );
        assert_eq!(e.code, ErrorCode::Unauthenticated, "{}", e.message);
        assert!(e.message.contains("account"), "{}", e.message);
        // Alice's real attachment of her own host, replayed by Mallory.
        let real = attach(&alice, &alice_host, "alice", "");
        let e =
            refused(net::connect_attached(&join, &mallory_host, facts(), Some(&real), from).await);
        assert_eq!(e.code, ErrorCode::Unauthenticated, "{}", e.message);
        // Alice's host with it gets in, recorded under her key.
        net::connect_attached(&join, &alice_host, facts(), Some(&real), from)
            .await
            .unwrap();
    });
    let (account, name): (String, String) = coordinator
        .db()
        .query_row(
            "SELECT account, account_name FROM hosts WHERE public_key = ?1",
            [alice_host.verifying_key().to_bytes().to_vec()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(account, hex::encode(alice.verifying_key().to_bytes()));
    assert_eq!(name, "alice");
    let mallory_rows: i64 = coordinator
        .db()
        .query_row(
            "SELECT count(*) FROM hosts WHERE public_key = ?1",
            [mallory_host.verifying_key().to_bytes().to_vec()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mallory_rows, 0, "a refused host was registered");
}
