//! `seti`: the job's command, run once per work unit. It reads one unit (a
//! JSON header line, then `i8` I/Q samples) from stdin and writes its
//! candidates (one JSON line) to stdout. The same source builds for
//! wasm32-wasip1, which is what volunteers run, and natively, to check
//! results or time a unit: no threads, no files, no arguments.
//! On a bad unit it prints why to stderr and exits with 1.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("seti: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    if let Some(arg) = std::env::args().nth(1) {
        return Err(format!(
            "unknown argument {arg:?}; seti takes none (the search settings travel in each unit's header)"
        ));
    }
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("cannot read the work unit from stdin: {e}"))?;
    let output = peergrid_example_seti::run(&input)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&output)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write the result to stdout: {e}"))
}
