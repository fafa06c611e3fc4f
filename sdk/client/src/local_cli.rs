//! The commands that need no server: `peergrid run` (one unit in the
//! workers' sandbox, on this machine) and `peergrid job submit --dry-run`
//! (every check a submission meets, nothing uploaded). The work is
//! `peergrid_client::local`'s; this is the command line around it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use peergrid_client::local::{self, LocalRun, LocalTask};
use peergrid_client::{Researcher, prepare_job, printable, printable_json};
use peergrid_proto::Hash;
use peergrid_proto::limits::{MAX_INPUT, MAX_MODULE};
use peergrid_proto::spec::{JobSettings, JobSpec, Metering, Validator, validate_args};
use peergrid_sandbox::RunOutcome;

/// `peergrid run`'s arguments.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The wasm32-wasip1 command module (default: the `--spec`'s `module`).
    module: Option<PathBuf>,
    /// The unit's input, given to the module on stdin; `-` reads this
    /// command's stdin (default: no input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// A job spec to take the settings (`fuel`, `memory_mb`,
    /// `deadline_secs`) and `args` from, as a worker would (default: the
    /// spec defaults, no arguments).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// The randomness seed (default 0, unless --job and --unit are given).
    #[arg(long, conflicts_with_all = ["job", "unit"])]
    seed: Option<u64>,
    /// With --unit: use the seed a worker uses for unit UNIT of job JOB.
    #[arg(long, requires = "unit")]
    job: Option<u64>,
    /// With --job: the unit id (as in the dataset) whose seed to use.
    #[arg(long, requires = "job")]
    unit: Option<u64>,
    /// Run on the canonical-NaN engine, as units reissued after replicas
    /// from different architectures disagreed.
    #[arg(long)]
    canonical_nan: bool,
    /// Print one JSON object (output, fuel, time, engine) instead of the
    /// raw output and a summary.
    #[arg(long)]
    json: bool,
    /// The module's arguments, after the program name; takes the rest of
    /// the command line, so put it last. Replaces the spec's `args`.
    #[arg(long, num_args = 0.., allow_hyphen_values = true)]
    args: Option<Vec<String>>,
}

/// A file's bytes, refused when larger than `limit` (`what` names it).
fn read_limited(path: &Path, limit: usize, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(path)
                .with_context(|| format!("cannot read {what} {}", path.display()))?,
        )
    };
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if bytes.len() > limit {
        bail!(
            "{what} {} is larger than {limit} bytes, the most a worker accepts",
            path.display()
        );
    }
    Ok(bytes)
}

/// `peergrid run`: one unit in the workers' sandbox, under a worker's limits.
pub fn run(a: RunArgs) -> Result<()> {
    let (mut settings, mut args, mut module_path) = (JobSettings::default(), vec![], a.module);
    if let Some(spec_path) = &a.spec {
        let text = std::fs::read_to_string(spec_path)
            .with_context(|| format!("cannot read the job spec {}", spec_path.display()))?;
        let spec = JobSpec::from_toml(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", spec_path.display()))?;
        settings = spec.settings;
        args = spec.args;
        if module_path.is_none() {
            let base = spec_path.parent().unwrap_or(Path::new("."));
            module_path = Some(base.join(spec.module));
        }
    }
    if let Some(given) = a.args {
        validate_args(&given).map_err(|e| anyhow::anyhow!("--args: {e}"))?;
        args = given;
    }
    let Some(module_path) = module_path else {
        bail!("name the module to run (peergrid run MODULE.wasm), or a job spec with --spec");
    };
    let module = read_limited(&module_path, MAX_MODULE, "the module")?;
    local::check_module(&module_path, &module, settings.memory_mb)?;
    let input = match &a.input {
        Some(path) => read_limited(path, MAX_INPUT, "the input")?,
        None => Vec::new(),
    };
    let seed = match (a.seed, a.job, a.unit) {
        (_, Some(job), Some(unit)) => peergrid_sandbox::unit_seed(job, unit),
        (seed, _, _) => seed.unwrap_or(0),
    };
    let run = local::run_unit(&LocalTask {
        module: &module,
        input: &input,
        args: &args,
        settings: &settings,
        seed,
        canonical_nan: a.canonical_nan,
    })?;
    if a.json {
        println!("{}", printable_json(&run_json(&run, seed, a.canonical_nan)));
    } else if let RunOutcome::Success(out) = &run.outcome {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out).and_then(|()| stdout.flush())?;
    }
    match &run.outcome {
        RunOutcome::Success(out) => {
            if !a.json {
                print_stderr_tail(&run.stderr);
                eprintln!(
                    "ok: {} bytes of output, fuel {}, {:.3} s (compilation included), seed {seed}, engine {}",
                    out.len(),
                    run.fuel,
                    run.elapsed.as_secs_f64(),
                    run.engine
                );
            }
            Ok(())
        }
        RunOutcome::Error(e) => {
            if !a.json {
                print_stderr_tail(&run.stderr);
                eprintln!(
                    "failed after fuel {}, {:.3} s, seed {seed}, engine {}",
                    run.fuel,
                    run.elapsed.as_secs_f64(),
                    run.engine
                );
            }
            bail!("{} failed: {e}", module_path.display())
        }
    }
}

