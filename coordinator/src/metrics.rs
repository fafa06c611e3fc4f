//! What an operator watches: `GET /metrics` in Prometheus's text
//! exposition format (version 0.0.4), and the structured `tracing` events
//! of refused researcher requests.
//!
//! Two kinds of numbers. Counts the store already holds (units by state,
//! jobs, hosts online, results in the last minute) are read from it at
//! scrape time, so they agree with the dashboard and survive a restart.
//! What only the running process sees (writer commits and their latency,
//! results received, open QUIC connections) lives in the process-wide
//! atomics below, which the writer, the grid and the QUIC door bump.
//!
//! The route and the refusal log are in `dashboard/metrics.rs`; this
//! module imports nothing that imports it, so the writer, the grid and the
//! door can count into it.
//!
//! The text format is written here (a few lines) rather than with the
//! `prometheus` crate: every number is a counter, a gauge or one fixed-
//! bucket histogram, and the coordinator keeps its dependencies few.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use peergrid_proto::wire::JobId;

use crate::store::{JobStatus, ReadStore, Store, StoreError};

/// Upper bounds (seconds) of the writer commit latency histogram.
const COMMIT_BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];
/// A host counts as online when it exchanged within this long (as the
/// dashboard counts it).
const ONLINE_MS: u64 = 120_000;

/// The group-commit writer's transactions: how many and how long.
pub struct CommitLatency {
    /// Commits that took at most each of [`COMMIT_BUCKETS`] (not
    /// cumulative here; summed when written).
    buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    /// Store changes committed.
    ops: AtomicU64,
}

