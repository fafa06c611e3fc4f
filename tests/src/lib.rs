//! Test harness: starts peergrid's real binaries (built in the release
//! profile by `scripts/test`) on loopback and drives them like a user.
//!
//! Every process is killed when its handle drops, so a failing test
//! leaves nothing running.

#![allow(clippy::unwrap_used)]

pub mod flood;
pub mod netns;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The workspace's `target/` folder.
pub fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// How the tests' binaries are built: the worker with its test-only cheat
/// mode (`run --simulate-fault`), the task runner with its faults on purpose
/// (`PEERGRID_RUNNER_FAULT`).
const BUILD_BINS: &str = "cargo build --release --workspace --bins --features peergrid-worker/simulate-fault,peergrid-runner/simulate-fault";

/// A release binary of the workspace; fails saying how to build it.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join("release").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `{BUILD_BINS}` (scripts/test does this)",
        path.display()
    );
    path
}

/// The Lyapunov example compiled to wasm32-wasip1.
pub fn lyapunov_wasm() -> PathBuf {
    example_wasm("peergrid-example-lyapunov", "lyapunov")
}

/// The custom-validator example compiled to wasm32-wasip1.
pub fn compare_wasm() -> PathBuf {
    example_wasm("peergrid-example-compare", "compare")
}

