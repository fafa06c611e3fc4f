//! `chain`: an example job that uses the guest SDK. It iterates a 64-bit
//! mixing function `steps × rounds` times from a seed and prints the final
//! value, offering its state (step and value, 16 bytes) as a checkpoint
//! after every step and reporting progress.
//!
//! Input (stdin): `steps rounds seed`, three unsigned integers separated by
//! whitespace. Output: `steps=<steps> rounds=<rounds> value=<16 hex digits>`.
//!
//! The work is integer-only and depends on nothing but the input, so a run
//! resumed from any checkpoint prints exactly what an uninterrupted run
//! prints, under wasm and natively (where the SDK calls do nothing).

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read the input: {e}");
        return ExitCode::FAILURE;
    }
    let numbers: Result<Vec<u64>, _> = input.split_whitespace().map(str::parse).collect();
    let (steps, rounds, seed) = match numbers.as_deref() {
        Ok([steps, rounds, seed]) => (*steps, *rounds, *seed),
        _ => {
            eprintln!("the input must be `steps rounds seed` (three unsigned integers)");
            return ExitCode::FAILURE;
        }
    };
    let (mut step, mut value) = match peergrid_sdk::restore().as_deref().map(decode) {
        Some(Some(state)) => state,
        Some(None) => {
            eprintln!("ignoring a checkpoint of the wrong size; starting over");
            (0, seed)
        }
        None => (0, seed),
    };
    while step < steps {
        for _ in 0..rounds {
            value = mix(value);
        }
        step += 1;
        peergrid_sdk::checkpoint(&encode(step, value));
        peergrid_sdk::progress(step as f64 / steps as f64);
    }
    println!("steps={steps} rounds={rounds} value={value:016x}");
    ExitCode::SUCCESS
}

/// splitmix64's finalizer on a Weyl step: cheap, and no shortcut skips rounds.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn encode(step: u64, value: u64) -> [u8; 16] {
    let mut state = [0u8; 16];
    state[..8].copy_from_slice(&step.to_le_bytes());
    state[8..].copy_from_slice(&value.to_le_bytes());
    state
}

fn decode(state: &[u8]) -> Option<(u64, u64)> {
    let step = u64::from_le_bytes(state.get(..8)?.try_into().ok()?);
    let value = u64::from_le_bytes(state.get(8..16)?.try_into().ok()?);
    Some((step, value))
}
