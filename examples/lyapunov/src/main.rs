//! `lyapunov`: the job's command, run once per work unit. It reads one
//! unit (JSON) from stdin and writes its result (one JSON line) to stdout.
//! The same source builds for wasm32-wasip1, which is what volunteers run,
//! and natively, to check results or time a unit: no threads, no files.
//!
//! Arguments: `--scale K` multiplies every unit's `iterations` by K, to
//! make units heavier for demos without regenerating the inputs.
//! On a bad unit or argument it prints why to stderr and exits with 1.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lyapunov: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let scale = parse_scale(std::env::args().skip(1))?;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("cannot read the work unit from stdin: {e}"))?;
    let output = peergrid_example_lyapunov::run_scaled(&input, scale)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&output)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write the result to stdout: {e}"))
}

fn parse_scale(mut args: impl Iterator<Item = String>) -> Result<u32, String> {
    let mut scale = 1;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scale" => {
                let value = args
                    .next()
                    .ok_or("--scale needs a value, e.g. `--scale 10`")?;
                scale =
                    value.parse().ok().filter(|&k| k >= 1).ok_or_else(|| {
                        format!("--scale {value:?} must be a whole number from 1")
                    })?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; the only argument is `--scale K`"
                ));
            }
        }
    }
    Ok(scale)
}
