//! Validators beyond bitwise equality: the [`Judge`] the grid gives its
//! scheduler. Identical outputs never get here; this decides whether two
//! *different* outputs of one unit agree, by numeric tolerance or by the
//! researcher's own wasm module.
//!
//! Outputs of a non-bitwise job are kept in memory from the report until
//! their unit finishes (after a restart they are read back from the store),
//! and every pair's verdict is cached, so a unit's outputs are compared at
//! most once per pair however often the scheduler re-decides it.
//!
//! A custom validator is a WASI command (see `docs/validation.md`): it
//! reads `len(a) as u32 LE, a, len(b) as u32 LE, b` on stdin and prints
//! `1` (agree) or `0`. It runs in the worker's sandbox, with the job's
//! memory and fuel limits and at most a minute of wall time; one that
//! fails or prints anything else counts as "disagree", so a broken
//! validator can only stop units from validating, never let a wrong one in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use peergrid_proto::Hash;
use peergrid_proto::limits::MAX_OUTPUT;
use peergrid_proto::spec::Validator;
use peergrid_proto::wire::TaskLimits;
use peergrid_sandbox::{NanMode, RunOutcome, Sandbox, SandboxTask};
use serde_json::Value;

use crate::scheduler::Judge;
use crate::store::{JobInfo, Store};

/// Wall-clock cap on one custom comparison.
const VALIDATOR_WALL_MS: u64 = 60_000;
/// Cached pair verdicts kept before the cache is cleared.
const MAX_VERDICTS: usize = 1 << 20;

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

pub struct OutputJudge {
    store: Arc<dyn Store>,
    outputs: HashMap<Hash, Arc<[u8]>>,
    verdicts: HashMap<(Hash, Hash), bool>,
    /// Built on the first custom comparison: most coordinators never
    /// need one. Shared so comparisons can run without the judge's lock.
    sandbox: Option<Arc<Sandbox>>,
}

/// What one comparison needs, taken from the judge so it can run with no
/// lock held.
struct Comparison {
    key: (Hash, Hash),
    a: Arc<[u8]>,
    b: Arc<[u8]>,
    /// For a custom validator: the sandbox to run it in.
    sandbox: Option<Arc<Sandbox>>,
}

impl OutputJudge {
    pub fn new(store: Arc<dyn Store>) -> OutputJudge {
        OutputJudge {
            store,
            outputs: HashMap::new(),
            verdicts: HashMap::new(),
            sandbox: None,
        }
    }

    /// Keeps a reported output of a non-bitwise job for comparisons.
    pub fn remember(&mut self, hash: Hash, output: Arc<[u8]>) {
        self.outputs.insert(hash, output);
    }

    fn output(&mut self, hash: &Hash) -> Option<Arc<[u8]>> {
        if let Some(o) = self.outputs.get(hash) {
            return Some(o.clone());
        }
        match self.store.get_blob(hash) {
            Ok(Some(bytes)) => {
                let bytes: Arc<[u8]> = bytes.into();
                self.outputs.insert(*hash, bytes.clone());
                Some(bytes)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!("reading output {hash} for validation: {e}");
                None
            }
        }
    }

    fn sandbox(&mut self) -> Option<Arc<Sandbox>> {
        if self.sandbox.is_none() {
            match Sandbox::new(None) {
                Ok(s) => self.sandbox = Some(Arc::new(s)),
                Err(e) => tracing::error!("cannot start the validators' sandbox: {e}"),
            }
        }
        self.sandbox.clone()
    }

    /// The verdict on `a` and `b` if it is known, else what comparing them
    /// takes.
    fn verdict_or_comparison(
        &mut self,
        job: &JobInfo,
        a: &Hash,
        b: &Hash,
    ) -> Result<bool, Comparison> {
        let key = if a < b { (*a, *b) } else { (*b, *a) };
        if let Some(v) = self.verdicts.get(&key) {
            return Ok(*v);
        }
        let (Some(a), Some(b)) = (self.output(&key.0), self.output(&key.1)) else {
            return Ok(false);
        };
        let sandbox = match job.validator {
            Validator::Custom { .. } => match self.sandbox() {
                Some(sandbox) => Some(sandbox),
                None => return Ok(false),
            },
            _ => None,
        };
        Err(Comparison { key, a, b, sandbox })
    }

    fn record(&mut self, key: (Hash, Hash), verdict: bool) {
        if self.verdicts.len() >= MAX_VERDICTS {
            self.verdicts.clear();
        }
        self.verdicts.insert(key, verdict);
    }
}

