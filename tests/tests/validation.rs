//! Validators and operator bans through a real coordinator process: hosts
//! speak the wire protocol over QUIC and report outputs chosen by the
//! test (standing in for machines whose outputs differ in their last
//! digits), the coordinator compares them with a tolerance or with the
//! researcher's own wasm module, and an operator bans hosts from the
//! command line while the coordinator runs.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use peergrid_proto::JoinString;
use peergrid_proto::wire::{
    ErrorCode, Exchange, ExchangeReply, HostFacts, Outcome, Reply, Request, TaskReport,
};
use peergrid_tests::{
    Coordinator, bin, children, compare_wasm, is_gone, job_spec, probe_wasm, wait_for,
};
use peergrid_worker::net::{self, NetError, Session};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The key of the volunteer account named `name` in these tests.
fn account_key(name: &str) -> SigningKey {
    SigningKey::from_bytes(blake3::hash(name.as_bytes()).as_bytes())
}

/// Host `seed`, attached to the account named `account` (its key made
/// from the name) unless that is empty.
async fn host(join: &JoinString, seed: u8, account: &str) -> Result<Session, NetError> {
    let facts = HostFacts {
        cores: 1,
        ..HostFacts::default()
    };
    let key = SigningKey::from_bytes(&[seed; 32]);
    let attachment = (!account.is_empty())
        .then(|| peergrid_worker::identity::attach(&account_key(account), &key, account, ""));
    net::connect_attached(
        join,
        &key,
        facts,
        attachment.as_ref(),
        Some(peergrid_tests::loopback_network()),
    )
    .await
}

/// Three anonymous hosts, keys from seeds 1, 2 and 3.
async fn three_hosts(join: &JoinString) -> (Session, Session, Session) {
    (
        host(join, 1, "").await.unwrap(),
        host(join, 2, "").await.unwrap(),
        host(join, 3, "").await.unwrap(),
    )
}

async fn exchange(s: &Session, reports: Vec<TaskReport>, want: u32) -> Reply {
    net::request(
        &s.connection,
        &Request::Exchange(Exchange {
            reports,
            want,
            returned: Vec::new(),
            held: None,
        }),
    )
    .await
    .unwrap()
}

async fn fetch(s: &Session, want: u32) -> ExchangeReply {
    match exchange(s, vec![], want).await {
        Reply::Exchange(r) => r,
        other => panic!("{other:?}"),
    }
}

/// Fetches until `n` tasks arrived: a job's units reach the dispatch
/// window shortly after the submission returns, not at once.
async fn fetch_n(s: &Session, n: usize) -> Vec<peergrid_proto::wire::Task> {
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    while tasks.len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "got {} of {n} tasks in 20 s",
            tasks.len()
        );
        let got = fetch(s, (n - tasks.len()) as u32).await.tasks;
        if got.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tasks.extend(got);
    }
    tasks
}

fn report(unit: u64, output: &str) -> TaskReport {
    TaskReport {
        unit,
        outcome: Outcome::Success(output.as_bytes().to_vec()),
        fuel_used: 1234,
        elapsed_ms: 1,
        engine: "test".into(),
        resumed: false,
    }
}

/// Reports and checks every report was stored.
async fn deliver(s: &Session, reports: Vec<TaskReport>) {
    let n = reports.len();
    match exchange(s, reports, 0).await {
        Reply::Exchange(r) => assert_eq!(r.accepted.len(), n, "{r:?}"),
        other => panic!("{other:?}"),
    }
}

fn key_hex(seed: u8) -> String {
    hex::encode(
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes(),
    )
}

