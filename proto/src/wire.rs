//! Messages between a worker and the coordinator over QUIC.
//!
//! A worker opens one bidirectional stream per request, writes one
//! [`Request`], finishes its side and reads one [`Reply`]. The first request
//! on a connection must be [`Request::Hello`]; it binds the connection to a
//! host key. [`Request::Exchange`] both reports finished tasks and asks for
//! new ones, so a busy worker needs one round trip per batch, not per task.

use serde::{Deserialize, Serialize};

use crate::Hash;

/// ALPN protocol name; it names the protocol version, so a worker and a
/// coordinator that do not speak the same version fail the TLS handshake
/// with a clear "no application protocol" error instead of garbling frames.
/// Version 2: postcard instead of bincode, the `Busy` error, returned tasks;
/// version 3: `Exchange::held`; version 4: `Hello::account`, an
/// account key's signed attachment instead of a self-chosen name;
/// version 5: `Task::number`, `ExchangeReply::stop`; version 6: the host's
/// chosen name, CPU model and slots in `HostFacts`, the account's team in
/// its `Attachment`; version 7: `TaskLimits::metering`; version 8:
/// `Welcome::mirrors`, `Task::input_ref`.
pub const ALPN: &[u8] = b"peergrid/8";

/// Work unit id, unique within a coordinator.
pub type UnitId = u64;
/// Job id, unique within a coordinator.
pub type JobId = u64;

// A Hello (about 300 bytes on the stack) comes once per connection and a
// request lives for one round trip: boxing it would save nothing that
// matters and change every match on it.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Hello(Hello),
    Exchange(Exchange),
    /// Fetch a module or an input by content hash (workers cache modules
    /// by hash).
    GetBlob(Hash),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Welcome(Welcome),
    Exchange(ExchangeReply),
    #[serde(with = "serde_bytes")]
    Blob(Vec<u8>),
    Error(WireError),
}

/// Proves the connection speaks for the holder of `host_key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The host's Ed25519 public key: its identity.
    pub host_key: [u8; 32],
    /// Milliseconds since the Unix epoch when the worker signed; the
    /// coordinator refuses stale greetings.
    pub timestamp_ms: u64,
    /// Ed25519 signature over [`hello_message`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    pub facts: HostFacts,
    /// The worker's version, for the operator's host list.
    pub worker_version: String,
    /// The volunteer account this host belongs to, proved by the account
    /// key's signature; `None`: the host is its own anonymous volunteer.
    pub account: Option<Attachment>,
}

/// A volunteer account's signature attaching one host to it. An account
/// *is* its key: nobody without the key can attach a host to it, so
/// `distinct_volunteers` and a ban by account mean something. The name is
/// for display only; two accounts may choose the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The account's Ed25519 public key: its identity.
    pub account_key: [u8; 32],
    /// The name the volunteer shows on the leaderboard (at most
    /// [`MAX_ACCOUNT`](crate::limits::MAX_ACCOUNT) bytes, no control
    /// characters).
    pub name: String,
    /// The team the account belongs to ('' = none; at most
    /// [`MAX_TEAM`](crate::limits::MAX_TEAM) bytes, see
    /// [`volunteer_name`](crate::text::volunteer_name)). Membership is the
    /// account's statement, so it is signed with the name: only the key's
    /// holder puts an account in a team.
    pub team: String,
    /// Ed25519 signature by the account key over [`attachment_message`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The bytes an account key signs to attach `host_key` under `name`, in
/// `team`: the name's length comes first, so no other split of the same
/// bytes into name and team verifies.
pub fn attachment_message(host_key: &[u8; 32], name: &str, team: &str) -> Vec<u8> {
    let mut m = b"peergrid-attach-v2".to_vec();
    m.extend_from_slice(host_key);
    m.extend_from_slice(&(name.len() as u64).to_le_bytes());
    m.extend_from_slice(name.as_bytes());
    m.extend_from_slice(team.as_bytes());
    m
}

/// What a host says of itself (read with sysinfo, but for `name` and
/// `slots`, which the volunteer's preferences set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    pub cores: u32,
    pub memory_bytes: u64,
    pub os: String,
    pub arch: String,
    /// The name the volunteer chose for the host ('' = unnamed: pages
    /// show `host-` and the first 8 hex digits of its key). Never the
    /// machine's own hostname unless the volunteer gives it: that is
    /// personal data. At most [`MAX_HOST_NAME`](crate::limits::MAX_HOST_NAME)
    /// bytes, see [`volunteer_name`](crate::text::volunteer_name).
    pub name: String,
    /// The CPU's model name ('' = unknown), printable ASCII of at most
    /// [`MAX_HOST_FACT`](crate::limits::MAX_HOST_FACT) bytes.
    pub cpu_model: String,
    /// Tasks the worker runs at once: the cores it gives the grid.
    pub slots: u32,
}