impl CommitLatency {
    const fn new() -> CommitLatency {
        CommitLatency {
            buckets: [const { AtomicU64::new(0) }; COMMIT_BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            ops: AtomicU64::new(0),
        }
    }

    /// Records one commit of `ops` changes that took `took`.
    pub fn observe(&self, took: Duration, ops: usize) {
        let secs = took.as_secs_f64();
        if let Some(i) = COMMIT_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.ops.fetch_add(ops as u64, Ordering::Relaxed);
    }
}

/// The writer's commits (`writer.rs`).
pub static WRITER_COMMITS: CommitLatency = CommitLatency::new();
/// Successful results received from workers (`Grid::exchange`).
pub static RESULTS_SUCCESS: AtomicU64 = AtomicU64::new(0);
/// Error results received from workers.
pub static RESULTS_ERROR: AtomicU64 = AtomicU64::new(0);
/// Blobs (modules, inputs) workers fetched from this process with
/// `GetBlob`, and their bytes: what the mirrors did not serve (`quic.rs`).
pub static BLOBS_SERVED: AtomicU64 = AtomicU64::new(0);
pub static BLOB_BYTES_SERVED: AtomicU64 = AtomicU64::new(0);
/// Loose uploads garbage collection deleted (`grid/collect.rs`).
pub static BLOBS_COLLECTED: AtomicU64 = AtomicU64::new(0);
/// Worker connections open now, from accept to close (`quic.rs`).
pub static QUIC_CONNECTIONS: AtomicI64 = AtomicI64::new(0);
/// Researcher requests refused with 401, 403 or 422, and other 4xx.
pub static REFUSED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
const REFUSED_STATUS: [&str; 4] = ["401", "403", "422", "other"];

/// Counts a refused researcher request by its status.
pub fn refused(status: u16) {
    let i = match status {
        401 => 0,
        403 => 1,
        422 => 2,
        _ => 3,
    };
    REFUSED[i].fetch_add(1, Ordering::Relaxed);
}

/// Counts a connection open for as long as it lives.
pub struct OpenConnection(());

impl OpenConnection {
    pub fn enter() -> OpenConnection {
        QUIC_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        QUIC_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the store says at scrape time.
#[derive(Clone)]
pub struct Stored {
    units: Vec<(String, u64)>,
    jobs: u64,
    hosts_online: u64,
    hosts_total: u64,
    /// Successful results received in the last full minute.
    results_last_minute: u64,
}

pub fn stored(store: &dyn ReadStore, now: u64) -> Result<Stored, StoreError> {
    let minute = now / 60_000 * 60_000;
    let last = store
        .result_buckets(minute.saturating_sub(60_000), 60_000)?
        .into_iter()
        .find(|b| b.start_ms == minute.saturating_sub(60_000))
        .map_or(0, |b| b.count);
    Ok(Stored {
        units: store.units_by_state()?,
        jobs: store.job_count()?,
        hosts_online: store.hosts_seen_since(now.saturating_sub(ONLINE_MS))?,
        hosts_total: store.hosts_seen_since(0)?,
        results_last_minute: last,
    })
}

/// The exposition, from the store's counts and the process's.
pub fn render(s: &Stored, queued: usize, window: usize) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let units: Vec<(String, String)> = s
        .units
        .iter()
        .map(|(state, n)| (format!("{{state=\"{}\"}}", label(state)), n.to_string()))
        .collect();
    let units: Vec<(&str, String)> = units.iter().map(|(l, v)| (l.as_str(), v.clone())).collect();
    metric(
        "peergrid_units",
        "gauge",
        "Work units by state (active, validated, failed).",
        &units,
    );
    metric(
        "peergrid_jobs",
        "gauge",
        "Jobs submitted.",
        &[("", s.jobs.to_string())],
    );
    metric(
        "peergrid_hosts_online",
        "gauge",
        "Hosts that exchanged within the last 2 minutes.",
        &[("", s.hosts_online.to_string())],
    );
    metric(
        "peergrid_hosts",
        "gauge",
        "Hosts ever registered.",
        &[("", s.hosts_total.to_string())],
    );
    metric(
        "peergrid_results_per_second",
        "gauge",
        "Successful results received per second over the last full minute (the store's count).",
        &[("", format!("{}", s.results_last_minute as f64 / 60.0))],
    );
    metric(
        "peergrid_results_received_total",
        "counter",
        "Results received from workers by this process, by outcome.",
        &[
            (
                "{outcome=\"success\"}",
                RESULTS_SUCCESS.load(Ordering::Relaxed).to_string(),
            ),
            (
                "{outcome=\"error\"}",
                RESULTS_ERROR.load(Ordering::Relaxed).to_string(),
            ),
        ],
    );
    metric(
        "peergrid_blobs_served_total",
        "counter",
        "Modules and inputs workers fetched from this process rather than from a mirror.",
        &[("", BLOBS_SERVED.load(Ordering::Relaxed).to_string())],
    );
    metric(
        "peergrid_blob_bytes_served_total",
        "counter",
        "Bytes of the blobs in peergrid_blobs_served_total.",
        &[("", BLOB_BYTES_SERVED.load(Ordering::Relaxed).to_string())],
    );
    metric(
        "peergrid_blobs_collected_total",
        "counter",
        "Uploaded blobs no job claimed within the grace period, deleted.",
        &[("", BLOBS_COLLECTED.load(Ordering::Relaxed).to_string())],
    );
    metric(
        "peergrid_queue_depth",
        "gauge",
        "Units in the scheduler's queue waiting for more copies.",
        &[("", queued.to_string())],
    );
    metric(
        "peergrid_window_units",
        "gauge",
        "Unfinished units the scheduler holds in memory.",
        &[("", window.to_string())],
    );
    metric(
        "peergrid_quic_connections",
        "gauge",
        "Worker connections open.",
        &[("", QUIC_CONNECTIONS.load(Ordering::Relaxed).to_string())],
    );
    let refused: Vec<(String, String)> = REFUSED_STATUS
        .iter()
        .zip(&REFUSED)
        .map(|(s, n)| {
            (
                format!("{{status=\"{s}\"}}"),
                n.load(Ordering::Relaxed).to_string(),
            )
        })
        .collect();
    let refused: Vec<(&str, String)> = refused
        .iter()
        .map(|(l, v)| (l.as_str(), v.clone()))
        .collect();
    metric(
        "peergrid_refused_requests_total",
        "counter",
        "Researcher requests (uploads, submissions) refused, by status.",
        &refused,
    );
    let w = &WRITER_COMMITS;
    let mut cumulative = 0u64;
    let mut hist: Vec<(String, String)> = COMMIT_BUCKETS
        .iter()
        .zip(&w.buckets)
        .map(|(b, n)| {
            cumulative += n.load(Ordering::Relaxed);
            (format!("_bucket{{le=\"{b}\"}}"), cumulative.to_string())
        })
        .collect();
    let count = w.count.load(Ordering::Relaxed);
    hist.push(("_bucket{le=\"+Inf\"}".into(), count.to_string()));
    hist.push((
        "_sum".into(),
        format!("{}", w.sum_micros.load(Ordering::Relaxed) as f64 / 1e6),
    ));
    hist.push(("_count".into(), count.to_string()));
    let _ = writeln!(
        out,
        "# HELP peergrid_writer_commit_seconds Time the group-commit writer took per transaction.\n\
         # TYPE peergrid_writer_commit_seconds histogram"
    );
    for (suffix, v) in hist {
        let _ = writeln!(out, "peergrid_writer_commit_seconds{suffix} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP peergrid_writer_ops_total Store changes the writer committed.\n\
         # TYPE peergrid_writer_ops_total counter\npeergrid_writer_ops_total {}",
        w.ops.load(Ordering::Relaxed)
    );
    out
}

/// A label value with `\`, `"` and line breaks escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How often [`watch_jobs`] looks for jobs that finished.
pub const JOBS_EVERY: Duration = Duration::from_secs(5);

/// What [`watch_jobs`] remembers between looks.
#[derive(Default)]
pub struct JobWatch {
    /// Jobs not finished at the last look.
    open: std::collections::BTreeSet<JobId>,
    /// The newest job seen.
    seen_upto: JobId,
    /// Whether the first look was taken (jobs finished before it are not
    /// news).
    started: bool,
}

impl JobWatch {
    /// One look: takes in new jobs and returns the jobs that finished since
    /// the last look (each once).
    pub fn look(&mut self, store: &dyn ReadStore) -> Result<Vec<JobStatus>, StoreError> {
        let mut finished = Vec::new();
        let mut fresh = Vec::new();
        let mut offset = 0;
        loop {
            let page = store.jobs_newest_first(offset, 100)?;
            offset += page.len() as u64;
            let full = page.len() == 100;
            let before = fresh.len();
            fresh.extend(page.into_iter().filter(|j| j.id > self.seen_upto));
            if !full || fresh.len() - before < 100 {
                break;
            }
        }
        if let Some(newest) = fresh.iter().map(|j| j.id).max() {
            self.seen_upto = self.seen_upto.max(newest);
        }
        for id in std::mem::take(&mut self.open) {
            match store.job_status(id)? {
                Some(s) if s.finished => finished.push(s),
                Some(_) => {
                    self.open.insert(id);
                }
                None => {}
            }
        }
        for j in fresh {
            if !j.finished {
                self.open.insert(j.id);
            } else if self.started {
                finished.push(j);
            }
        }
        self.started = true;
        Ok(finished)
    }
}

/// Logs `job finished` (with its counts) once for every job that
/// finishes while `serve` runs, looking every [`JOBS_EVERY`].
pub fn watch_jobs(store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let watch = Arc::new(std::sync::Mutex::new(JobWatch::default()));
        loop {
            let (store, w) = (store.clone(), watch.clone());
            let looked =
                tokio::task::spawn_blocking(move || peergrid_os::lock(&w).look(store.as_ref()))
                    .await;
            match looked {
                Ok(Ok(finished)) => {
                    for j in finished {
                        tracing::info!(
                            job = j.id,
                            name = %j.name,
                            researcher = %j.researcher,
                            units = j.units_total,
                            validated = j.validated,
                            failed = j.failed,
                            "job finished"
                        );
                    }
                }
                Ok(Err(e)) => tracing::warn!("looking for finished jobs: {e}"),
                Err(e) => tracing::warn!("looking for finished jobs: {e}"),
            }
            tokio::time::sleep(JOBS_EVERY).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs finished before the first look are not news; one that
    /// finishes later is reported once.
    #[test]
    fn finished_jobs_are_reported_once() {
        use peergrid_proto::Hash;
        use peergrid_proto::signing::{Endorsement, ModuleSignature};
        use peergrid_proto::spec::{JobSettings, JobSubmission, UnitSpec};

        use crate::store::{SqliteStore, StoreOp};

        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap();
        store.put_blob(&Hash::of(b"in"), b"in").unwrap();
        let job = |name: &str| JobSubmission {
            plots: Vec::new(),
            name: name.into(),
            module: Hash([9; 32]),
            args: vec![],
            settings: JobSettings {
                quorum: 1,
                ..JobSettings::default()
            },
            validator: Default::default(),
            terms: Default::default(),
            signature: ModuleSignature {
                endorsement: Endorsement {
                    researcher_key: "00".repeat(32),
                    name: "R".into(),
                    project_signature: "00".repeat(64),
                },
                signature: "00".repeat(64),
            },
            units: vec![UnitSpec {
                name: "u".into(),
                input: Hash::of(b"in"),
            }],
        };
        let fail = |unit| {
            store
                .apply(
                    &[StoreOp::Fail {
                        unit,
                        reason: "r".into(),
                        at_ms: 1,
                    }],
                    &[],
                )
                .unwrap()
        };
        let old = store.create_job(&job("old"), 1).unwrap();
        fail(1);
        let open = store.create_job(&job("open"), 2).unwrap();
        let mut w = JobWatch::default();
        assert!(
            w.look(&store).unwrap().is_empty(),
            "finished before: not news"
        );
        assert!(w.look(&store).unwrap().is_empty());
        fail(2);
        let late = store.create_job(&job("late"), 3).unwrap();
        let done: Vec<JobId> = w.look(&store).unwrap().iter().map(|j| j.id).collect();
        assert_eq!(done, [open]);
        assert!(w.look(&store).unwrap().is_empty(), "once");
        fail(3);
        let done: Vec<JobId> = w.look(&store).unwrap().iter().map(|j| j.id).collect();
        assert_eq!(done, [late]);
        assert!(old < late);
    }

    #[test]
    fn the_exposition_is_well_formed() {
        let s = Stored {
            units: vec![("active".into(), 3), ("validated".into(), 5)],
            jobs: 2,
            hosts_online: 1,
            hosts_total: 4,
            results_last_minute: 120,
        };
        WRITER_COMMITS.observe(Duration::from_millis(3), 10);
        let text = render(&s, 7, 9);
        assert!(
            text.contains("peergrid_units{state=\"validated\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("peergrid_results_per_second 2\n"), "{text}");
        assert!(text.contains("peergrid_queue_depth 7\n"));
        assert!(text.contains("peergrid_writer_commit_seconds_bucket{le=\"+Inf\"} "));
        // Every sample's metric was introduced by HELP and TYPE lines.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap_or_default().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| declared.contains(*b))
                    .unwrap_or(name);
                assert!(declared.contains(base), "{line}");
                let value = line.rsplit(' ').next().unwrap_or_default();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert_eq!(label("a\"b\\"), "a\\\"b\\\\");
    }
}