/// The dataset's agreeing hosts per unit, in unit order.
fn agreeing_hosts(c: &Coordinator, job: u64) -> Vec<Vec<String>> {
    c.dataset(job)
        .unwrap()
        .iter()
        .map(|row| {
            row["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// A job named `custom` of two probe units whose outputs the example
/// custom validator (`compare.wasm`) compares.
fn compared_probe_job(dir: &std::path::Path) -> std::path::PathBuf {
    job_spec(
        dir,
        "custom",
        &probe_wasm(),
        2,
        &format!(
            "[validator]\nkind = \"custom\"\nmodule = {:?}",
            compare_wasm().to_string_lossy()
        ),
    )
    .unwrap()
}

#[test]
fn tolerance_and_custom_validators_accept_near_outputs_and_refuse_far_ones() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).unwrap();
    let join: JoinString = c.join.parse().unwrap();
    let tolerant = c
        .submit(
            &job_spec(
                dir.path(),
                "tolerant",
                &probe_wasm(),
                2,
                "[validator]\nkind = \"tolerance\"\nrel_epsilon = 1e-6",
            )
            .unwrap(),
        )
        .unwrap();
    let custom_spec = compared_probe_job(dir.path());
    let custom = c.submit(&custom_spec).unwrap();

    let rt = runtime();
    rt.block_on(async {
        let (a, b, d) = three_hosts(&join).await;
        let ta = fetch_n(&a, 4).await;
        let tb = fetch_n(&b, 4).await;
        assert_eq!(ta.len(), 4, "two units of each job");
        let units = |job: u64| -> Vec<u64> {
            let mut u: Vec<u64> = ta.iter().filter(|t| t.job == job).map(|t| t.unit).collect();
            u.sort();
            u
        };
        assert_eq!(
            tb.iter()
                .map(|t| t.unit)
                .collect::<std::collections::BTreeSet<_>>(),
            ta.iter().map(|t| t.unit).collect()
        );
        let (t1, t2) = (units(tolerant)[0], units(tolerant)[1]);
        let (k1, k2) = (units(custom)[0], units(custom)[1]);

        deliver(
            &a,
            vec![
                report(t1, "[1.0, 2.0]"),
                report(t2, "[1.0]"),
                report(k1, "1.0 2.0\n# took 3 s\n"),
                report(k2, "1 2"),
            ],
        )
        .await;
        deliver(
            &b,
            vec![
                // Within a relative 1e-6: agrees.
                report(t1, "[1.0000001, 2]"),
                // 50 % off: disagrees.
                report(t2, "[1.5]"),
                // The custom validator ignores comment lines and compares
                // numbers to 1e-9.
                report(k1, "1.0000000000001 2\n# took 9 s\n"),
                report(k2, "1 3"),
            ],
        )
        .await;
        let status = c.status(tolerant).unwrap();
        assert_eq!(status["validated"], 1, "{status}");
        assert_eq!(c.status(custom).unwrap()["validated"], 1);

        // A third host breaks both ties, siding with b on the tolerance
        // job and with a on the custom one.
        let td = fetch_n(&d, 2).await;
        let mut got: Vec<u64> = td.iter().map(|t| t.unit).collect();
        got.sort();
        assert_eq!(got, vec![t2, k2]);
        assert!(
            fetch(&d, 4).await.tasks.is_empty(),
            "nothing else needs a copy"
        );
        deliver(&d, vec![report(t2, "[1.50000001]"), report(k2, "1.0 2.0")]).await;
    });
    c.wait_finished(tolerant, Duration::from_secs(10)).unwrap();
    c.wait_finished(custom, Duration::from_secs(10)).unwrap();
    assert_eq!(
        agreeing_hosts(&c, tolerant),
        vec![vec![key_hex(1), key_hex(2)], vec![key_hex(2), key_hex(3)]]
    );
    assert_eq!(
        agreeing_hosts(&c, custom),
        vec![vec![key_hex(1), key_hex(2)], vec![key_hex(1), key_hex(3)]]
    );

    // A validator that is not wasm is refused at submission, by name.
    let broken = job_spec(
        dir.path(),
        "broken-validator",
        &probe_wasm(),
        1,
        &format!(
            "[validator]\nkind = \"custom\"\nmodule = {:?}",
            custom_spec.to_string_lossy()
        ),
    )
    .unwrap();
    let out = c.cli(&["job", "submit", &broken.to_string_lossy()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("custom validator"), "{err}");
}

#[test]
fn a_slow_custom_validator_delays_only_the_report_it_checks() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).unwrap();
    let join: JoinString = c.join.parse().unwrap();
    // A validator that never answers: the sandbox stops it at the job's
    // deadline (5 s here), and a validator that fails counts as "disagree".
    let spinner = dir.path().join("spinner.wasm");
    std::fs::write(
        &spinner,
        wat::parse_str(
            r#"(module (memory (export "memory") 1) (func (export "_start") (loop br 0)))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let job = c
        .submit(
            &job_spec(
                dir.path(),
                "slow-validator",
                &probe_wasm(),
                1,
                &format!(
                    "delay_bound = 5\n[validator]\nkind = \"custom\"\nmodule = {:?}",
                    spinner.to_string_lossy()
                ),
            )
            .unwrap(),
        )
        .unwrap();
    let coordinator_pid = c.pid().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (a, b, d) = three_hosts(&join).await;
        let unit = fetch_n(&a, 1).await[0].unit;
        assert_eq!(fetch_n(&b, 1).await[0].unit, unit);
        deliver(&a, vec![report(unit, "1")]).await;

        // b's different output starts the validator, which runs for the
        // job's 5 s deadline; meanwhile another host is served.
        let slow = tokio::spawn(async move {
            let reply = exchange(&b, vec![report(unit, "2")], 0).await;
            (b, reply)
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // It runs in a runner process of the coordinator's, at the lowest
        // priority, not in a thread of the coordinator.
        let runners = children(coordinator_pid);
        assert_eq!(runners.len(), 1, "one validator runner: {runners:?}");
        let exe = std::fs::read_link(format!("/proc/{}/exe", runners[0])).unwrap();
        assert_eq!(exe, bin("peergrid-runner").canonicalize().unwrap());
        wait_for(
            "the runner at idle priority",
            Duration::from_secs(5),
            || {
                let (policy, _) = peergrid_os::process::policy_and_nice(runners[0]).ok()?;
                (policy == 5).then_some(())
            },
        )
        .unwrap();
        let runner = runners[0];
        let served = fetch(&d, 1).await;
        assert!(
            !slow.is_finished(),
            "the validator should still be running when the other host is served"
        );
        assert!(served.tasks.is_empty(), "the unit has both its copies out");
        let (_b, reply) = slow.await.unwrap();
        match reply {
            Reply::Exchange(r) => assert_eq!(r.accepted, vec![unit], "{r:?}"),
            other => panic!("{other:?}"),
        }
        // The validator gave no answer, which counts as "disagree": the unit
        // needs a third copy.
        assert_eq!(fetch_n(&d, 1).await[0].unit, unit);
        // Its runner was killed at the deadline.
        assert!(is_gone(runner), "the validator's runner lives on");
    });
    let log = c.log().unwrap();
    assert!(
        log.contains("custom validator failed: wall-clock limit of 5000 ms exceeded"),
        "{log}"
    );
    assert_eq!(
        c.status(job).unwrap()["validated"],
        0,
        "no verdict, no quorum"
    );
}

/// A custom validator whose runner crashes (a host-side abort, as a
/// wasmtime bug would cause) costs one verdict, counted as "disagree";
/// the coordinator serves on, the next comparison gets a fresh runner, and
/// `kill -9` of the coordinator leaves no runner behind.
#[test]
fn a_validator_that_crashes_its_runner_costs_one_verdict_not_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Coordinator::start_with_env(dir.path(), &[], &[("PEERGRID_RUNNER_FAULT", "abort")])
        .unwrap();
    let join: JoinString = c.join.parse().unwrap();
    let job = c.submit(&compared_probe_job(dir.path())).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (a, b, d) = three_hosts(&join).await;
        let mut units: Vec<u64> = fetch_n(&a, 2).await.iter().map(|t| t.unit).collect();
        units.sort();
        assert_eq!(fetch_n(&b, 2).await.len(), 2);
        let (crashing, fine) = (units[0], units[1]);
        // The validator would find both pairs equal to 1e-9; the first
        // one's input begins with `fault`, which makes the runner abort.
        // b's reports go one exchange each, so the crash comes first.
        deliver(
            &a,
            vec![report(crashing, "fault 1.0"), report(fine, "1.0 2.0")],
        )
        .await;
        deliver(&b, vec![report(crashing, "fault 1.0000000000001")]).await;
        deliver(&b, vec![report(fine, "1.0000000000001 2")]).await;
        // The crash counted as a disagreement: the unit needs a third copy.
        let td = fetch_n(&d, 1).await;
        assert_eq!(td[0].unit, crashing);
    });
    assert!(c.is_running(), "the coordinator survived its validator");
    assert_eq!(c.status(job).unwrap()["validated"], 1, "the other unit");
    let log = c.log().unwrap();
    assert!(
        log.contains("custom validator failed: the task runner died (signal 6, SIGABRT"),
        "{log}"
    );
    // The runner of the comparison that agreed stays warm; it dies with
    // the coordinator.
    let coordinator = c.pid().unwrap();
    let runners = children(coordinator);
    assert_eq!(runners.len(), 1, "one warm runner: {runners:?}");
    c.kill();
    wait_for(
        "the runner to die with the coordinator",
        Duration::from_secs(5),
        || is_gone(runners[0]).then_some(()),
    )
    .unwrap();
}

