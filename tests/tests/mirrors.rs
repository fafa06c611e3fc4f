//! Blob mirrors, through the real binaries and a real static web server
//! (Python's `http.server` on loopback) serving the folder
//! `serve --publish-blobs` writes: a job whose module and every input
//! workers fetch from the mirror, none from the coordinator; and a mirror
//! that serves a tampered input and module beside one that is dead, which
//! costs only fallbacks: the job's dataset is the native one all the same.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use peergrid_proto::Hash;
use peergrid_tests::{
    Coordinator, JobOptions, Worker, inputs_by_name, lyapunov_job, lyapunov_native, wait_for,
};

/// `python3 -m http.server` serving `dir` on a free loopback port, its
/// request log in `log`.
struct StaticServer {
    url: String,
    log: PathBuf,
    child: Child,
}

impl StaticServer {
    fn start(dir: &Path, log: PathBuf) -> StaticServer {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            // Each request's log line reaches the file as it is served.
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 is needed for the mirror tests (apt-get install python3)");
        let addr = format!("127.0.0.1:{port}");
        wait_for("the static server", Duration::from_secs(10), || {
            std::net::TcpStream::connect(&addr).ok()
        })
        .unwrap();
        StaticServer {
            url: format!("http://{addr}"),
            log,
            child,
        }
    }

    /// The paths it was asked for, with the status it gave.
    fn requests(&self) -> Vec<(String, u16)> {
        let log = std::fs::read_to_string(&self.log).unwrap();
        log.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once("\"GET ")?;
                let (path, rest) = rest.split_once(' ')?;
                let status = rest.split_once("\" ")?.1.split(' ').next()?.parse().ok()?;
                Some((path.to_string(), status))
            })
            .collect()
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A blob's path below a mirror's base address.
fn mirror_path(hash: &Hash) -> String {
    let hex = hash.to_hex();
    format!("/{}/{}", &hex[..2], &hex[2..])
}

