//! Work done on the researcher's machine alone: running one unit in the
//! workers' sandbox (`peergrid run`, and `peergrid verify` after it has
//! fetched a dataset row's module and input), and checking a prepared job
//! the way the coordinator would (`peergrid job submit --dry-run`), so a
//! mistake shows up in seconds, before anything is uploaded.
//!
//! [`run_unit`] is the one path both `run` and `verify` take: the same
//! [`TaskLimits::for_job`] a worker gets, the same seed rule, the same
//! engines; so a local run's output and fuel are a worker's for that unit.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use peergrid_proto::Hash;
use peergrid_proto::limits::MAX_INPUT;
use peergrid_proto::spec::{JobSettings, Validator};
use peergrid_proto::wire::TaskLimits;
use peergrid_sandbox::{NanMode, RunOutcome, Sandbox, SandboxTask};

use crate::{ClientError, PreparedJob};

/// One unit to run locally: what a worker's task carries, in plain bytes.
pub struct LocalTask<'a> {
    pub module: &'a [u8],
    /// The unit's input, on the module's stdin.
    pub input: &'a [u8],
    pub args: &'a [String],
    /// The job's settings: the limits come from them as on a worker.
    pub settings: &'a JobSettings,
    /// The randomness seed (a worker's is `unit_seed(job, unit)`).
    pub seed: u64,
    /// Run on the canonical-NaN engine, as a unit reissued after
    /// replicas from different architectures disagreed.
    pub canonical_nan: bool,
}

/// What a local run produced.
pub struct LocalRun {
    /// The module's stdout, or why it failed.
    pub outcome: RunOutcome,
    /// Fuel used: a worker's `fuel_used` for the same task.
    pub fuel: u64,
    /// What the module wrote to stderr (capped as on a worker).
    pub stderr: Vec<u8>,
    /// Wall time, compilation included (nothing is cached between runs).
    pub elapsed: Duration,
    /// The engine configuration the run used, as results record it.
    pub engine: String,
    /// The limits the run had.
    pub limits: TaskLimits,
}

/// Runs one unit in the sandbox workers use, under the limits a worker
/// gets for a job with `task.settings`.
pub fn run_unit(task: &LocalTask<'_>) -> Result<LocalRun, ClientError> {
    let sandbox = Sandbox::for_metering(None, task.settings.metering)
        .map_err(|e| ClientError::Spec(format!("cannot start the sandbox: {e}")))?;
    let limits = TaskLimits::for_job(task.settings);
    let nan = NanMode::from_canonical(task.canonical_nan);
    let report = sandbox.run(&SandboxTask {
        module: &Hash::of(task.module),
        module_bytes: task.module,
        input: task.input,
        args: task.args,
        seed: task.seed,
        limits: &limits,
        nan,
    });
    Ok(LocalRun {
        outcome: report.outcome,
        fuel: report.fuel_used,
        stderr: report.stderr,
        elapsed: report.elapsed,
        engine: sandbox.engine_id(nan).to_string(),
        limits,
    })
}

/// Checks a module file with the coordinator's own submission check
/// (`\0asm` header, a core module, `_start`, imports, tables and memories
/// that fit `memory_mb`); the error names the file.
pub fn check_module(path: &Path, bytes: &[u8], memory_mb: u64) -> Result<(), ClientError> {
    peergrid_proto::modcheck::check_module(bytes, memory_mb.saturating_mul(1024 * 1024))
        .map_err(|e| ClientError::Spec(format!("{}: {e}", path.display())))
}

/// What `peergrid job submit --dry-run` found: the job as it would be
/// submitted.
#[derive(Debug)]
pub struct JobCheck {
    pub units: usize,
    /// Bytes of every unit's input, duplicates counted each time.
    pub input_bytes: u64,
    /// Distinct blobs (module, validator, inputs) and their bytes: at most
    /// what the submission uploads.
    pub blobs: usize,
    pub blob_bytes: u64,
    pub module: Hash,
    pub module_bytes: usize,
    /// Who signs the module and arguments (the endorsement's name).
    pub signed_by: String,
}

