//! Validators beyond bitwise equality: the grid makes the comparisons its
//! scheduler asks for ([`peergrid_core::model::Comparison`]) with a
//! [`Judge`], off the scheduler's lock, and feeds the verdicts back.
//! Identical outputs never get here; this decides whether two *different*
//! outputs of one unit agree, by numeric tolerance or by the researcher's
//! own wasm module. The scheduler keeps each verdict with its unit, so a
//! pair is compared once however often the unit is re-decided.
//!
//! A comparison whose outputs or validator cannot be read (a store error),
//! or whose validator has no runner to run in, has no verdict: the
//! scheduler hands it out again later. It never counts as a disagreement.
//!
//! A custom validator is a WASI command (see `docs/validation.md`): it
//! reads `len(a) as u32 LE, a, len(b) as u32 LE, b` on stdin and prints
//! `1` (agree) or `0`. It runs in a task runner process
//! (`peergrid-runner`, beside the coordinator's executable), as workers'
//! tasks do: with the job's memory and fuel limits, the runner's own
//! memory limit and confinement, and at most a minute of wall time, after
//! which the runner is killed. So a validator can neither crash the
//! coordinator nor hold its memory. One that fails, prints anything else,
//! or takes its runner down counts as "disagree", so a broken validator
//! can only stop units from validating, never let a wrong one in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peergrid_core::model::Comparison;
use peergrid_os::lock;
use peergrid_proto::Hash;
use peergrid_proto::limits::MAX_OUTPUT;
use peergrid_proto::runner::{RunTask, RunnerOutcome};
use peergrid_proto::spec::{Metering, Validator};
use peergrid_proto::wire::TaskLimits;
use peergrid_runner::{BoundedError, Pool, RunnerCommand};
use serde_json::Value;

use crate::store::{JobInfo, Store};

/// Wall-clock cap on one custom comparison.
const VALIDATOR_WALL_MS: u64 = 60_000;
/// Idle validator runners kept warm, each for the one validator module it
/// has run (a runner never passes from one validator module to another).
const IDLE_RUNNERS: usize = 2;

/// Whether two JSON outputs agree within `abs` or `rel` (relative to the
/// larger magnitude) on every number, and exactly on everything else.
/// Outputs that are not JSON agree only if identical.
pub fn within_tolerance(a: &[u8], b: &[u8], abs: f64, rel: f64) -> bool {
    if a == b {
        return true;
    }
    match (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => values_agree(&x, &y, abs, rel),
        _ => false,
    }
}

fn values_agree(x: &Value, y: &Value, abs: f64, rel: f64) -> bool {
    match (x, y) {
        (Value::Number(p), Value::Number(q)) => match (p.as_f64(), q.as_f64()) {
            (Some(p), Some(q)) => {
                let diff = (p - q).abs();
                diff <= abs || diff <= rel * p.abs().max(q.abs())
            }
            _ => p == q,
        },
        (Value::Array(p), Value::Array(q)) => {
            p.len() == q.len() && p.iter().zip(q).all(|(p, q)| values_agree(p, q, abs, rel))
        }
        (Value::Object(p), Value::Object(q)) => {
            p.len() == q.len()
                && p.iter()
                    .all(|(k, v)| q.get(k).is_some_and(|w| values_agree(v, w, abs, rel)))
        }
        _ => x == y,
    }
}

/// The bytes a custom validator reads on stdin.
pub fn validator_input(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(a.len() + b.len() + 8);
    for side in [a, b] {
        input.extend_from_slice(&(side.len() as u32).to_le_bytes());
        input.extend_from_slice(side);
    }
    input
}

/// Makes comparisons: reads the outputs (from the reporting exchange or
/// the store) and runs the job's validator. Cheap to clone and share.
#[derive(Clone)]
pub struct Judge {
    store: Arc<dyn Store>,
    /// How to start a validator's runner.
    command: Option<RunnerCommand>,
    /// Started on the first custom comparison: most coordinators never
    /// need one. Tried again while it cannot be started.
    runners: Arc<Mutex<Option<Arc<Pool>>>>,
}

impl Judge {
    /// A judge whose custom validators run in `peergrid-runner` beside the
    /// current executable.
    pub fn new(store: Arc<dyn Store>) -> Judge {
        let command = RunnerCommand::beside_current_exe()
            .inspect_err(|e| tracing::error!("cannot find the validators' runner: {e}"))
            .ok();
        Judge::with_runner(store, command)
    }