/// A counter from the coordinator's metrics.
fn counter(coordinator: &Coordinator, name: &str) -> u64 {
    let text = ureq::get(format!("{}/metrics", coordinator.http))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// `GetBlob`s the coordinator answered, from its metrics.
fn blobs_served(coordinator: &Coordinator) -> u64 {
    counter(coordinator, "peergrid_blobs_served_total")
}

/// Runs `job` on two workers and checks its dataset against the native
/// build; returns the workers' log lines.
fn run_and_check(coordinator: &Coordinator, work: &Path, job: u64, units: usize) -> Vec<String> {
    let workers: Vec<Worker> = coordinator.workers(work, "w", 2).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(status["validated"], units as u64, "{status}");
    let inputs = inputs_by_name(work).unwrap();
    let rows = coordinator.dataset(job).unwrap();
    assert_eq!(rows.len(), units);
    for row in &rows {
        let name = row["name"].as_str().unwrap();
        assert_eq!(
            row["output"].as_str().unwrap().as_bytes(),
            &lyapunov_native(&inputs[name]).unwrap()[..],
            "unit {name}"
        );
    }
    workers
        .iter()
        .flat_map(|w| w.log_lines().unwrap())
        .collect()
}

/// A coordinator publishing into `dir/blobs`, which a static server
/// serves; its mirrors are `before`, then that server (its address and
/// `suffix`), and every input goes by reference.
fn mirrored(dir: &Path, before: &[String], suffix: &str) -> (PathBuf, StaticServer, Coordinator) {
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let mirror = StaticServer::start(&blobs, dir.join("mirror.log"));
    let live = format!("{}{suffix}", mirror.url);
    let mut flags = vec!["--publish-blobs", blobs.to_str().unwrap()];
    for url in before.iter().chain([&live]) {
        flags.extend(["--mirror", url]);
    }
    flags.extend(["--mirror-inputs-from", "0"]);
    let coordinator = Coordinator::start_with(dir, &flags).unwrap();
    (blobs, mirror, coordinator)
}

/// Submits a Lyapunov job of `units` units written under `dir/job`;
/// returns that folder and the job's id.
fn submit_lyapunov(coordinator: &Coordinator, dir: &Path, units: usize) -> (PathBuf, u64) {
    let work = dir.join("job");
    let opts = JobOptions {
        units,
        ..JobOptions::default()
    };
    let spec = lyapunov_job(&work, &opts).unwrap();
    (work.clone(), coordinator.submit(&spec).unwrap())
}

fn module_and_inputs(work: &Path) -> (Hash, HashMap<String, Vec<u8>>) {
    let module = std::fs::read(peergrid_tests::lyapunov_wasm()).unwrap();
    (Hash::of(&module), inputs_by_name(work).unwrap())
}

/// Every module and input is published as it is uploaded, and workers
/// fetch all of them from the mirror: the coordinator serves no blob.
#[test]
fn a_job_runs_with_its_module_and_every_input_fetched_from_the_mirror() {
    let dir = tempfile::tempdir().unwrap();
    // A trailing `/` on the address is dropped.
    let (blobs, mirror, coordinator) = mirrored(dir.path(), &[], "/");
    let (work, job) = submit_lyapunov(&coordinator, dir.path(), 12);
    let lines = run_and_check(&coordinator, &work, job, 12);

    let (module, inputs) = module_and_inputs(&work);
    for bytes in inputs.values() {
        let path = blobs.join(&mirror_path(&Hash::of(bytes))[1..]);
        assert_eq!(&std::fs::read(&path).unwrap(), bytes, "{}", path.display());
    }
    let requests = mirror.requests();
    let fetched_ok = |hash: &Hash| {
        requests
            .iter()
            .filter(|(p, s)| *p == mirror_path(hash) && *s == 200)
            .count()
    };
    assert_eq!(
        fetched_ok(&module),
        2,
        "each worker fetched the module once: {requests:?}"
    );
    for (name, bytes) in &inputs {
        assert!(
            fetched_ok(&Hash::of(bytes)) >= 2,
            "both copies of {name} read their input from the mirror: {requests:?}"
        );
    }
    assert_eq!(
        blobs_served(&coordinator),
        0,
        "no blob came from the coordinator"
    );
    assert!(
        !lines.iter().any(|l| l.contains("trying the next source")),
        "{lines:#?}"
    );
}

/// The first mirror is dead and the second serves a tampered module and
/// one tampered input: workers leave the dead one out after one try,
/// refuse the wrong bytes, fetch those two blobs from the coordinator,
/// and the dataset is the native one.
#[test]
fn a_tampered_mirror_file_is_refused_and_a_dead_mirror_costs_only_a_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (blobs, mirror, coordinator) = mirrored(dir.path(), &[dead], "");
    // Published as uploaded, then tampered with before any worker asks.
    let (work, job) = submit_lyapunov(&coordinator, dir.path(), 8);
    let (module, inputs) = module_and_inputs(&work);
    let (victim, victim_bytes) = inputs.iter().min_by_key(|(n, _)| n.as_str()).unwrap();
    let victim_hash = Hash::of(victim_bytes);
    for hash in [module, victim_hash] {
        let path = blobs.join(&mirror_path(&hash)[1..]);
        // The same length, one byte changed: only the hash tells.
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
    }
    let started = std::time::Instant::now();
    let lines = run_and_check(&coordinator, &work, job, 8);
    let minutes = started.elapsed().as_secs() / 60;

    let (module_path, victim_path) = (mirror_path(&module), mirror_path(&victim_hash));
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("do not hash to"))
        .collect();
    assert!(
        refused.iter().any(|l| l.contains(&module.to_hex())),
        "the tampered module was refused: {lines:#?}"
    );
    assert!(
        refused.iter().any(|l| l.contains(&victim_hash.to_hex())),
        "the tampered input {victim} was refused: {lines:#?}"
    );
    let unreachable = lines
        .iter()
        .filter(|l| l.contains("mirror unreachable"))
        .count();
    // Once per worker, and once more a minute later if the run took that
    // long: never once per blob (8 inputs and a module each).
    assert!(
        (1..=2 * (1 + minutes as usize)).contains(&unreachable),
        "each worker tried the dead mirror once, then left it out: {unreachable} tries"
    );
    // The coordinator served what the mirror had wrong, and little else.
    let served = blobs_served(&coordinator);
    assert!(
        (2..=8).contains(&served),
        "{served} blobs from the coordinator"
    );
    let requests = mirror.requests();
    assert!(requests.iter().any(|(p, s)| *p == module_path && *s == 200));
    assert!(requests.iter().any(|(p, s)| *p == victim_path && *s == 200));
    for (name, bytes) in inputs.iter().filter(|(n, _)| *n != victim) {
        let path = mirror_path(&Hash::of(bytes));
        assert!(
            requests.iter().any(|(p, s)| *p == path && *s == 200),
            "{name} was fetched from the live mirror"
        );
    }
}