/// Applies, locally, every check the coordinator makes of a submission
/// whose blobs it holds: the job's validation, the signature's form,
/// the module check on the job's and the validator's modules with the
/// job's `memory_mb`, and every input within [`MAX_INPUT`]. Only the
/// endorsement's project signature is left to the coordinator, which
/// holds the project key.
pub fn check_job(job: &PreparedJob, spec_path: &Path) -> Result<JobCheck, ClientError> {
    let sub = &job.submission;
    sub.validate()
        .map_err(|e| ClientError::Spec(format!("{}: {e}", spec_path.display())))?;
    let blobs: HashMap<&Hash, &[u8]> = job.blobs.iter().map(|(h, b)| (h, &b[..])).collect();
    let blob = |hash: &Hash, what: &str| {
        blobs
            .get(hash)
            .copied()
            .ok_or_else(|| ClientError::Spec(format!("{what} {hash} is not among the job's files")))
    };
    let module = blob(&sub.module, "the module")?;
    check_module(Path::new("the module"), module, sub.settings.memory_mb)?;
    if let Validator::Custom { module } = &sub.validator {
        let bytes = blob(module, "the validator module")?;
        check_module(
            Path::new("the custom validator"),
            bytes,
            sub.settings.memory_mb,
        )?;
    }
    let key = peergrid_proto::signing::parse_public_key(&sub.signature.endorsement.researcher_key)
        .map_err(|e| ClientError::Spec(format!("the endorsement: {e}")))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|e| ClientError::Spec(format!("the endorsement's key: {e}")))?;
    let signature = hex::decode(&sub.signature.signature)
        .ok()
        .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
        .ok_or_else(|| ClientError::Spec("the module signature is malformed".into()))?;
    let message = peergrid_proto::signing::module_message(&sub.module, &sub.args);
    key.verify_strict(&message, &signature).map_err(|_| {
        ClientError::Spec("the module signature does not verify under your key".into())
    })?;
    let mut input_bytes = 0u64;
    for unit in &sub.units {
        let bytes = blob(&unit.input, &format!("input `{}`", unit.name))?;
        if bytes.len() > MAX_INPUT {
            return Err(ClientError::Spec(format!(
                "input `{}` is {} bytes; a work unit's input is at most {MAX_INPUT} bytes",
                unit.name,
                bytes.len()
            )));
        }
        input_bytes += bytes.len() as u64;
    }
    Ok(JobCheck {
        units: sub.units.len(),
        input_bytes,
        blobs: job.blobs.len(),
        blob_bytes: job.blobs.iter().map(|(_, b)| b.len() as u64).sum(),
        module: sub.module,
        module_bytes: module.len(),
        signed_by: sub.signature.endorsement.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ed25519_dalek::SigningKey;
    use peergrid_proto::signing;
    use peergrid_proto::spec::{JobSubmission, UnitSpec};

    /// The smallest WASI command: `_start` does nothing.
    const EMPTY_COMMAND: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
        0x03, 0x02, 0x01, 0x00, // one function
        0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // export
        0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // its body
    ];

    fn job(module: &[u8], inputs: &[&[u8]]) -> PreparedJob {
        let project = SigningKey::from_bytes(&[1; 32]);
        let researcher = SigningKey::from_bytes(&[2; 32]);
        let endorsement =
            signing::endorse(&project, &researcher.verifying_key().to_bytes(), "Ada").unwrap();
        let module_hash = Hash::of(module);
        let mut blobs = vec![(module_hash, module.to_vec())];
        let units = inputs
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                blobs.push((Hash::of(bytes), bytes.to_vec()));
                UnitSpec {
                    name: format!("unit-{i}"),
                    input: Hash::of(bytes),
                }
            })
            .collect();
        PreparedJob {
            submission: JobSubmission {
                plots: Vec::new(),
                name: "test".into(),
                module: module_hash,
                args: vec![],
                settings: JobSettings::default(),
                units,
                validator: Validator::Bitwise,
                terms: Default::default(),
                signature: signing::sign_module(&researcher, &endorsement, &module_hash, &[]),
            },
            blobs,
            skipped_folders: Vec::new(),
        }
    }

    #[test]
    fn a_good_job_passes_with_its_counts() {
        let check =
            check_job(&job(EMPTY_COMMAND, &[b"ab", b"cde"]), Path::new("job.toml")).unwrap();
        assert_eq!((check.units, check.input_bytes, check.blobs), (2, 5, 3));
        assert_eq!(check.signed_by, "Ada");
    }

    #[test]
    fn each_fault_is_named() {
        let err = |job: PreparedJob| {
            check_job(&job, Path::new("job.toml"))
                .unwrap_err()
                .to_string()
        };
        assert!(err(job(b"hello", &[b"x"])).contains("not WebAssembly"));
        let big = vec![b'x'; MAX_INPUT + 1];
        assert!(err(job(EMPTY_COMMAND, &[b"x", &big])).contains("input `unit-1` is"));
        let mut forged = job(EMPTY_COMMAND, &[b"x"]);
        forged.submission.args = vec!["--other".into()];
        assert!(err(forged).contains("does not verify"));
        let mut missing = job(EMPTY_COMMAND, &[b"x"]);
        missing.blobs.truncate(1);
        assert!(err(missing).contains("input `unit-0`"));
    }

    #[test]
    fn a_unit_runs_under_the_jobs_limits() {
        let settings = JobSettings {
            fuel: 1_000_000,
            ..JobSettings::default()
        };
        let run = run_unit(&LocalTask {
            module: EMPTY_COMMAND,
            input: b"",
            args: &[],
            settings: &settings,
            seed: 0,
            canonical_nan: true,
        })
        .unwrap();
        assert_eq!(run.outcome, RunOutcome::Success(vec![]));
        assert_eq!(run.limits, TaskLimits::for_job(&settings));
        assert!(run.engine.contains("nancanon"), "{}", run.engine);
    }
}