/// Compares two different outputs of one unit under the job's validator.
fn compare(store: &dyn Store, job: &JobInfo, c: &Comparison) -> bool {
    if c.a.len() > MAX_OUTPUT || c.b.len() > MAX_OUTPUT {
        return false;
    }
    match (&job.validator, &c.sandbox) {
        (Validator::Bitwise, _) => false,
        (
            Validator::Tolerance {
                abs_epsilon,
                rel_epsilon,
            },
            _,
        ) => within_tolerance(&c.a, &c.b, *abs_epsilon, *rel_epsilon),
        (Validator::Custom { module }, Some(sandbox)) => {
            run_custom(store, sandbox, job, module, &c.a, &c.b)
        }
        (Validator::Custom { .. }, None) => false,
    }
}

/// Runs the researcher's validator on `a` and `b`: true if it prints `1`.
fn run_custom(
    store: &dyn Store,
    sandbox: &Sandbox,
    job: &JobInfo,
    module: &Hash,
    a: &[u8],
    b: &[u8],
) -> bool {
    let bytes = match store.get_blob(module) {
        Ok(Some(bytes)) => bytes,
        other => {
            tracing::error!(
                job = job.id,
                "custom validator module {module} unavailable: {other:?}"
            );
            return false;
        }
    };
    // A task's limits, but a verdict is a few bytes and waits for no one.
    let task = TaskLimits::for_job(&job.settings);
    let limits = TaskLimits {
        max_output_bytes: 64,
        wall_ms: VALIDATOR_WALL_MS.min(task.wall_ms),
        ..task
    };
    let input = validator_input(a, b);
    // On a thread of its own: the caller may be a tokio worker, where
    // the sandbox's WASI layer must not block.
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                sandbox.run(&SandboxTask {
                    module,
                    module_bytes: &bytes,
                    input: &input,
                    args: &[],
                    seed: 0,
                    limits: &limits,
                    // Comparable on every architecture.
                    nan: NanMode::Canonical,
                })
            })
            .join()
            .map(|r| r.outcome)
            .unwrap_or_else(|_| RunOutcome::Error("the validator's thread panicked".into()))
    });
    match outcome {
        RunOutcome::Success(out) => match String::from_utf8_lossy(&out).trim() {
            "1" | "true" => true,
            "0" | "false" => false,
            other => {
                tracing::warn!(
                    job = job.id,
                    "custom validator printed {other:?}, not 1 or 0"
                );
                false
            }
        },
        RunOutcome::Error(e) => {
            tracing::warn!(job = job.id, "custom validator failed: {e}");
            false
        }
    }
}

impl Judge for OutputJudge {
    fn agree(&mut self, job: &JobInfo, a: &Hash, b: &Hash) -> bool {
        match self.verdict_or_comparison(job, a, b) {
            Ok(verdict) => verdict,
            Err(comparison) => {
                let verdict = compare(&*self.store, job, &comparison);
                self.record(comparison.key, verdict);
                verdict
            }
        }
    }

    fn forget(&mut self, outputs: &[Hash]) {
        for h in outputs {
            self.outputs.remove(h);
        }
    }
}

/// An [`OutputJudge`] shared by the grid (which feeds it outputs) and its
/// scheduler (which asks it).
#[derive(Clone)]
pub struct SharedJudge(pub Arc<Mutex<OutputJudge>>);

impl SharedJudge {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, OutputJudge> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Compares `new` with each of `others` that differs from it and caches
    /// the verdicts, holding no lock while a comparison runs (a custom
    /// validator may take up to a minute). The grid calls this before it
    /// reports `new` to the scheduler, whose quorum decision then finds
    /// every verdict cached instead of running validators under the
    /// scheduler's lock, which would stall every host's exchange.
    pub fn compare_ahead(&self, job: &JobInfo, new: &Hash, others: &[Hash]) {
        let store = self.lock().store.clone();
        for other in others.iter().filter(|o| *o != new) {
            let comparison = match self.lock().verdict_or_comparison(job, new, other) {
                Ok(_) => continue,
                Err(comparison) => comparison,
            };
            let verdict = compare(&*store, job, &comparison);
            self.lock().record(comparison.key, verdict);
        }
    }
}

impl Judge for SharedJudge {
    fn agree(&mut self, job: &JobInfo, a: &Hash, b: &Hash) -> bool {
        self.lock().agree(job, a, b)
    }

    fn forget(&mut self, outputs: &[Hash]) {
        self.lock().forget(outputs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn validator_input_frames_both_outputs() {
        assert_eq!(
            validator_input(b"ab", b""),
            vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]
        );
    }
}