#[test]
fn a_hosts_daily_quota_survives_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Coordinator::start(dir.path()).unwrap();
    let quota = ["--daily-quota-per-core", "2"];
    c.terminate().unwrap();
    c.serve_with("127.0.0.1:0", &quota).unwrap();
    // a's copies are due 2 × 1 s + 10 s after they are sent
    // (`peergrid_proto::deadline`), so the restarted coordinator times
    // them out (and so hears of a) before a reconnects.
    c.submit(&job_spec(dir.path(), "j", &probe_wasm(), 6, "delay_bound = 1").unwrap())
        .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let join: JoinString = c.join.parse().unwrap();
        let a = host(&join, 1, "").await.unwrap();
        assert_eq!(fetch_n(&a, 2).await.len(), 2);
        assert!(fetch(&a, 4).await.tasks.is_empty(), "a's quota is 2 a day");
    });
    c.terminate().unwrap();
    c.serve_with("127.0.0.1:0", &quota).unwrap();
    std::thread::sleep(Duration::from_secs(13));
    rt.block_on(async {
        let join: JoinString = c.join.parse().unwrap();
        // Another host gets work, so the units are back in the window...
        let b = host(&join, 2, "").await.unwrap();
        assert_eq!(fetch_n(&b, 1).await.len(), 1);
        // ...but not the host that used up its day before the restart.
        let a = host(&join, 1, "").await.unwrap();
        assert!(
            fetch(&a, 4).await.tasks.is_empty(),
            "a restart gave a host a fresh daily quota"
        );
    });
}

