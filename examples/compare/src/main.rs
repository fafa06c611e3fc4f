//! An example custom validator (see `peergrid_sdk::validator`): two outputs
//! agree when they hold the same count of numbers and each pair matches to
//! a relative 1e-9; lines starting with `#` (a job's timing or host notes)
//! are ignored. Anything that is not a number must match exactly.
//!
//! Build: `cargo build --release -p peergrid-example-compare --target wasm32-wasip1`,
//! then name `compare.wasm` in a job spec:
//!
//! ```toml
//! [validator]
//! kind = "custom"
//! module = "compare.wasm"
//! ```

const REL_EPSILON: f64 = 1e-9;

fn tokens(output: &[u8]) -> Vec<&str> {
    std::str::from_utf8(output)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .collect()
}

fn compare(a: &[u8], b: &[u8]) -> bool {
    if std::str::from_utf8(a).is_err() || std::str::from_utf8(b).is_err() {
        return a == b;
    }
    let (x, y) = (tokens(a), tokens(b));
    x.len() == y.len()
        && x.iter()
            .zip(&y)
            .all(|(p, q)| match (p.parse::<f64>(), q.parse::<f64>()) {
                (Ok(p), Ok(q)) => (p - q).abs() <= REL_EPSILON * p.abs().max(q.abs()),
                _ => p == q,
            })
}

fn main() {
    peergrid_sdk::validator::serve(compare);
}

#[cfg(test)]
mod tests {
    use super::compare;

    #[test]
    fn numbers_match_loosely_comments_not_at_all() {
        assert!(compare(
            b"1.0 2.0\n# took 3 s\n",
            b"1.0000000000001 2\n# took 9 s\n"
        ));
        assert!(!compare(b"1.0 2.0", b"1.0 2.1"));
        assert!(!compare(b"1.0", b"1.0 2.0"));
        assert!(!compare(b"ok 1", b"ko 1"));
    }
}