/// `BIN.wasm` of a workspace example built for wasm32-wasip1; fails saying
/// how to build it.
fn example_wasm(package: &str, bin: &str) -> PathBuf {
    let path = target_dir().join(format!("wasm32-wasip1/release/{bin}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `rustup target add wasm32-wasip1` and \
         `cargo build --release -p {package} --target wasm32-wasip1 --bin {bin}` \
         (scripts/test does both)",
        path.display()
    );
    path
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A coordinator process with its own data folder.
pub struct Coordinator {
    pub data: PathBuf,
    /// The test researcher's key and endorsement files.
    pub researcher_key: PathBuf,
    pub researcher_endorsement: PathBuf,
    pub token: String,
    pub join: String,
    pub http: String,
    pub quic: String,
    /// Environment variables every `serve` of it gets.
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Coordinator {
    /// `init`s a project in `dir/coordinator` and serves it on ephemeral ports.
    pub fn start(dir: &Path) -> Result<Coordinator> {
        Coordinator::start_with(dir, &[])
    }

    /// [`Coordinator::start`] with more `serve` flags.
    pub fn start_with(dir: &Path, flags: &[&str]) -> Result<Coordinator> {
        Coordinator::start_with_env(dir, flags, &[])
    }

    /// [`Coordinator::start_with`], every `serve` with the variables `env`.
    pub fn start_with_env(dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> Result<Coordinator> {
        let data = dir.join("coordinator");
        let out = Command::new(bin("peergrid-coordinator"))
            .args(["init", "--json", "--data"])
            .arg(&data)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let made: Value = serde_json::from_slice(&out.stdout)?;
        // A researcher key, endorsed with the project key, as a real
        // researcher and operator would make them.
        let researcher_key = dir.join("researcher.key");
        let out = Command::new(bin("peergrid"))
            .args(["keys", "new", "--out"])
            .arg(&researcher_key)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "keys new failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = String::from_utf8(out.stdout)?.trim().to_string();
        let researcher_endorsement = dir.join("researcher.endorsement");
        let out = Command::new(bin("peergrid-coordinator"))
            .args([
                "endorse",
                "--name",
                "Test Researcher",
                "--researcher",
                &public,
                "--project-key",
            ])
            .arg(data.join("project.key"))
            .arg("--out")
            .arg(&researcher_endorsement)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "endorse failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = Coordinator {
            researcher_key,
            researcher_endorsement,
            data,
            token: made["token"].as_str().unwrap_or_default().to_string(),
            join: String::new(),
            http: String::new(),
            quic: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        c.serve_with("127.0.0.1:0", flags)?;
        Ok(c)
    }

    /// Starts `serve` on `quic` (use the old address to come back where
    /// workers expect the coordinator).
    pub fn serve(&mut self, quic: &str) -> Result<()> {
        self.serve_with(quic, &[])
    }

    /// [`Coordinator::serve`] with more `serve` flags.
    pub fn serve_with(&mut self, quic: &str, flags: &[&str]) -> Result<()> {
        let info = self.data.join("serve.json");
        let _ = std::fs::remove_file(&info);
        let log = std::fs::File::create(self.data.join(format!("serve-{}.log", now_nanos())))?;
        let mut cmd = Command::new(bin("peergrid-coordinator"));
        cmd.args(["serve", "--http", "127.0.0.1:0", "--quic", quic]);
        if !quic.ends_with(":0") {
            // Coming back on a known port: the join string names it.
            cmd.args(["--public-addr", quic]);
        }
        let child = cmd
            .args(flags)
            .arg("--data")
            .arg(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let v: Value = wait_for(
            "the coordinator's serve.json",
            Duration::from_secs(20),
            || {
                let text = std::fs::read_to_string(&info).ok()?;
                serde_json::from_str(&text).ok()
            },
        )?;
        self.join = v["join"].as_str().unwrap_or_default().to_string();
        self.http = v["http"].as_str().unwrap_or_default().to_string();
        self.quic = v["quic"].as_str().unwrap_or_default().to_string();
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the `serve` process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything the `serve` processes logged so far.
    pub fn log(&self) -> Result<String> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.data)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("serve-"))
            })
            .collect();
        logs.sort();
        let mut text = String::new();
        for log in logs {
            text.push_str(&std::fs::read_to_string(log)?);
        }
        Ok(text)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()?;
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                bail!("the coordinator did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the `peergrid` CLI against this coordinator.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("peergrid"))
            .env("PEERGRID_SERVER", &self.http)
            .env("PEERGRID_TOKEN", &self.token)
            .env("PEERGRID_KEY", &self.researcher_key)
            .env("PEERGRID_ENDORSEMENT", &self.researcher_endorsement)
            .args(args)
            .output()
            .expect("running the peergrid CLI")
    }

    /// The test researcher, for submitting through the client library.
    pub fn researcher(&self) -> Result<peergrid_client::Researcher> {
        Ok(peergrid_client::Researcher::load(
            &self.researcher_key,
            &self.researcher_endorsement,
        )?)
    }

    /// Submits a job spec and returns its id.
    pub fn submit(&self, spec: &Path) -> Result<u64> {
        let out = self.cli(&["job", "submit", &spec.to_string_lossy()]);
        anyhow::ensure!(
            out.status.success(),
            "submit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    }

    pub fn status(&self, job: u64) -> Result<Value> {
        let out = self.cli(&["job", "status", &job.to_string(), "--json"]);
        anyhow::ensure!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits until the job is finished; returns its final status.
    pub fn wait_finished(&self, job: u64, timeout: Duration) -> Result<Value> {
        let mut last = Value::Null;
        wait_for(&format!("job {job} to finish"), timeout, || {
            last = self.status(job).ok()?;
            (last["finished"] == Value::Bool(true)).then(|| last.clone())
        })
        .with_context(|| format!("last status: {last}"))
    }

    /// The exported dataset as JSON rows.
    pub fn dataset(&self, job: u64) -> Result<Vec<Value>> {
        let out = self.cli(&["results", "export", &job.to_string(), "--format", "jsonl"]);
        anyhow::ensure!(
            out.status.success(),
            "export failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)?
            .lines()
            .map(|l| Ok(serde_json::from_str(l)?))
            .collect()
    }

    /// Starts `n` one-slot workers in `dir/{prefix}{i}`, each its own host.
    pub fn workers(&self, dir: &Path, prefix: &str, n: usize) -> Result<Vec<Worker>> {
        (0..n)
            .map(|i| {
                Worker::start(
                    &self.join,
                    &dir.join(format!("{prefix}{i}")),
                    &["--cores", "1"],
                )
            })
            .collect()
    }

    /// How many results of the host with public key `host_key` (hex) are
    /// in `state` ('in_progress', 'success', 'error' or 'timed_out').
    pub fn results_of(&self, host_key: &str, state: &str) -> Result<i64> {
        Ok(self.db().query_row(
            "SELECT count(*) FROM results r JOIN hosts h ON h.id = r.host_id
             WHERE h.public_key = ?1 AND r.state = ?2",
            rusqlite::params![hex::decode(host_key)?, state],
            |r| r.get(0),
        )?)
    }

    /// Opens the coordinator's database read-only, for checks the API
    /// does not expose.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.data.join("coordinator.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("opening the coordinator database")
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A fresh loopback address on a /24 of its own (127.0.0.0/8 is all
/// loopback on Linux, so any of them can connect to a server on 127.0.0.1):
/// workers and test clients look like hosts on distinct networks.
pub fn loopback_network() -> std::net::IpAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::net::IpAddr::from([127, 1 + (n / 250) as u8, (n % 250) as u8 + 1, 1])
}

/// A worker process with its own data folder (its own host identity).
pub struct Worker {
    pub data: PathBuf,
    child: Child,
}

impl Worker {
    /// Starts `peergrid-worker run` on `data` with `extra` flags. Its
    /// preferences file is `data/test-worker.toml`, written (unless
    /// present) with `suspend_cpu_percent = 100`: test processes share
    /// the machine, and a worker must not suspend because other workers
    /// or the coordinator are busy. Flags override it.
    pub fn start(join: &str, data: &Path, extra: &[&str]) -> Result<Worker> {
        if extra.contains(&"--simulate-fault") {
            // Without the feature clap refuses the flag before it sees
            // `--help`; with it, `--help` ends the parse.
            let probe = Command::new(bin("peergrid-worker"))
                .args(["run", "--simulate-fault", "wrong-output", "--help"])
                .output()?;
            if !probe.status.success() {
                bail!(
                    "this peergrid-worker has no --simulate-fault (a default build, e.g. by \
                     scripts/demo): rebuild the tests' binaries with `{BUILD_BINS}`"
                );
            }
        }
        std::fs::create_dir_all(data)?;
        let config = data.join("test-worker.toml");
        if !config.exists() {
            std::fs::write(&config, "suspend_cpu_percent = 100\n")?;
        }
        let log = std::fs::File::create(data.join(format!("worker-{}.log", now_nanos())))?;
        let child = Command::new(bin("peergrid-worker"))
            .env("PEERGRID_LOG", "info,peergrid_worker::daemon=debug")
            .env("PEERGRID_CONFIG", &config)
            // Each worker its own network, as volunteers are: the
            // coordinator never gives two copies of a unit to one /24.
            .env("PEERGRID_BIND", loopback_network().to_string())
            // Blob mirrors on loopback are reached directly, whatever
            // proxy the machine running the tests uses.
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .args(["run", "--join", join, "--data"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Worker {
            data: data.to_path_buf(),
            child,
        })
    }

    /// The host's public key as the dataset names it (hex); available once
    /// the worker has started.
    pub fn host_key(&self) -> Result<String> {
        let text = wait_for("the worker's host key", Duration::from_secs(10), || {
            // The worker may be mid-write: wait for the whole key.
            std::fs::read_to_string(self.data.join("host.key"))
                .ok()
                .filter(|t| t.trim().len() == 64)
        })?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed)?;
        Ok(hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .to_bytes(),
        ))
    }

    /// Every line of this worker's logs (of every start on its folder).
    pub fn log_lines(&self) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        for e in std::fs::read_dir(&self.data)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "log") {
                lines.extend(std::fs::read_to_string(&p)?.lines().map(str::to_string));
            }
        }
        Ok(lines)
    }

    /// Units whose results the coordinator acknowledged to this worker,
    /// read from its log.
    pub fn acknowledged(&self) -> Result<Vec<u64>> {
        let mut units = Vec::new();
        for line in self.log_lines()? {
            if !line.contains("results acknowledged") {
                continue;
            }
            let list = line
                .split_once("units=[")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(list, _)| list)
                .context("an acknowledgement line without units")?;
            for u in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                units.push(u.parse()?);
            }
        }
        Ok(units)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM; returns the exit status and how long the worker took to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<(std::process::ExitStatus, Duration)> {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > timeout {
                bail!("the worker did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `peergrid-worker <args> --data DATA` (status, pause, resume).
    pub fn control(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(bin("peergrid-worker"))
            .args(args)
            .arg("--data")
            .arg(&self.data)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "peergrid-worker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `peergrid-worker status --json`, once the control socket answers.
    pub fn status(&self) -> Result<Value> {
        let text = wait_for(
            "the worker's control socket",
            Duration::from_secs(20),
            || self.control(&["status", "--json"]).ok(),
        )?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Opens the worker's state database read-only.
    pub fn db(&self) -> Result<rusqlite::Connection> {
        Ok(rusqlite::Connection::open_with_flags(
            self.data.join("worker.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?)
    }

    /// CPU time the process has used (all threads, user and system).
    pub fn cpu_time(&self) -> Result<Duration> {
        cpu_time(self.child.id())
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether process `pid` has ended: gone, or a zombie waiting for init
/// to reap it.
pub fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// The processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    // The parent's pid is field 4, the second after the name.
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(pid)
        })
        .collect()
}

/// CPU time process `pid` has used, all threads, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

/// A benchmark's setting from the environment (`BENCH_UNITS=…`), or
/// `default` when it is unset or not a whole number.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The guest-SDK example (`examples/checkpoint`) compiled to wasm32-wasip1.
pub fn chain_wasm() -> PathBuf {
    example_wasm("peergrid-example-checkpoint", "chain")
}

/// The guest-SDK example run natively: the output every resumed or
/// interrupted grid run must equal.
pub fn chain_native(input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(bin("chain"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(input)?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "native chain failed");
    Ok(out.stdout)
}

/// A job of the chain example under `dir/name/`, one unit per input
/// (`"steps rounds seed"`), with `settings` as extra TOML lines.
pub fn chain_job(dir: &Path, name: &str, inputs: &[String], settings: &str) -> Result<PathBuf> {
    let root = dir.join(name);
    let inputs_dir = root.join("inputs");
    std::fs::create_dir_all(&inputs_dir)?;
    for (i, input) in inputs.iter().enumerate() {
        std::fs::write(inputs_dir.join(format!("unit-{i:04}")), input)?;
    }
    let spec = root.join("job.toml");
    std::fs::write(
        &spec,
        format!(
            "name = {name:?}\nmodule = {:?}\nfuel = 1_000_000_000_000\nmemory_mb = 64\n{settings}\n\n[inputs]\ndir = \"inputs\"\n",
            chain_wasm().to_string_lossy()
        ),
    )?;
    Ok(spec)
}

/// Settings of a test job, written into its spec.
pub struct JobOptions {
    pub units: usize,
    /// Logistic-map iterations per point: sets a unit's cost.
    pub iterations: u32,
    pub quorum: u32,
    pub deadline_secs: u64,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            units: 50,
            iterations: 4000,
            quorum: 2,
            deadline_secs: 120,
        }
    }
}

/// Writes inputs and a spec for the Lyapunov example under `dir`; returns
/// the spec's path.
pub fn lyapunov_job(dir: &Path, opts: &JobOptions) -> Result<PathBuf> {
    let inputs = dir.join("inputs");
    let out = Command::new(bin("lyapunov-inputs"))
        .args([
            "--units",
            &opts.units.to_string(),
            "--iterations",
            &opts.iterations.to_string(),
            "--steps",
            "50",
            "--out",
        ])
        .arg(&inputs)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "lyapunov-inputs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = dir.join("job.toml");
    let mut f = std::fs::File::create(&spec)?;
    writeln!(
        f,
        "name = \"lyapunov test\"\nmodule = {:?}\nquorum = {}\ndeadline_secs = {}\nmemory_mb = 64\nfuel = 10_000_000_000\n\n[inputs]\ndir = \"inputs\"",
        lyapunov_wasm().to_string_lossy(),
        opts.quorum,
        opts.deadline_secs
    )?;
    Ok(spec)
}

/// The same computation run natively: the reference every grid output
/// must equal bitwise.
pub fn lyapunov_native(input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(bin("lyapunov"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(input)?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "native lyapunov failed");
    Ok(out.stdout)
}

/// Reads the unit inputs a job was made from, by file name.
pub fn inputs_by_name(dir: &Path) -> Result<std::collections::HashMap<String, Vec<u8>>> {
    let mut map = std::collections::HashMap::new();
    for e in std::fs::read_dir(dir.join("inputs"))? {
        let p = e?.path();
        map.insert(
            p.file_name()
                .context("name")?
                .to_string_lossy()
                .into_owned(),
            std::fs::read(&p)?,
        );
    }
    Ok(map)
}

/// Writes a job spec for any module under `dir/name/`: `units` inputs
/// (`unit i` as text), and `settings` as extra TOML lines. Returns its path.
pub fn job_spec(
    dir: &Path,
    name: &str,
    module: &Path,
    units: usize,
    settings: &str,
) -> Result<PathBuf> {
    let root = dir.join(name);
    let inputs = root.join("inputs");
    std::fs::create_dir_all(&inputs)?;
    for i in 0..units {
        std::fs::write(inputs.join(format!("unit-{i:04}")), format!("unit {i}"))?;
    }
    let spec = root.join("job.toml");
    std::fs::write(
        &spec,
        format!(
            "name = {name:?}\nmodule = {:?}\n{settings}\n\n[inputs]\ndir = \"inputs\"\n",
            module.to_string_lossy()
        ),
    )?;
    Ok(spec)
}

/// The determinism probe compiled to wasm32-wasip1.
pub fn probe_wasm() -> PathBuf {
    example_wasm("peergrid-example-probe", "probe")
}

/// The C example's module and its native build (`make -C examples/collatz-c wasm native`).
pub fn collatz_c() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/collatz-c/build");
    let (wasm, native) = (dir.join("collatz.wasm"), dir.join("collatz"));
    assert!(
        wasm.exists() && native.exists(),
        "{} is missing: run scripts/setup (Debian's clang, lld, wasi-libc, libclang-rt-14-dev-wasm32) \
         and `make -C examples/collatz-c wasm native` (scripts/test does both)",
        wasm.display()
    );
    (wasm, native)
}

/// The task runner cross-built for aarch64 and how to run it here: under
/// Debian's qemu-user with the cross libc. Fails saying how to get both.
pub fn aarch64_runner() -> (PathBuf, Vec<std::ffi::OsString>) {
    let program = target_dir().join("aarch64-unknown-linux-gnu/release/peergrid-runner");
    assert!(
        program.exists(),
        "{} is missing: run scripts/setup (rustup target aarch64-unknown-linux-gnu; Debian's \
         gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user), then \
         `cargo build --release -p peergrid-runner --target aarch64-unknown-linux-gnu` \
         (scripts/test does both)",
        program.display()
    );
    let sysroot = Path::new("/usr/aarch64-linux-gnu");
    let qemu = Path::new("/usr/bin/qemu-aarch64");
    assert!(
        qemu.exists() && sysroot.join("lib").exists(),
        "qemu-aarch64 or the aarch64 libc is missing: run scripts/setup \
         (Debian's qemu-user and libc6-dev-arm64-cross)"
    );
    let prefix = vec![qemu.into(), "-L".into(), sysroot.into()];
    (program, prefix)
}

/// The SETI example compiled to wasm32-wasip1.
pub fn seti_wasm() -> PathBuf {
    example_wasm("peergrid-example-seti", "seti")
}

/// Runs Debian's Chromium headless with a fresh profile and no background
/// networking (this machine's network is closed); fails saying how to
/// install it.
pub fn chromium(args: &[&str]) -> Result<Output> {
    let exe = Path::new("/usr/bin/chromium");
    assert!(
        exe.exists(),
        "/usr/bin/chromium is missing: run scripts/setup as root, or `apt-get install chromium`"
    );
    let profile = tempfile::tempdir()?;
    let out = Command::new(exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// The page at `url` as the browser rendered it (after scripts ran).
pub fn rendered_dom(url: &str) -> Result<String> {
    let out = chromium(&["--virtual-time-budget=3000", "--dump-dom", url])?;
    Ok(String::from_utf8(out.stdout)?)
}

/// A PNG screenshot of `url` at `path`.
pub fn screenshot(url: &str, path: &Path) -> Result<()> {
    chromium(&[
        "--window-size=1280,1400",
        "--virtual-time-budget=3000",
        &format!("--screenshot={}", path.display()),
        url,
    ])?;
    anyhow::ensure!(path.exists(), "no screenshot written to {}", path.display());
    Ok(())
}

/// The machine's CPU model (from /proc/cpuinfo) and how many CPUs it has,
/// printed beside every benchmark figure: machines of one kind differ.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cpus} CPUs")
}

/// The resident memory of a process now (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Connects as host `seed` (its key `[seed; 32]`) with `cores` cores,
/// anonymously, from `from`: a test's stand-in for a worker.
pub async fn connect_host(
    join: &peergrid_proto::JoinString,
    seed: u8,
    cores: u32,
    from: std::net::IpAddr,
) -> Result<peergrid_worker::net::Session, peergrid_worker::net::NetError> {
    let facts = peergrid_proto::wire::HostFacts {
        cores,
        ..Default::default()
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    peergrid_worker::net::connect(join, &key, facts, Some(from)).await
}

/// `min / median / max` of benchmark figures, one decimal each.
pub fn min_median_max(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{:.1} / {:.1} / {:.1}",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}