fn coordinator_cli(c: &Coordinator, args: &[&str]) -> std::process::Output {
    Command::new(bin("peergrid-coordinator"))
        .args(args)
        .arg("--data")
        .arg(&c.data)
        .output()
        .unwrap()
}

fn refused_code(result: Result<Session, NetError>) -> (ErrorCode, String) {
    match result {
        Err(NetError::Refused(e)) => (e.code, e.message),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got a session"),
    }
}

#[test]
fn operator_bans_stop_a_host_or_a_volunteer_and_void_their_results() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).unwrap();
    let join: JoinString = c.join.parse().unwrap();
    c.submit(&job_spec(dir.path(), "j", &probe_wasm(), 3, "").unwrap())
        .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mallory = host(&join, 1, "mallory").await.unwrap();
        let id = mallory.welcome.host_id.to_string();
        let t = fetch_n(&mallory, 1).await;
        deliver(&mallory, vec![report(t[0].unit, "wrong")]).await;

        let out = coordinator_cli(&c, &["ban", "--host", &id, "--reason", "returns garbage"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The running coordinator applies it within seconds: the open
        // connection is refused, and so is a new one, with the reason.
        let started = std::time::Instant::now();
        let code = loop {
            match exchange(&mallory, vec![], 0).await {
                Reply::Error(e) => break e.code,
                other => assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the ban did not apply within 10 s: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(code, ErrorCode::Banned);
        let (code, msg) = refused_code(host(&join, 1, "mallory").await);
        assert_eq!(code, ErrorCode::Banned);
        assert!(msg.contains("returns garbage"), "{msg}");

        let listed = String::from_utf8(coordinator_cli(&c, &["bans"]).stdout).unwrap();
        assert!(listed.contains(&format!("{{\"host\":{id}}}")), "{listed}");

        let out = coordinator_cli(&c, &["unban", "--host", &key_hex(1)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        host(&join, 1, "mallory").await.unwrap();

        // A volunteer ban covers every host of the account, including
        // one that never connected before.
        // An account is banned by its key, never by a name anyone can take.
        let out = coordinator_cli(&c, &["ban", "--account", "mallory"]);
        assert!(!out.status.success(), "a ban by display name");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("named by its key"), "{stderr}");
        let mallory_key = hex::encode(account_key("mallory").verifying_key().to_bytes());
        let out = coordinator_cli(&c, &["ban", "--account", &mallory_key]);
        assert!(out.status.success());
        assert_eq!(
            refused_code(host(&join, 1, "mallory").await).0,
            ErrorCode::Banned
        );
        assert_eq!(
            refused_code(host(&join, 4, "mallory").await).0,
            ErrorCode::Banned
        );
        host(&join, 5, "alice").await.unwrap();
        // Someone else who calls their account "mallory" is not banned:
        // the name is not the account.
        let facts = HostFacts {
            cores: 1,
            ..HostFacts::default()
        };
        let other = SigningKey::from_bytes(&[6; 32]);
        let namesake =
            peergrid_worker::identity::attach(&account_key("not mallory"), &other, "mallory", "");
        net::connect_attached(
            &join,
            &other,
            facts,
            Some(&namesake),
            Some(peergrid_tests::loopback_network()),
        )
        .await
        .unwrap();

        let out = coordinator_cli(&c, &["ban", "--host", "99999"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no host"));
    });
    // The banned host's result was thrown out, not counted.
    let voided: i64 = c
        .db()
        .query_row(
            "SELECT count(*) FROM results WHERE state = 'voided'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(voided, 1);
}
