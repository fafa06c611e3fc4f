//! The integer benchmark kernel: the sieve of Eratosthenes, run several
//! rounds over a fresh table each time, so it exercises integer arithmetic,
//! branches and memory (one byte per number) rather than floats.
//!
//! Stdin: the limit and the number of rounds. Stdout: how many primes are
//! below the limit and a checksum of them (wrapping sum of `p·i` over the
//! `i`-th prime), which differs if a single prime is missed.

/// Largest limit, so the table (one byte per number) stays within 256 MiB.
pub const MAX_LIMIT: u64 = 256 << 20;
/// Most rounds one run may take.
pub const MAX_ROUNDS: u64 = 100_000;

/// Sieves up to the limit on stdin, as many rounds as stdin says.
pub fn run(stdin: &[u8]) -> Result<Vec<u8>, String> {
    let [limit, rounds] = crate::parse_numbers(
        stdin,
        "stdin must hold the limit and the number of rounds, e.g. `10000000 5`",
    )?;
    if limit > MAX_LIMIT || rounds > MAX_ROUNDS || rounds == 0 {
        return Err(format!(
            "limit {limit} and rounds {rounds} must be at most {MAX_LIMIT} and from 1 to {MAX_ROUNDS}"
        ));
    }
    let limit = usize::try_from(limit).map_err(|_| format!("limit {limit} does not fit"))?;
    let mut result = (0, 0);
    for _ in 0..rounds {
        result = sieve(limit);
    }
    let (count, checksum) = result;
    Ok(format!("{count} {checksum:#018x}\n").into_bytes())
}

/// The number of primes below `limit` and their checksum.
fn sieve(limit: usize) -> (u64, u64) {
    let mut composite = vec![false; limit];
    let mut count = 0u64;
    let mut checksum = 0u64;
    for n in 2..limit {
        if composite[n] {
            continue;
        }
        count += 1;
        checksum = checksum.wrapping_add((n as u64).wrapping_mul(count));
        let mut multiple = n.saturating_mul(n);
        while multiple < limit {
            composite[multiple] = true;
            multiple += n;
        }
    }
    (count, checksum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_primes() {
        assert_eq!(sieve(100).0, 25);
        assert_eq!(sieve(1_000_000).0, 78_498);
        assert_eq!(sieve(2).0, 0);
        assert_eq!(sieve(0).0, 0);
        let out = run(b"100 3").expect("runs");
        assert!(
            out.starts_with(b"25 0x"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(run(b"100").is_err());
        assert!(run(b"100 0").is_err());
        assert!(run(&format!("{} 1", MAX_LIMIT + 1).into_bytes()).is_err());
    }
}
