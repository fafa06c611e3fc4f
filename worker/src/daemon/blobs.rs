//! Fetching a blob (a module or an input) by hash: from the project's
//! mirrors first (plain web servers the coordinator names in its
//! `Welcome`, serving `BASE/ab/cdef…`), then from the coordinator
//! (`GetBlob`). Nothing a mirror serves is trusted: the bytes must have
//! the length and the BLAKE3 hash the coordinator gave, or the next
//! source is tried; a redirect counts as a wrong answer. A mirror that
//! cannot be reached, or sends more slowly than [`fetch_budget`] allows,
//! is left out for [`BENCH_MS`], so a dead one costs one failed
//! connection, not one per blob.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use peergrid_os::now_ms;
use peergrid_proto::Hash;
use peergrid_proto::limits::MAX_MIRRORS;
use peergrid_proto::wire::{Reply, Request, mirror_path, mirror_problem};

use super::printable;
use crate::net::{self, Session};

/// How long a mirror that could not be reached is left out.
pub(super) const BENCH_MS: u64 = 60_000;

/// The slowest a mirror may send (bytes per second) before its answer
/// counts as no answer: a fetch of `n` bytes may take 30 s plus `n` at
/// this rate (about 95 s for a 4 MiB input, 9 min for a 32 MiB module),
/// so a mirror trickling bytes cannot hold the uplink for longer.
const SLOWEST_BYTES_PER_SEC: u64 = 64 * 1024;

/// How long fetching `n` bytes from a mirror may take in all.
pub(super) fn fetch_budget(n: u64) -> Duration {
    Duration::from_secs(30 + n / SLOWEST_BYTES_PER_SEC)
}

/// The worker's side of the mirrors: one HTTP agent, and which mirrors
/// are left out until when.
pub(super) struct Mirrors {
    agent: ureq::Agent,
    benched: Mutex<HashMap<String, u64>>,
}

impl Default for Mirrors {
    fn default() -> Mirrors {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_per_read(Some(Duration::from_secs(30)))
            // A mirror is not trusted: it may not send a volunteer's
            // machine elsewhere (a redirect is a wrong answer).
            .max_redirects(0)
            .user_agent(concat!("peergrid-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Mirrors {
            agent,
            benched: Mutex::default(),
        }
    }
}

/// The mirrors to try now, in the coordinator's order: the well-formed
/// ones among the first [`MAX_MIRRORS`] it named, less those benched
/// until after `now_ms`.
pub(super) fn to_try<'a>(
    named: &'a [String],
    benched: &HashMap<String, u64>,
    now_ms: u64,
) -> Vec<&'a str> {
    named
        .iter()
        .take(MAX_MIRRORS)
        .filter(|url| mirror_problem(url).is_none())
        .filter(|url| benched.get(*url).is_none_or(|until| *until <= now_ms))
        .map(String::as_str)
        .collect()
}

/// Why a mirror's answer was not taken.
#[derive(Debug)]
enum Miss {
    /// No answer (connection refused, timeout, too slow): bench the
    /// mirror.
    Unreachable(String),
    /// An answer, but not the blob (404, wrong bytes): try the next one.
    Wrong(String),
}

impl Mirrors {
    /// The blob `hash` of exactly `len` bytes (at most `max_len`): from a
    /// mirror of `session`'s coordinator, else from the coordinator.
    pub(super) async fn fetch(
        &self,
        session: &Session,
        hash: &Hash,
        len: Option<u64>,
        max_len: usize,
    ) -> Result<Vec<u8>> {
        let named = &session.welcome.mirrors;
        let tries: Vec<String> = {
            let benched = peergrid_os::lock(&self.benched);
            to_try(named, &benched, now_ms())
                .into_iter()
                .map(str::to_string)
                .collect()
        };
        for base in tries {
            let url = format!("{base}/{}", mirror_path(hash));
            let agent = self.agent.clone();
            let (h, want) = (*hash, len);
            let got = tokio::task::spawn_blocking(move || get(&agent, &url, &h, want, max_len))
                .await
                .map_err(|e| anyhow!("mirror fetch thread: {e}"))?;
            match got {
                Ok(bytes) => {
                    tracing::debug!(%hash, mirror = %base, "fetched from a mirror");
                    return Ok(bytes);
                }
                Err(Miss::Wrong(why)) => {
                    tracing::warn!(%hash, mirror = %base, "{why}; trying the next source");
                }
                Err(Miss::Unreachable(why)) => {
                    tracing::warn!(
                        mirror = %base,
                        "mirror unreachable ({why}); leaving it out for {} s",
                        BENCH_MS / 1000
                    );
                    peergrid_os::lock(&self.benched).insert(base, now_ms() + BENCH_MS);
                }
            }
        }
        from_coordinator(session, hash, len, max_len).await
    }
}