/// The bytes a worker signs in [`Hello`]: bound to the coordinator's
/// certificate so a greeting cannot be replayed to another coordinator.
pub fn hello_message(cert_sha256: &[u8; 32], timestamp_ms: u64) -> Vec<u8> {
    let mut m = b"peergrid-hello-v1".to_vec();
    m.extend_from_slice(cert_sha256);
    m.extend_from_slice(&timestamp_ms.to_le_bytes());
    m
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The coordinator's id for this host.
    pub host_id: u64,
    /// Base addresses (`http://` or `https://`, at most
    /// [`MAX_MIRRORS`](crate::limits::MAX_MIRRORS) of at most
    /// [`MAX_MIRROR_URL`](crate::limits::MAX_MIRROR_URL) bytes) of plain web
    /// servers holding the project's modules and inputs by content
    /// ([`mirror_path`]): the worker fetches from them first, checks the
    /// BLAKE3 hash, and falls back to [`Request::GetBlob`].
    pub mirrors: Vec<String>,
}

/// Where a mirror keeps the blob `hash`, below its base address: the first
/// two hex digits name a folder, the other 62 the file (`ab/cdef…`).
pub fn mirror_path(hash: &Hash) -> String {
    let hex = hash.to_string();
    format!("{}/{}", &hex[..2], &hex[2..])
}

/// Why `url` cannot be a mirror's base address, or `None` if it can: an
/// `http://` or `https://` address with a host, of at most
/// [`MAX_MIRROR_URL`](crate::limits::MAX_MIRROR_URL) bytes of printable
/// ASCII, without a query or fragment (the blob's path is appended).
pub fn mirror_problem(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let Some(rest) = rest else {
        return Some(format!(
            "mirror {url:?} is not an http:// or https:// address"
        ));
    };
    if url.len() > crate::limits::MAX_MIRROR_URL {
        return Some(format!(
            "a mirror address is at most {} bytes",
            crate::limits::MAX_MIRROR_URL
        ));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) || url.contains(['?', '#']) {
        return Some(format!(
            "mirror {url:?} has a space, a control character, a query or a fragment"
        ));
    }
    if rest.split('/').next().is_none_or(str::is_empty) {
        return Some(format!("mirror {url:?} names no host"));
    }
    None
}

/// An input the worker fetches by content rather than receiving inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub hash: Hash,
    /// Its length in bytes, at most [`MAX_INPUT`](crate::limits::MAX_INPUT).
    pub len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// Finished tasks, reported until acknowledged.
    pub reports: Vec<TaskReport>,
    /// How many new tasks the worker can take now.
    pub want: u32,
    /// Tasks the worker gives back unstarted (it could not start them
    /// before their deadline left room for the run): they are reissued,
    /// and the host is not charged for them.
    pub returned: Vec<UnitId>,
    /// Every unit the worker holds unfinished (running or waiting), at
    /// most [`MAX_HELD`](crate::limits::MAX_HELD), or `None` if it does
    /// not say: a copy in progress that the worker does not hold was lost
    /// with a reply on the way, and is reissued at once without charge.
    pub held: Option<Vec<UnitId>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub unit: UnitId,
    pub outcome: Outcome,
    /// Fuel the task consumed: deterministic, so replicas agree on it.
    pub fuel_used: u64,
    /// Wall time, for statistics only.
    pub elapsed_ms: u64,
    /// The engine configuration the task ran under (the sandbox's engine
    /// id, which names the architecture unless NaNs were canonical).
    pub engine: String,
    /// The task was resumed from a checkpoint after the worker restarted:
    /// its output is comparable but `fuel_used` is only an estimate, so
    /// the coordinator does not hold it to its replicas' fuel.
    pub resumed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The module exited with status 0; this is everything it wrote to stdout.
    Success(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Non-zero exit, trap, limit hit, or a module that could not be loaded.
    /// The end of the module's stderr, when it wrote any, follows the
    /// message after [`STDERR_SEPARATOR`] ([`error_with_stderr`]): inside
    /// the string, so workers and coordinators of this protocol version
    /// that know nothing of it still read and store the report.
    Error(String),
}

/// Separates an error report's message from the end of the task's stderr
/// ([`Outcome::Error`]).
pub const STDERR_SEPARATOR: &str = "\n--- end of stderr ---\n";

/// An error report's text: `message`, then `stderr_tail` after
/// [`STDERR_SEPARATOR`] unless it is empty.
pub fn error_with_stderr(message: String, stderr_tail: &str) -> String {
    if stderr_tail.is_empty() {
        message
    } else {
        format!("{message}{STDERR_SEPARATOR}{stderr_tail}")
    }
}

