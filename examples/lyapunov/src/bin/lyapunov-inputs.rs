//! `lyapunov-inputs`: writes the work units of a Lyapunov job, splitting
//! `r ∈ [2.8, 4.0]` (period doubling through chaos) into N equal,
//! contiguous slices, one unit per slice.
//!
//! ```text
//! lyapunov-inputs --units N (--out DIR | --jsonl FILE)
//!                 [--iterations I] [--steps S] [--transient T]
//! ```
//!
//! `--out DIR` writes `DIR/unit-00000.json`, … (one unit per file, zero
//! padded so name order is slice order) and first deletes any `unit-*.json`
//! left there by an earlier run, so a smaller job never picks up stale
//! units. `--jsonl FILE` writes one unit per line instead. Hand-parsed
//! arguments keep this example free of dependencies beyond serde.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use peergrid_example_lyapunov::UnitInput;

const R_START: f64 = 2.8;
const R_END: f64 = 4.0;
/// With the defaults below a unit takes about 30 ms natively (release
/// build, one core): 200 points × 41 000 map iterations. See README.md.
const DEFAULT_ITERATIONS: u32 = 40_000;
const DEFAULT_STEPS: u32 = 200;
const DEFAULT_TRANSIENT: u32 = 1_000;
/// peergrid's cap on units per job (`peergrid_proto::limits`).
const MAX_UNITS: u32 = 1_000_000;

const USAGE: &str = "usage: lyapunov-inputs --units N (--out DIR | --jsonl FILE) \
                     [--iterations I] [--steps S] [--transient T]";

enum Target {
    Dir(PathBuf),
    Jsonl(PathBuf),
}

struct Options {
    units: u32,
    target: Target,
    iterations: u32,
    steps: u32,
    transient: u32,
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)).and_then(|o| write(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lyapunov-inputs: {message}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut units = None;
    let mut out = None;
    let mut jsonl = None;
    let mut iterations = DEFAULT_ITERATIONS;
    let mut steps = DEFAULT_STEPS;
    let mut transient = DEFAULT_TRANSIENT;
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("{flag} {value:?} must be a whole number"))
        };
        match flag.as_str() {
            "--units" => units = Some(number()?),
            "--iterations" => iterations = number()?,
            "--steps" => steps = number()?,
            "--transient" => transient = number()?,
            "--out" => out = Some(PathBuf::from(&value)),
            "--jsonl" => jsonl = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    let units = units.ok_or("--units is required")?;
    if !(1..=MAX_UNITS).contains(&units) {
        return Err(format!("--units {units} must be between 1 and {MAX_UNITS}"));
    }
    let target = match (out, jsonl) {
        (Some(dir), None) => Target::Dir(dir),
        (None, Some(file)) => Target::Jsonl(file),
        _ => return Err("give exactly one of --out DIR and --jsonl FILE".into()),
    };
    Ok(Options {
        units,
        target,
        iterations,
        steps,
        transient,
    })
}

/// Unit `k` of `n`: the k-th of n equal slices; the last one ends at
/// exactly `R_END` whatever the rounding.
fn unit(o: &Options, k: u32) -> UnitInput {
    let at = |i: u32| {
        if i == o.units {
            R_END
        } else {
            R_START + (R_END - R_START) * f64::from(i) / f64::from(o.units)
        }
    };
    UnitInput {
        r_start: at(k),
        r_end: at(k + 1),
        steps: o.steps,
        iterations: o.iterations,
        transient: o.transient,
    }
}

fn write(o: &Options) -> Result<(), String> {
    let units = (0..o.units)
        .map(|k| {
            let unit = unit(o, k);
            unit.validate()?;
            serde_json::to_string(&unit).map_err(|e| format!("cannot serialise unit {k}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    match &o.target {
        Target::Dir(dir) => write_dir(dir, &units),
        Target::Jsonl(file) => {
            let mut text = String::new();
            for line in &units {
                let _ = writeln!(text, "{line}");
            }
            std::fs::write(file, text)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            eprintln!("wrote {} units to {}", units.len(), file.display());
            Ok(())
        }
    }
}

fn write_dir(dir: &Path, units: &[String]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut removed = 0;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("unit-") && name.ends_with(".json") {
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
            removed += 1;
        }
    }
    // Wide enough that name order is unit order past 100 000 units.
    let width = (units.len().saturating_sub(1)).to_string().len().max(5);
    for (k, text) in units.iter().enumerate() {
        let path = dir.join(format!("unit-{k:0width$}.json"));
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    eprintln!(
        "wrote {} units to {} (removed {removed} stale)",
        units.len(),
        dir.display()
    );
    Ok(())
}
