//! The coordinator's HTTP door against strangers, through the real binary
//! on loopback: half-sent requests that never finish, a database holding
//! outputs of the largest size and forged fuel near `i64::MAX`, and
//! worker-supplied text with terminal control characters reaching the CLI.
//!
//! Rows an attacker (or a long-running project) would have made are
//! written straight into the coordinator's SQLite file while it is
//! stopped; then it serves them again.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peergrid_os::now_ms;
use peergrid_tests::{Coordinator, JobOptions, bin, lyapunov_job, wait_for};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const HALF_SENT: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// A `serve` process of an existing project, killed when dropped.
struct Served {
    child: Child,
    http: String,
}

impl Served {
    /// Serves `data` under `prlimit ARGS`, e.g. `--nofile=400:` (a soft
    /// open-file limit as low as many distributions' default of 1024,
    /// scaled to the test).
    fn start(data: &Path, prlimit: &str, flags: &[&str]) -> Served {
        let info = data.join("serve.json");
        let _ = std::fs::remove_file(&info);
        let log = std::fs::File::create(data.join("serve-doors.log")).unwrap();
        let child = Command::new("prlimit")
            .arg(prlimit)
            .arg("--")
            .arg(bin("peergrid-coordinator"))
            .args(["serve", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0"])
            .args(flags)
            .arg("--data")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("running prlimit (util-linux; `apt-get install util-linux`)");
        let v: Value = wait_for("serve.json", Duration::from_secs(20), || {
            serde_json::from_str(&std::fs::read_to_string(&info).ok()?).ok()
        })
        .unwrap();
        Served {
            child,
            http: v["http"].as_str().unwrap().to_string(),
        }
    }

    fn addr(&self) -> String {
        self.http.trim_start_matches("http://").to_string()
    }

    /// (soft, hard) open-file limits of the process, from /proc.
    fn nofile(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[3].to_string(), f[4].to_string())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection from `source` (another loopback address than the test's
/// own requests) that sends the start of a request and never finishes it.
async fn half_sent(source: &str, to: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    let mut stream = socket.connect(to.parse().unwrap()).await?;
    stream.write_all(HALF_SENT).await?;
    Ok(stream)
}

/// Whether the server closed `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 answer before the close is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

fn health(http: &str) -> Result<u16, String> {
    agent()
        .get(format!("{http}/api/v1/health"))
        .call()
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Many half-sent requests from one address, on a coordinator started with
/// a low soft open-file limit: the limit is raised to the hard one at
/// start, the address gets only its share of connections, and health
/// still answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_leave_the_server_answering() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Coordinator::start(dir.path()).unwrap();
    c.kill();
    let served = Served::start(&c.data, "--nofile=400:", &[]);

    let addr = served.addr();
    let mut held = Vec::new();
    for _ in 0..1100 {
        match tokio::time::timeout(Duration::from_secs(1), half_sent("127.0.0.2", &addr)).await {
            Ok(Ok(s)) => held.push(s),
            // Closed by the server before the request was written.
            Ok(Err(_)) => continue,
            // The server no longer accepts: its backlog is full.
            Err(_) => break,
        }
    }
    // Give the server a moment to accept (or refuse) them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let http = served.http.clone();
    let start = Instant::now();
    let answer = tokio::task::spawn_blocking(move || health(&http))
        .await
        .unwrap();
    assert_eq!(
        answer,
        Ok(200),
        "health while {} half-sent connections were open",
        held.len()
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    // The address's excess connections were closed at once.
    let mut closed = 0;
    for s in held.iter_mut().rev().take(100) {
        if closed_within(s, Duration::from_millis(50)).await {
            closed += 1;
        }
    }
    assert!(closed >= 90, "only {closed} of the last 100 were closed");
    let (soft, hard) = served.nofile();
    assert_eq!(
        soft, hard,
        "the open-file soft limit is raised to the hard limit"
    );
}

/// A half-sent request is closed once the header-read timeout passes;
/// connections over the per-address limit are closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_connection_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Coordinator::start(dir.path()).unwrap();
    c.kill();
    let served = Served::start(
        &c.data,
        "--nofile=4096:",
        &[
            "--http-header-timeout-ms",
            "1000",
            "--http-max-connections-per-ip",
            "4",
        ],
    );
    let addr = served.addr();
    let mut within_limit = Vec::new();
    for _ in 0..4 {
        within_limit.push(half_sent("127.0.0.3", &addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut excess = half_sent("127.0.0.3", &addr).await.unwrap();
    assert!(
        closed_within(&mut excess, Duration::from_millis(500)).await,
        "a fifth connection from one address is closed at once"
    );
    // Another address is not affected by the first one's share.
    let http = served.http.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || health(&http))
            .await
            .unwrap(),
        Ok(200)
    );
    let start = Instant::now();
    for s in &mut within_limit {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a half-sent request is closed after the header-read timeout"
        );
    }
    assert!(start.elapsed() >= Duration::from_millis(500));
}

/// A project with one submitted job (no workers), stopped so its database
/// can be written; returns the coordinator, the job id and the database.
fn stopped_project(dir: &Path, units: usize) -> (Coordinator, u64, PathBuf) {
    let mut c = Coordinator::start(dir).unwrap();
    let spec = lyapunov_job(
        dir,
        &JobOptions {
            units,
            ..JobOptions::default()
        },
    )
    .unwrap();
    let job = c.submit(&spec).unwrap();
    c.kill();
    let db = c.data.join("coordinator.sqlite");
    (c, job, db)
}

/// Makes every unit of `job` a validated dataset row whose output is
/// `output(i)`, agreed by one forged host, with `fuel`.
fn validate_all(db: &Path, job: u64, fuel: i64, output: impl Fn(usize) -> Vec<u8>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let now = now_ms() as i64;
    conn.execute(
        "INSERT OR IGNORE INTO hosts (public_key, cores, memory_bytes, os, arch, version,
             first_seen_ms, last_seen_ms, credit_total)
         VALUES (?1, 1, 1, 'linux', 'x86_64', 'x', ?2, ?2, ?3)",
        rusqlite::params![vec![7u8; 32], now, fuel],
    )
    .unwrap();
    let host: i64 = conn
        .query_row(
            "SELECT id FROM hosts WHERE public_key = ?1",
            [vec![7u8; 32]],
            |r| r.get(0),
        )
        .unwrap();
    let units: Vec<i64> = conn
        .prepare("SELECT id FROM units WHERE job_id = ?1 ORDER BY id")
        .unwrap()
        .query_map([job as i64], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let hosts_json = format!("[\"{}\"]", hex::encode([7u8; 32]));
    for (i, unit) in units.iter().enumerate() {
        let out = output(i);
        let hash = blake3::hash(&out);
        conn.execute(
            "INSERT OR IGNORE INTO blobs (hash, data) VALUES (?1, ?2)",
            rusqlite::params![hash.as_bytes().to_vec(), out],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO results (unit_id, host_id, state, sent_ms, deadline_ms, received_ms,
                 elapsed_ms, output_hash, fuel, engine)
             VALUES (?1, ?2, 'success', ?3, ?3, ?3, 1, ?4, ?5, 'forged')",
            rusqlite::params![unit, host, now, hash.as_bytes().to_vec(), fuel],
        )
        .unwrap();
        // What `apply` adds to the kept counts for a successful report.
        conn.execute(
            "INSERT INTO result_minutes (minute, count, fuel) VALUES (?1 / 60000, 1, ?2)
             ON CONFLICT(minute) DO UPDATE SET count = count + 1,
               fuel = CAST(min(fuel + excluded.fuel, 9223372036854775807) AS INTEGER)",
            rusqlite::params![now, fuel],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO dataset (unit_id, job_id, output_hash, fuel, hosts_json, engines_json,
                 validated_ms) VALUES (?1, ?2, ?3, ?4, ?5, '[\"forged\"]', ?6)",
            rusqlite::params![
                unit,
                job as i64,
                hash.as_bytes().to_vec(),
                fuel,
                hosts_json,
                now
            ],
        )
        .unwrap();
        conn.execute("UPDATE units SET state = 'validated' WHERE id = ?1", [unit])
            .unwrap();
    }
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Outputs of the largest size, made of bytes JSON must escape six-fold
/// (`\u0000`): the export streams them row by row and the coordinator's
/// peak memory stays far below the export's size.
#[test]
fn large_outputs_export_in_bounded_memory() {
    const ROWS: usize = 24;
    const OUTPUT: usize = 4 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let (mut c, job, db) = stopped_project(dir.path(), ROWS);
    validate_all(&db, job, 1000, |i| {
        let mut v = vec![0u8; OUTPUT];
        v[0] = b'a' + i as u8;
        v
    });
    c.serve("127.0.0.1:0").unwrap();
    let pid = c.pid().unwrap();
    let before = peak_rss(pid);

    for format in ["jsonl", "csv"] {
        let mut resp = agent()
            .get(format!(
                "{}/api/v1/jobs/{job}/results?format={format}",
                c.http
            ))
            .config()
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        let (mut total, mut lines) = (0u64, 0usize);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        }
        let expected_lines = if format == "csv" { ROWS + 1 } else { ROWS };
        assert_eq!(lines, expected_lines, "{format} export has every row");
        assert!(total > (ROWS * OUTPUT) as u64, "{format}: {total} bytes");
    }
    let peak = peak_rss(pid);
    eprintln!(
        "coordinator VmHWM: {} MiB before the exports, {} MiB after",
        before >> 20,
        peak >> 20
    );
    assert!(
        peak < before + 160 * 1024 * 1024,
        "exporting {ROWS} outputs of 4 MiB raised the coordinator's peak memory from {} MiB to {} MiB",
        before >> 20,
        peak >> 20
    );
}

/// Forged fuel near `i64::MAX` on every row: sums saturate and every page
/// still answers.
#[test]
fn fuel_near_i64_max_leaves_every_page_answering() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, job, db) = stopped_project(dir.path(), 3);
    validate_all(&db, job, i64::MAX - 1, |i| format!("out {i}").into_bytes());
    c.serve("127.0.0.1:0").unwrap();
    let routes = [
        "/".to_string(),
        "/api/v1/overview".into(),
        "/api/v1/throughput".into(),
        format!("/jobs/{job}"),
        format!("/api/v1/jobs/{job}/progress"),
        format!("/api/v1/jobs/{job}"),
        "/api/v1/jobs".into(),
        "/hosts".into(),
        "/api/v1/hosts".into(),
        "/hosts/1".into(),
        "/volunteers".into(),
        "/dataset".into(),
        format!("/api/v1/jobs/{job}/manifest"),
        format!("/api/v1/jobs/{job}/results?format=csv"),
    ];
    let mut failed = Vec::new();
    for route in &routes {
        let mut resp = agent().get(format!("{}{route}", c.http)).call().unwrap();
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            failed.push(format!("{route}: {status} {body}"));
        }
    }
    assert!(failed.is_empty(), "pages failing: {failed:#?}");
    let overview: Value = agent()
        .get(format!("{}/api/v1/overview", c.http))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    // Saturated: a minute's kept fuel stops at i64::MAX (SQLite's
    // integers), and the sum over minutes at u64::MAX.
    let fuel = overview["fuel_last_hour"].as_u64().unwrap();
    assert!(fuel >= i64::MAX as u64, "{overview}");
}

/// A failure reason with terminal escapes (a worker's error text) and a
/// job name with them: the CLI prints them escaped, never raw.
#[test]
fn the_cli_escapes_control_characters_from_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, job, db) = stopped_project(dir.path(), 2);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "UPDATE units SET state = 'failed', reason = ?2 WHERE job_id = ?1",
            rusqlite::params![
                job as i64,
                "too many errors: \u{1b}]0;pwned\u{7}\u{1b}[2J\rtrap\u{9b}31m"
            ],
        )
        .unwrap();
        conn.execute(
            "UPDATE jobs SET name = ?2 WHERE id = ?1",
            rusqlite::params![job as i64, "evil\u{1b}[31m\u{7f}"],
        )
        .unwrap();
    }
    c.serve("127.0.0.1:0").unwrap();
    for args in [
        vec!["job", "status", &job.to_string()],
        vec!["job", "status", &job.to_string(), "--json"],
        vec!["job", "list"],
    ] {
        let out = c.cli(&args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let raw: Vec<char> = text
            .chars()
            .filter(|ch| ch.is_control() && *ch != '\n')
            .collect();
        assert!(
            raw.is_empty(),
            "{args:?} printed control characters {raw:?}: {text:?}"
        );
        if args.len() == 3 && args[0] == "job" && args[1] == "status" {
            assert!(text.contains("\\u{1b}[2J"), "{text}");
        }
    }
}