/// Splits an error report's text into its message and the end of stderr
/// (`None` when the worker sent none, as older workers never do).
pub fn split_stderr(error: &str) -> (&str, Option<&str>) {
    match error.split_once(STDERR_SEPARATOR) {
        Some((message, tail)) => (message, Some(tail)),
        None => (error, None),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeReply {
    /// Reports that are now durably stored; the worker may forget them.
    pub accepted: Vec<UnitId>,
    /// Reports the coordinator will never take (unknown unit, not assigned
    /// to this host, oversized output), with the reason; forget them too.
    pub rejected: Vec<(UnitId, String)>,
    pub tasks: Vec<Task>,
    /// When no task was available: how long to wait before asking again.
    pub retry_after_ms: u32,
    /// Units whose copies the worker holds that it should stop running and
    /// forget, without a report (their job was cancelled).
    pub stop: Vec<UnitId>,
}

/// One copy of a work unit, assigned to one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub unit: UnitId,
    pub job: JobId,
    /// With `job`, what the unit's randomness seed derives from: its
    /// number within its job, from 1 (what the researcher sees), or, for a
    /// job submitted before units were numbered, `unit`, as when it ran.
    pub number: u64,
    pub module: Hash,
    /// The input, or empty when `input_ref` is set.
    #[serde(with = "serde_bytes")]
    pub input: Vec<u8>,
    /// Set when the coordinator sends the input by content: the worker
    /// fetches it (from a mirror of [`Welcome::mirrors`], else with
    /// [`Request::GetBlob`]), checks its hash and length, and then holds
    /// the task with `input` filled and this `None`.
    pub input_ref: Option<BlobRef>,
    pub args: Vec<String>,
    pub limits: TaskLimits,
    /// Report by this time (ms since the Unix epoch) or the unit is
    /// reissued to another host.
    pub deadline_ms: u64,
    /// The researcher's signature on `module` and `args`: the worker runs
    /// the task only if it verifies under the project key it pinned.
    pub signature: crate::signing::ModuleSignature,
    /// Run with NaN canonicalization: set once replicas on different
    /// architectures disagreed, so the re-runs are comparable everywhere
    /// (see docs/sandbox.md).
    pub canonical_nan: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLimits {
    pub memory_bytes: u64,
    pub fuel: u64,
    pub max_output_bytes: u64,
    /// Wall-clock budget for one run, in milliseconds.
    pub wall_ms: u64,
    /// Whether the run counts fuel (`fuel` is then its cap) or not.
    pub metering: crate::spec::Metering,
}

impl TaskLimits {
    /// The limits every task of a job with `settings` runs under: on a
    /// worker, and when `peergrid verify` re-runs one.
    pub fn for_job(settings: &crate::spec::JobSettings) -> TaskLimits {
        TaskLimits {
            memory_bytes: settings.memory_mb.saturating_mul(1024 * 1024),
            fuel: settings.fuel,
            max_output_bytes: crate::limits::MAX_OUTPUT as u64,
            wall_ms: settings.deadline_secs.saturating_mul(1000),
            metering: settings.metering,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    Malformed,
    Unauthenticated,
    Banned,
    NotFound,
    TooLarge,
    Internal,
    /// The coordinator refuses for now (too many new identities from one
    /// address, storage reserve reached): try again later.
    Busy,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_rides_inside_the_error_text() {
        let text = error_with_stderr("module trapped".into(), "panicked: bad input");
        assert_eq!(
            split_stderr(&text),
            ("module trapped", Some("panicked: bad input"))
        );
        // No stderr, or an older worker: the message alone.
        assert_eq!(error_with_stderr("trap".into(), ""), "trap");
        assert_eq!(split_stderr("trap"), ("trap", None));
        // The same bytes on the wire as any other error string.
        let report = Outcome::Error(text.clone());
        let bytes = crate::codec::encode(&report).unwrap();
        assert_eq!(crate::codec::decode::<Outcome>(&bytes).unwrap(), report);
    }

    #[test]
    fn mirrors_are_plain_web_addresses_and_blobs_sit_in_two_level_folders() {
        for good in [
            "http://127.0.0.1:8080",
            "https://cdn.example.org/peergrid/blobs/",
        ] {
            assert_eq!(mirror_problem(good), None, "{good}");
        }
        for bad in [
            "ftp://example.org",
            "file:///etc",
            "http://",
            "http:///path",
            "https://example.org/a b",
            "https://example.org/?q=1",
            "https://example.org/#x",
            "https://example.org/\u{7}",
        ] {
            assert!(mirror_problem(bad).is_some(), "{bad}");
        }
        let long = format!("https://example.org/{}", "a".repeat(600));
        assert!(mirror_problem(&long).unwrap().contains("at most"));
        let hash = Hash::of(b"input");
        let path = mirror_path(&hash);
        assert_eq!(path.len(), 65);
        assert_eq!(path.replace('/', ""), hash.to_string());
        assert_eq!(&path[2..3], "/");
    }
}