/// One GET of `url`, checked against the hash and length.
fn get(
    agent: &ureq::Agent,
    url: &str,
    hash: &Hash,
    len: Option<u64>,
    max_len: usize,
) -> std::result::Result<Vec<u8>, Miss> {
    let budget = fetch_budget(len.unwrap_or(max_len as u64));
    let mut resp = agent
        .get(url)
        .config()
        .timeout_global(Some(budget))
        .build()
        .call()
        .map_err(|e| Miss::Unreachable(e.to_string()))?;
    if resp.status() != 200 {
        return Err(Miss::Wrong(format!(
            "the mirror answered {}",
            resp.status()
        )));
    }
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(max_len as u64)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::Timeout(_) | ureq::Error::Io(_) => Miss::Unreachable(e.to_string()),
            e => Miss::Wrong(format!("reading the mirror's answer: {e}")),
        })?;
    check(hash, len, max_len, &bytes).map_err(|e| Miss::Wrong(format!("the mirror {e}")))?;
    Ok(bytes)
}

/// Whether `bytes` are the blob: its hash, and its length when known.
fn check(hash: &Hash, len: Option<u64>, max_len: usize, bytes: &[u8]) -> Result<()> {
    if bytes.len() > max_len || len.is_some_and(|l| l != bytes.len() as u64) {
        bail!("sent {} bytes for blob {hash}", bytes.len());
    }
    if Hash::of(bytes) != *hash {
        bail!("sent bytes that do not hash to {hash}");
    }
    Ok(())
}

async fn from_coordinator(
    session: &Session,
    hash: &Hash,
    len: Option<u64>,
    max_len: usize,
) -> Result<Vec<u8>> {
    let bytes = match net::request(&session.connection, &Request::GetBlob(*hash)).await? {
        Reply::Blob(b) => b,
        Reply::Error(e) => bail!("{}", printable(&e.to_string())),
        _ => bail!("unexpected reply to a blob fetch"),
    };
    check(hash, len, max_len, &bytes).map_err(|e| anyhow!("the coordinator {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_tried_in_order_without_the_benched_and_the_malformed() {
        let named: Vec<String> = ["http://a", "ftp://b", "http://c", "http://d"]
            .map(String::from)
            .to_vec();
        let mut benched = HashMap::new();
        assert_eq!(
            to_try(&named, &benched, 0),
            ["http://a", "http://c", "http://d"]
        );
        benched.insert("http://c".to_string(), 1_000);
        assert_eq!(to_try(&named, &benched, 999), ["http://a", "http://d"]);
        // Its time out, it is tried again.
        assert_eq!(
            to_try(&named, &benched, 1_000),
            ["http://a", "http://c", "http://d"]
        );
        let many: Vec<String> = (0..20).map(|i| format!("http://m{i}")).collect();
        assert_eq!(to_try(&many, &HashMap::new(), 0).len(), MAX_MIRRORS);
    }

    #[test]
    fn a_fetch_may_take_30_s_plus_its_bytes_at_64_kib_per_second() {
        assert_eq!(fetch_budget(0), Duration::from_secs(30));
        assert_eq!(fetch_budget(4 << 20), Duration::from_secs(94));
        assert_eq!(fetch_budget(32 << 20), Duration::from_secs(542));
    }

    #[test]
    fn a_blob_must_have_its_hash_and_its_length() {
        let bytes = b"input bytes";
        let hash = Hash::of(bytes);
        assert!(check(&hash, Some(11), 100, bytes).is_ok());
        assert!(check(&hash, None, 100, bytes).is_ok());
        let e = check(&hash, Some(12), 100, bytes).unwrap_err();
        assert!(e.to_string().contains("11 bytes"), "{e}");
        assert!(check(&hash, None, 10, bytes).is_err());
        let e = check(&hash, None, 100, b"input bytez").unwrap_err();
        assert!(e.to_string().contains("do not hash"), "{e}");
    }
}
