//! Real network faults: the coordinator and four workers in network
//! namespaces of their own, joined by veth pairs that lose 10 % of the
//! packets each way, delay them 150 ms each way (300 ms round trip) and
//! carry 1 Mbit/s, then cut for 30 s and healed. Needs root (CI runs as
//! root); see `peergrid_tests::netns`.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use peergrid_tests::netns::{Impairment, Star};
use peergrid_tests::{Coordinator, bin, job_spec, wait_for};
use serde_json::Value;

/// Mixing rounds per unit: about a second of work in the sandbox, so the
/// partition finds tasks in the workers' hands.
const ROUNDS: u32 = 150_000_000;

/// A small module (a few hundred bytes, so fetching it over 1 Mbit/s is
/// quick): FNV-1a of stdin, then `ROUNDS` rounds of an LCG with an
/// xor-shift, printed as 16 hex digits.
fn mixer_wat() -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $n i32) (local $i i32) (local $h i64) (local $r i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 1024))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $n (i32.load (i32.const 8)))
    (local.set $h (i64.const 0xcbf29ce484222325))
    (block $done (loop $bytes
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $h (i64.mul (i64.xor (local.get $h) (i64.load8_u offset=1024 (local.get $i)))
                             (i64.const 0x100000001b3)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $bytes)))
    (local.set $r (i32.const {ROUNDS}))
    (loop $mix
      (local.set $h (i64.add (i64.mul (local.get $h) (i64.const 6364136223846793005))
                             (i64.const 1442695040888963407)))
      (local.set $h (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 29))))
      (local.set $r (i32.sub (local.get $r) (i32.const 1)))
      (br_if $mix (local.get $r)))
    (local.set $i (i32.const 0))
    (loop $hex
      (i32.store8 offset=2048 (local.get $i)
        (i32.load8_u offset=3072 (i32.wrap_i64 (i64.and
          (i64.shr_u (local.get $h)
                     (i64.extend_i32_u (i32.mul (i32.sub (i32.const 15) (local.get $i)) (i32.const 4))))
          (i64.const 15)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $hex (i32.lt_u (local.get $i) (i32.const 16))))
    (i32.store (i32.const 16) (i32.const 2048))
    (i32.store (i32.const 20) (i32.const 16))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))))
  (data (i32.const 3072) "0123456789abcdef"))"#
    )
}

/// What the module prints for `input`, computed here.
fn mixer_native(input: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    for _ in 0..ROUNDS {
        h = h
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        h ^= h >> 29;
    }
    format!("{h:016x}")
}

/// Four workers, each on its own /24, though quorum 2 needs two. A reply
/// that assigns tasks and is lost with its connection (the partition cuts
/// whatever is in flight) leaves copies issued to a worker that never got
/// them; the worker's next exchange says what it holds and those copies
/// are reissued at once (`Exchange::held`), but never to that host again
/// (a host holds at most one copy of a unit), so a unit whose copies were
/// lost on two hosts needs two more. With three workers that stalled a
/// unit about one run in five.
const WORKERS: usize = 4;

/// A task's wall-clock limit; its copy is due after twice this plus 10 s,
/// longer than the partition, so copies held through it never time out.
const DEADLINE_SECS: u64 = 30;

/// A process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `peergrid` CLI run in the coordinator's namespace.
fn cli(star: &Star, c: &Coordinator, args: &[&str]) -> Output {
    Star::command(&star.hub, bin("peergrid"))
        .env("PEERGRID_SERVER", &c.http)
        .env("PEERGRID_TOKEN", &c.token)
        .env("PEERGRID_KEY", &c.researcher_key)
        .env("PEERGRID_ENDORSEMENT", &c.researcher_endorsement)
        .args(args)
        .output()
        .expect("running the peergrid CLI")
}

/// A status in brief, for the test's output.
fn brief(s: &Value) -> String {
    format!(
        "validated {} in progress {} pending {} failed {}",
        s["validated"], s["in_progress"], s["pending"], s["failed"]
    )
}

