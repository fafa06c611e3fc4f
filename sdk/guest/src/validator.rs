//! Custom validators: a researcher's `compare(a, b) -> bool` for outputs
//! that may differ in bytes and still be the same result (text with a
//! timing line, numbers printed with different rounding, sets in any
//! order).
//!
//! A validator is its own `wasm32-wasip1` command, named in the job spec
//! (`[validator] kind = "custom"`, `module = "compare.wasm"`); the
//! coordinator runs it in the same sandbox as jobs, under the job's limits,
//! whenever two replicas' outputs differ. Its `main` is one line:
//!
//! ```no_run
//! fn compare(a: &[u8], b: &[u8]) -> bool {
//!     a.trim_ascii() == b.trim_ascii()
//! }
//!
//! fn main() {
//!     peergrid_sdk::validator::serve(compare);
//! }
//! ```
//!
//! On the wire: the command reads `len(a)` (u32, little-endian), `a`,
//! `len(b)`, `b` on stdin and prints `1` when they agree, `0` when not.
//! Anything else (a trap, other output) counts as "disagree": a broken
//! validator can keep units from validating, never let a wrong one in.

use std::io::{Read, Write};

/// Splits a validator's input into the two outputs it compares.
pub fn decode(input: &[u8]) -> Option<(&[u8], &[u8])> {
    fn take(input: &[u8]) -> Option<(&[u8], &[u8])> {
        let (len, rest) = input.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        (rest.len() >= len).then(|| rest.split_at(len))
    }
    let (a, rest) = take(input)?;
    let (b, rest) = take(rest)?;
    rest.is_empty().then_some((a, b))
}

/// Reads the two outputs from stdin, calls `compare` and prints its
/// verdict: the whole `main` of a validator.
pub fn serve(compare: impl FnOnce(&[u8], &[u8]) -> bool) {
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        std::process::exit(2);
    }
    let Some((a, b)) = decode(&input) else {
        eprintln!("validator input is not two length-prefixed outputs");
        std::process::exit(2);
    };
    let verdict = if compare(a, b) { b"1" } else { b"0" };
    if std::io::stdout().write_all(verdict).is_err() {
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decode_splits_two_frames_and_refuses_anything_else() {
        let input = [2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0];
        assert_eq!(decode(&input), Some((&b"hi"[..], &b""[..])));
        assert_eq!(decode(&input[..9]), None, "short");
        assert_eq!(
            decode(&[input.as_slice(), b"x"].concat()),
            None,
            "trailing bytes"
        );
        assert_eq!(decode(&[9, 0, 0, 0, 1]), None, "length past the end");
    }
}
