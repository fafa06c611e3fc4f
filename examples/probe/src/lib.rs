//! Small programs that look at the peergrid sandbox from the inside.
//!
//! - [`probe`] reports everything a module can observe that might differ
//!   between runs or hosts: NaN bit patterns produced by arithmetic, the
//!   iteration order of a `HashMap` (seeded through WASI `random_get`),
//!   clocks, random bytes and arguments. The worker's sandbox tests run it
//!   to check that runs are byte-identical and that canonical-NaN mode
//!   really canonicalizes.
//! - [`nbody`] (floats) and [`sieve`] (integers and memory) are benchmark
//!   kernels. Each has a `run(stdin) -> stdout` function that the bins call
//!   under wasm32-wasip1 and the worker's benchmark calls natively, so both
//!   sides do exactly the same work and print the same bytes.
//!
//! Every bin reads its stdin, writes one result to stdout, and on bad input
//! prints why to stderr and exits with 1.

pub mod nbody;
pub mod probe;
pub mod sieve;

use std::io::{Read, Write};
use std::process::ExitCode;

/// The body of every bin: stdin through `run` to stdout.
pub fn main_with(name: &str, run: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>) -> ExitCode {
    let result = read_stdin().and_then(|input| run(&input)).and_then(|out| {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&out)
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write the result to stdout: {e}"))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(input)
}

/// Parses stdin as whitespace-separated whole numbers, exactly `N` of them.
fn parse_numbers<const N: usize>(input: &[u8], usage: &str) -> Result<[u64; N], String> {
    let text = std::str::from_utf8(input).map_err(|_| format!("stdin is not text; {usage}"))?;
    let mut numbers = [0; N];
    let mut words = text.split_whitespace();
    for number in &mut numbers {
        let word = words
            .next()
            .ok_or_else(|| format!("too few numbers; {usage}"))?;
        *number = word
            .parse()
            .map_err(|_| format!("{word:?} is not a whole number; {usage}"))?;
    }
    if words.next().is_some() {
        return Err(format!("too many numbers; {usage}"));
    }
    Ok(numbers)
}