    /// A judge whose custom validators run in runners started with
    /// `command` (`None`: none can run, so a custom comparison has no
    /// verdict).
    pub fn with_runner(store: Arc<dyn Store>, command: Option<RunnerCommand>) -> Judge {
        let absent = |c: &&RunnerCommand| {
            std::fs::metadata(&c.program).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        };
        if let Some(missing) = command.as_ref().filter(absent) {
            tracing::warn!(
                "{} is missing: jobs with a custom validator will not validate until it is installed there",
                missing.program.display()
            );
        }
        Judge {
            store,
            command,
            runners: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether the two outputs of `c` agree, or `None` when they could not
    /// be compared (an output or the validator's module could not be
    /// read): the caller retries later. `fresh` holds outputs just
    /// reported, which need no store read. Blocks: a custom validator runs
    /// for up to a minute.
    pub fn compare(&self, c: &Comparison, fresh: &HashMap<Hash, Arc<[u8]>>) -> Option<bool> {
        let (Some(a), Some(b)) = (self.output(&c.a, fresh)?, self.output(&c.b, fresh)?) else {
            // Written before its comparison was asked for: lost.
            return Some(false);
        };
        let job = &*c.job;
        if a.len() > MAX_OUTPUT || b.len() > MAX_OUTPUT {
            return Some(false);
        }
        match &job.validator {
            Validator::Bitwise => Some(a == b),
            Validator::Tolerance {
                abs_epsilon,
                rel_epsilon,
            } => Some(within_tolerance(&a, &b, *abs_epsilon, *rel_epsilon)),
            Validator::Custom { module } => {
                let bytes = match self.store.get_blob(module) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => {
                        tracing::error!(
                            job = job.id,
                            "custom validator module {module} is missing"
                        );
                        return Some(false);
                    }
                    Err(e) => {
                        tracing::error!(job = job.id, "reading custom validator {module}: {e}");
                        return None;
                    }
                };
                // No runners (yet): no verdict, tried again later.
                let runners = self.runners()?;
                run_custom(&runners, job, module, &bytes, &a, &b)
            }
        }
    }

    /// The validators' runners, started on first use; `None` (logged)
    /// while they cannot be.
    fn runners(&self) -> Option<Arc<Pool>> {
        let mut slot = lock(&self.runners);
        if slot.is_none() {
            match Pool::new(self.command.clone()?, IDLE_RUNNERS) {
                Ok(pool) => *slot = Some(Arc::new(pool)),
                Err(e) => tracing::error!("cannot start the validators' runners (will retry): {e}"),
            }
        }
        slot.clone()
    }

    /// An output to compare: `None` when the store could not be read (a
    /// retry), `Some(None)` when it does not hold the output.
    fn output(&self, hash: &Hash, fresh: &HashMap<Hash, Arc<[u8]>>) -> Option<Option<Arc<[u8]>>> {
        if let Some(o) = fresh.get(hash) {
            return Some(Some(o.clone()));
        }
        match self.store.get_blob(hash) {
            Ok(bytes) => {
                if bytes.is_none() {
                    tracing::error!("output {hash} to compare is not in the store");
                }
                Some(bytes.map(Into::into))
            }
            Err(e) => {
                tracing::warn!("reading output {hash} to compare (will retry): {e}");
                None
            }
        }
    }
}

/// Runs the researcher's validator on `a` and `b` in a runner from
/// `runners`: whether it printed `1`, or `None` when no runner could be
/// started (no verdict: the comparison is made again later).
fn run_custom(
    runners: &Pool,
    job: &JobInfo,
    module: &Hash,
    bytes: &[u8],
    a: &[u8],
    b: &[u8],
) -> Option<bool> {
    // A task's limits, but a verdict is a few bytes and waits for no one.
    let task = TaskLimits::for_job(&job.settings);
    let limits = TaskLimits {
        max_output_bytes: 64,
        // A validator is fuel-metered whatever the job's tasks are: its fuel
        // cap is what bounds it.
        metering: Metering::Fuel,
        wall_ms: VALIDATOR_WALL_MS.min(task.wall_ms),
        ..task
    };
    let request = RunTask {
        module: *module,
        module_bytes: None,
        input: validator_input(a, b),
        args: Vec::new(),
        seed: 0,
        limits,
        // Comparable on every architecture.
        canonical_nan: true,
        resume: None,
        checkpoint_every_ms: 0,
    };
    let why = match runners.run_within(request, bytes, Duration::from_millis(limits.wall_ms)) {
        Ok(report) => match report.outcome {
            RunnerOutcome::Success(out) => {
                return match String::from_utf8_lossy(&out).trim() {
                    "1" | "true" => Some(true),
                    "0" | "false" => Some(false),
                    other => {
                        tracing::warn!(
                            job = job.id,
                            "custom validator printed {other:?}, not 1 or 0"
                        );
                        Some(false)
                    }
                };
            }
            RunnerOutcome::Error(e) => e,
        },
        Err(BoundedError::NoRunner(e)) => {
            tracing::error!(
                job = job.id,
                "no runner for a custom validator (will retry): {e}"
            );
            return None;
        }
        Err(e) => e.to_string(),
    };
    tracing::warn!(job = job.id, "custom validator failed: {why}");
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job (unsigned: the judge does not check) with `validator`.
    fn job_validated_by(validator: Validator) -> JobInfo {
        JobInfo {
            id: 1,
            name: "t".into(),
            module: Hash([1; 32]),
            args: vec![],
            settings: Default::default(),
            validator,
            signature: peergrid_proto::signing::ModuleSignature {
                endorsement: peergrid_proto::signing::Endorsement {
                    researcher_key: String::new(),
                    name: "t".into(),
                    project_signature: String::new(),
                },
                signature: String::new(),
            },
        }
    }

    #[test]
    fn tolerance_compares_numbers_and_nothing_else_loosely() {
        let ok = |a: &str, b: &str| within_tolerance(a.as_bytes(), b.as_bytes(), 1e-9, 1e-6);
        assert!(ok("1.0", "1.0000000001"));
        assert!(ok("[1000000, 2]", "[1000000.5, 2.0]"), "relative epsilon");
        assert!(!ok("[1, 2]", "[1, 2.1]"));
        assert!(!ok("[1, 2]", "[1, 2, 3]"));
        assert!(ok("{\"x\": 1, \"s\": \"a\"}", "{\"s\": \"a\", \"x\": 1.0}"));
        assert!(!ok("{\"s\": \"a\"}", "{\"s\": \"b\"}"));
        assert!(!ok("not json", "not json!"));
        assert!(ok("not json", "not json"), "identical bytes always agree");
        assert!(!ok("1", "null"));
    }

    #[test]
    fn an_output_the_store_cannot_read_is_a_retry_not_a_disagreement() {
        use crate::store::sqlite::SqliteStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = Arc::new(SqliteStore::open(&path, false).unwrap());
        let (near, far) = (b"1.0".to_vec(), b"1.25".to_vec());
        store.put_blob(&Hash::of(&far), &far).unwrap();
        let job = job_validated_by(Validator::Tolerance {
            abs_epsilon: 0.5,
            rel_epsilon: 0.0,
        });
        let (a, b) = Comparison::pair(Hash::of(&near), Hash::of(&far));
        let c = Comparison {
            unit: 1,
            job: Arc::new(job),
            a,
            b,
        };
        let fresh = HashMap::from([(Hash::of(&near), Arc::<[u8]>::from(near))]);
        let judge = Judge::new(store);

        // The store fails to read (its table is gone from under it).
        let side = rusqlite::Connection::open(&path).unwrap();
        side.execute_batch("ALTER TABLE blobs RENAME TO blobs_away")
            .unwrap();
        assert_eq!(judge.compare(&c, &fresh), None, "no verdict: retry");
        side.execute_batch("ALTER TABLE blobs_away RENAME TO blobs")
            .unwrap();
        assert_eq!(judge.compare(&c, &fresh), Some(true), "within 0.5");

        // An output the store does not hold is lost: that disagrees.
        let fresh = HashMap::new();
        let lost = Comparison {
            b: Hash([9; 32]),
            ..c
        };
        assert_eq!(judge.compare(&lost, &fresh), Some(false));
    }

    /// A runner that cannot be had (the program is missing, or dies before
    /// it is ready) is the coordinator's trouble, not the outputs': no
    /// verdict, and the comparison is made again later.
    #[test]
    fn a_validator_without_a_runner_has_no_verdict_rather_than_a_disagreement() {
        use crate::store::sqlite::SqliteStore;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("db.sqlite"), false).unwrap());
        let validator = b"\0asm\x01\0\0\0".to_vec();
        store.put_blob(&Hash::of(&validator), &validator).unwrap();
        let job = job_validated_by(Validator::Custom {
            module: Hash::of(&validator),
        });
        let (near, far) = (b"1.0".to_vec(), b"1.25".to_vec());
        let (a, b) = Comparison::pair(Hash::of(&near), Hash::of(&far));
        let c = Comparison {
            unit: 1,
            job: Arc::new(job),
            a,
            b,
        };
        let fresh = HashMap::from([
            (Hash::of(&near), Arc::<[u8]>::from(near)),
            (Hash::of(&far), Arc::<[u8]>::from(far)),
        ]);
        let runner = |program: &str| RunnerCommand {
            program: program.into(),
            prefix: Vec::new(),
            cache: None,
        };
        for command in [
            None,
            Some(runner("/nonexistent/peergrid-runner")),
            // Starts, and ends before it says Ready.
            Some(runner("/bin/false")),
        ] {
            let judge = Judge::with_runner(store.clone(), command.clone());
            assert_eq!(judge.compare(&c, &fresh), None, "{command:?}");
        }
    }

    #[test]
    fn validator_input_frames_both_outputs() {
        assert_eq!(
            validator_input(b"ab", b""),
            vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]
        );
    }
}