fn status(star: &Star, c: &Coordinator, job: u64) -> Value {
    let out = cli(star, c, &["job", "status", &job.to_string(), "--json"]);
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `peergrid-coordinator serve` in the hub, on the hub's address only;
/// fills in the coordinator's join string and HTTP address.
fn serve_in_hub(star: &Star, c: &mut Coordinator) -> Running {
    let info = c.data.join("serve.json");
    let _ = std::fs::remove_file(&info);
    let log = std::fs::File::create(c.data.join("serve-netns.log")).unwrap();
    let addr = format!("{}:0", Star::HUB_ADDR);
    let child = Star::command(&star.hub, bin("peergrid-coordinator"))
        .args(["serve", "--quic", &addr, "--http", &addr, "--data"])
        .arg(&c.data)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let running = Running(child);
    let v: Value = wait_for("serve.json", Duration::from_secs(20), || {
        serde_json::from_str(&std::fs::read_to_string(&info).ok()?).ok()
    })
    .unwrap();
    c.join = v["join"].as_str().unwrap().to_string();
    c.http = v["http"].as_str().unwrap().to_string();
    running
}

/// Worker `i` in its namespace, bound to its address, one core.
fn worker(star: &Star, i: usize, join: &str, dir: &Path) -> Running {
    let data = dir.join(format!("w{i}"));
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("test-worker.toml");
    std::fs::write(&config, "suspend_cpu_percent = 100\n").unwrap();
    let log = std::fs::File::create(data.join("worker.log")).unwrap();
    let child = Star::command(&star.spokes[i], bin("peergrid-worker"))
        .env("PEERGRID_LOG", "info,peergrid_worker::daemon=debug")
        .env("PEERGRID_CONFIG", &config)
        .args(["run", "--join", join, "--cores", "1", "--bind"])
        .arg(Star::spoke_addr(i))
        .arg("--data")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Running(child)
}

/// Checks that the links are shaped as asked, from lower bounds only (a
/// lost packet makes things slower, never faster): a TCP handshake from a
/// worker's namespace to the coordinator takes the 300 ms round trip, and
/// 125 000 bytes from the hub to a worker take a second at 1 Mbit/s.
fn check_shaping(star: &Star, c: &Coordinator) {
    let http: SocketAddr = c.http.trim_start_matches("http://").parse().unwrap();
    let rtt = (0..5)
        .map(|_| {
            Star::in_namespace(&star.spokes[0], || {
                let start = Instant::now();
                TcpStream::connect_timeout(&http, Duration::from_secs(20)).unwrap();
                start.elapsed()
            })
            .unwrap()
        })
        .min()
        .unwrap();
    eprintln!("fastest of 5 TCP handshakes from a worker's namespace: {rtt:?}");
    assert!(
        rtt >= Duration::from_millis(300),
        "no 300 ms round trip: {rtt:?}"
    );

    const BYTES: usize = 125_000;
    let listener = Star::in_namespace(&star.hub, || {
        TcpListener::bind((Star::HUB_ADDR, 0)).unwrap()
    })
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(&[7u8; BYTES]).unwrap();
    });
    let took = Star::in_namespace(&star.spokes[1], || {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(20)).unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), BYTES);
        start.elapsed()
    })
    .unwrap();
    sender.join().unwrap();
    eprintln!("{BYTES} bytes from the hub to a worker over TCP: {took:?}");
    assert!(
        took >= Duration::from_secs(1),
        "faster than 1 Mbit/s: {took:?}"
    );
}

