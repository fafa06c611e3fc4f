//! `seti-gen`: writes a synthetic observation (noise plus injected
//! narrowband tones, see `peergrid_example_seti::synth`) as work units,
//! and the ground truth for `seti-merge`.
//!
//! ```text
//! seti-gen --seed S --out DIR [--units N | --channels C] [--segments S]
//!          [--signals K] [--threshold SNR] [--truth FILE]
//! ```
//!
//! Writes `DIR/unit-ch00-seg00.bin`, … (channel-major, so name order is
//! unit order) after deleting any `unit-*.bin` an earlier run left there,
//! and the truth to `FILE` (default: `truth.json` beside DIR, never inside
//! it, where the grid would take it for a unit). `--units N` is shorthand
//! for `--channels N/S`. Hand-parsed arguments keep the example's
//! dependencies to serde, rustfft and the PRNG.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use peergrid_example_seti::synth::{Plan, generate};

const USAGE: &str = "usage: seti-gen --seed S --out DIR [--units N | --channels C] [--segments S] \
                     [--signals K] [--threshold SNR] [--truth FILE]";

struct Options {
    plan: Plan,
    out: PathBuf,
    truth: PathBuf,
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)).and_then(|o| write(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("seti-gen: {message}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut seed = None;
    let mut out = None;
    let mut truth = None;
    let mut units = None;
    let mut channels = None;
    let mut plan = Plan::demo(0);
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
            "--seed" => {
                seed = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("--seed {value:?} must be a whole number"))?,
                )
            }
            "--units" => units = Some(number()?),
            "--channels" => channels = Some(number()?),
            "--segments" => plan.segments = number()?,
            "--signals" => plan.signals = number()?,
            "--threshold" => {
                plan.threshold_snr = value
                    .parse()
                    .map_err(|_| format!("--threshold {value:?} must be a number"))?
            }
            "--out" => out = Some(PathBuf::from(&value)),
            "--truth" => truth = Some(PathBuf::from(&value)),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    plan.seed = seed.ok_or("--seed is required")?;
    if plan.segments == 0 {
        return Err("--segments must be at least 1".into());
    }
    plan.channels = match (units, channels) {
        (Some(_), Some(_)) => return Err("give --units or --channels, not both".into()),
        (Some(n), None) if n % plan.segments == 0 && n > 0 => n / plan.segments,
        (Some(n), None) => {
            return Err(format!(
                "--units {n} must be a positive multiple of --segments {}",
                plan.segments
            ));
        }
        (None, Some(c)) => c,
        (None, None) => plan.channels,
    };
    if plan.channels > 256 || plan.segments > 64 {
        return Err("at most 256 channels and 64 segments".into());
    }
    let out = out.ok_or("--out is required")?;
    let truth = truth.unwrap_or_else(|| out.parent().unwrap_or(Path::new(".")).join("truth.json"));
    Ok(Options { plan, out, truth })
}

fn write(o: &Options) -> Result<(), String> {
    let (truth, units) = generate(&o.plan)?;
    let dir = &o.out;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut removed = 0;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("unit-") && name.ends_with(".bin") {
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
            removed += 1;
        }
    }
    let mut bytes = 0;
    for (id, unit) in &units {
        let path = dir.join(format!("unit-{id}.bin"));
        std::fs::write(&path, unit).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        bytes += unit.len();
    }
    let text = serde_json::to_string_pretty(&truth)
        .map_err(|e| format!("cannot serialise the truth: {e}"))?;
    std::fs::write(&o.truth, text + "\n")
        .map_err(|e| format!("cannot write {}: {e}", o.truth.display()))?;
    eprintln!(
        "wrote {} units ({} channels × {} segments, {:.1} MiB) to {} (removed {removed} stale) \
         and {} injected signals to {}",
        units.len(),
        o.plan.channels,
        o.plan.segments,
        bytes as f64 / (1024.0 * 1024.0),
        dir.display(),
        truth.signals.len(),
        o.truth.display()
    );
    Ok(())
}