/// The module's stderr, at most its last 4 KiB, escaped line by line.
fn print_stderr_tail(stderr: &[u8]) {
    if stderr.is_empty() {
        return;
    }
    const TAIL: usize = 4096;
    let tail = &stderr[stderr.len().saturating_sub(TAIL)..];
    let cut = if tail.len() < stderr.len() {
        ", its last 4 KiB"
    } else {
        ""
    };
    eprintln!("the module's stderr ({} bytes{cut}):", stderr.len());
    for line in String::from_utf8_lossy(tail).lines() {
        eprintln!("  {}", printable(line));
    }
}

/// `peergrid run --json`'s one object.
fn run_json(run: &LocalRun, seed: u64, canonical_nan: bool) -> serde_json::Value {
    let (output, error) = match &run.outcome {
        RunOutcome::Success(out) => (Some(out.as_slice()), None),
        RunOutcome::Error(e) => (None, Some(e.as_str())),
    };
    let text = output.and_then(|o| std::str::from_utf8(o).ok());
    serde_json::json!({
        "ok": error.is_none(),
        "error": error,
        // As the dataset export has it: text when UTF-8, else base64.
        "output": text,
        "output_base64": output.filter(|_| text.is_none()).map(|o| STANDARD.encode(o)),
        "output_hash": output.map(|o| Hash::of(o).to_hex()),
        "output_bytes": output.map(<[u8]>::len),
        "fuel": run.fuel,
        "wall_ms": run.elapsed.as_millis() as u64,
        "engine": run.engine,
        "seed": seed,
        "canonical_nan": canonical_nan,
        "stderr": String::from_utf8_lossy(&run.stderr),
        "limits": {
            "fuel": run.limits.fuel,
            "memory_bytes": run.limits.memory_bytes,
            "wall_ms": run.limits.wall_ms,
            "max_output_bytes": run.limits.max_output_bytes,
            "metering": run.limits.metering,
        },
    })
}

/// `peergrid job submit --dry-run`: reads, signs and checks the job as
/// `submit` would and as the coordinator will, and prints what would be
/// submitted; contacts no server.
pub fn dry_run(spec: &Path, key: &Path, endorsement: &Path) -> Result<()> {
    let researcher = Researcher::load(key, endorsement)?;
    let job = prepare_job(spec, &researcher)?;
    let check = local::check_job(&job, spec)?;
    let sub = &job.submission;
    let s = &sub.settings;
    let validator = match &sub.validator {
        Validator::Bitwise => "bitwise".to_string(),
        Validator::Tolerance {
            abs_epsilon,
            rel_epsilon,
        } => format!("tolerance (abs_epsilon {abs_epsilon}, rel_epsilon {rel_epsilon})"),
        Validator::Custom { module } => format!("custom, module {module}"),
    };
    let lines = [
        format!(
            "job \"{}\": {} units, {} bytes of input",
            sub.name, check.units, check.input_bytes
        ),
        format!(
            "module {} ({} bytes), args {:?}",
            check.module, check.module_bytes, sub.args
        ),
        format!(
            "settings: quorum {}, target_nresults {}, max_total_results {}, max_error_results {}, \
             max_success_results {}, deadline_secs {}, grace_secs {}, memory_mb {}, {}",
            s.quorum,
            s.target_nresults(),
            s.max_total_results(),
            s.max_error_results,
            s.max_success_results(),
            s.deadline_secs,
            s.grace_secs,
            s.memory_mb,
            match s.metering {
                Metering::Fuel => format!("fuel {}", s.fuel),
                Metering::Fixed => format!("metering fixed, credit {}", s.credit.unwrap_or(0)),
            }
        ),
        format!("validator: {validator}"),
        format!("signed by \"{}\"", check.signed_by),
        format!(
            "would upload at most {} blobs ({} bytes); nothing was uploaded or submitted (--dry-run)",
            check.blobs, check.blob_bytes
        ),
    ];
    for line in lines {
        println!("{}", printable(&line));
    }
    Ok(())
}