/// A 12-unit quorum-2 job completes over links with 10 % loss, 300 ms
/// round trips and 1 Mbit/s, through a 30 s partition of every worker from
/// the coordinator: every unit is in the dataset once, validated, with the
/// output computed here; none failed, none twice.
#[test]
fn job_completes_through_loss_delay_and_a_partition() {
    let units = 12;
    let mut star = Star::new(WORKERS).unwrap();
    let how = star
        .impair(&Impairment {
            loss_percent: 10,
            delay_ms: 150,
            rate_kbit: 1000,
        })
        .unwrap();
    eprintln!("links shaped with {how}");

    let dir = tempfile::tempdir().unwrap();
    // init, researcher key and endorsement as the harness makes them; its
    // loopback server is stopped and the project served in the hub.
    let mut c = Coordinator::start(dir.path()).unwrap();
    c.kill();
    let _server = serve_in_hub(&star, &mut c);

    check_shaping(&star, &c);

    let module = dir.path().join("mixer.wasm");
    std::fs::write(&module, wat::parse_str(mixer_wat()).unwrap()).unwrap();
    let spec = job_spec(
        dir.path(),
        "mixer",
        &module,
        units,
        &format!(
            "quorum = 2\ndeadline_secs = {DEADLINE_SECS}\nmemory_mb = 16\nfuel = 20_000_000_000"
        ),
    )
    .unwrap();
    let out = cli(&star, &c, &["job", "submit", &spec.to_string_lossy()]);
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: u64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let start = Instant::now();
    let _workers: Vec<Running> = (0..WORKERS)
        .map(|i| worker(&star, i, &c.join, dir.path()))
        .collect();

    // Cut every link once work is under way and not all of it is done.
    let before = wait_for("the first validated unit", Duration::from_secs(120), || {
        let s = status(&star, &c, job);
        (s["validated"].as_u64().unwrap_or(0) > 0).then_some(s)
    })
    .unwrap();
    assert!(
        before["validated"].as_u64().unwrap() < units as u64,
        "the job finished before the partition; make units heavier: {before}"
    );
    eprintln!("partition at {:?}: {}", start.elapsed(), brief(&before));
    star.set_links(false).unwrap();
    // Reports already on their way when the links went down may still
    // land; after that nothing gets through until the links heal.
    std::thread::sleep(Duration::from_secs(5));
    let early = status(&star, &c, job);
    std::thread::sleep(Duration::from_secs(25));
    let late = status(&star, &c, job);
    star.set_links(true).unwrap();
    eprintln!("healed at {:?}: {}", start.elapsed(), brief(&late));
    assert_eq!(
        early["validated"], late["validated"],
        "results crossed the partition: {early} then {late}"
    );
    assert_eq!(
        late["finished"], false,
        "the job finished during the partition"
    );

    let last = wait_for(
        &format!("job {job} to finish"),
        Duration::from_secs(240),
        || {
            let s = status(&star, &c, job);
            (s["finished"] == Value::Bool(true)).then_some(s)
        },
    )
    .unwrap();
    eprintln!("finished at {:?}: {}", start.elapsed(), brief(&last));
    assert_eq!(last["validated"], units, "{last}");
    assert_eq!(last["failed"], 0, "{last}");

    let out = cli(
        &star,
        &c,
        &["results", "export", &job.to_string(), "--format", "jsonl"],
    );
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), units, "one dataset row per unit");
    let mut names = HashSet::new();
    for row in &rows {
        let name = row["name"].as_str().unwrap();
        assert!(
            names.insert(name.to_string()),
            "unit {name} twice in the dataset"
        );
        let i: usize = name.strip_prefix("unit-").unwrap().parse().unwrap();
        assert_eq!(
            row["output"].as_str().unwrap(),
            mixer_native(format!("unit {i}").as_bytes()),
            "unit {name}"
        );
        let hosts: HashSet<&str> = row["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert_eq!(hosts.len(), 2, "two distinct agreeing hosts: {row}");
    }
    // Nothing was validated twice or left behind in the store either.
    let (rows_in_db, validated_units): (i64, i64) = c
        .db()
        .query_row(
            "SELECT (SELECT count(*) FROM dataset), \
                    (SELECT count(*) FROM units WHERE state = 'validated')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows_in_db, validated_units), (units as i64, units as i64));
    let timed_out: i64 = c
        .db()
        .query_row(
            "SELECT count(*) FROM results WHERE state = 'timed_out'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let lost: i64 = c
        .db()
        .query_row(
            "SELECT count(*) FROM results WHERE state = 'voided' AND error LIKE 'lost on the way%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    eprintln!("copies lost with a reply and reissued at once: {lost}");
    assert_eq!(timed_out, 0, "no copy waited for its deadline");
}