/// Uploads `bytes` with one `PUT`, as the researcher.
fn upload(coordinator: &Coordinator, bytes: &[u8]) -> Hash {
    let hash = Hash::of(bytes);
    let resp = ureq::put(format!("{}/api/v1/blobs/{hash}", coordinator.http))
        .header("Authorization", &format!("Bearer {}", coordinator.token))
        .send(bytes)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    hash
}

/// Which of `hashes` the coordinator lacks.
fn missing(coordinator: &Coordinator, hashes: &[Hash]) -> Vec<Hash> {
    ureq::post(format!("{}/api/v1/blobs/missing", coordinator.http))
        .header("Authorization", &format!("Bearer {}", coordinator.token))
        .send_json(hashes)
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// An upload no job claims (a submission that never came) is deleted once
/// its grace period is over, from the database and from the published
/// folder; a submitted job's blobs stay, however old, and its job runs.
/// A blob's file the database lacks (a collection cut short by a stop)
/// goes at the next start.
#[test]
fn an_upload_no_job_claims_is_collected_after_its_grace_period_and_a_job_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs");
    let flags = [
        "--publish-blobs",
        blobs.to_str().unwrap(),
        "--blob-grace-secs",
        "5",
    ];
    let mut coordinator = Coordinator::start_with(dir.path(), &flags).unwrap();
    let loose = upload(&coordinator, b"uploaded, then no job came");
    let file = |h: &Hash| blobs.join(&mirror_path(h)[1..]);
    assert!(file(&loose).exists(), "published as uploaded");
    let (work, job) = submit_lyapunov(&coordinator, dir.path(), 6);
    let (module, inputs) = module_and_inputs(&work);
    let mut claimed: Vec<Hash> = inputs.values().map(|b| Hash::of(b)).collect();
    claimed.push(module);

    wait_for(
        "the loose upload to be collected",
        Duration::from_secs(30),
        || (!file(&loose).exists()).then_some(()),
    )
    .unwrap();
    assert_eq!(missing(&coordinator, &[loose]), vec![loose]);
    // Past the grace period of the job's blobs too: they stay.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(counter(&coordinator, "peergrid_blobs_collected_total"), 1);
    assert_eq!(missing(&coordinator, &claimed), Vec::<Hash>::new());
    for h in &claimed {
        assert!(file(h).exists(), "{h} is still published");
    }
    run_and_check(&coordinator, &work, job, 6);

    // A file whose blob the database lacks: removed at the next start.
    coordinator.terminate().unwrap();
    let stray = Hash::of(b"collected, but the stop came before its file went");
    std::fs::create_dir_all(file(&stray).parent().unwrap()).unwrap();
    std::fs::write(
        file(&stray),
        b"collected, but the stop came before its file went",
    )
    .unwrap();
    coordinator.serve_with("127.0.0.1:0", &flags).unwrap();
    wait_for(
        "the stray file to be swept",
        Duration::from_secs(30),
        || (!file(&stray).exists()).then_some(()),
    )
    .unwrap();
    assert!(claimed.iter().all(|h| file(h).exists()));
}
