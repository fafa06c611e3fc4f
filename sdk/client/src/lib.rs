//! The researcher's side of peergrid: a blocking client for the
//! coordinator's HTTP API, and reading a job spec into a submission.
//! The `peergrid` CLI is a thin layer over this crate.

pub mod export;
pub mod profile;
mod upload;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use peergrid_proto::Hash;
use peergrid_proto::api::{
    CancelRequest, Cancelled, DatasetRow, ErrorBody, JobDetail, JobLogs, JobStatus, Submitted,
    UnitLogs,
};
use peergrid_proto::limits::{MAX_INPUT, MAX_MODULE};
use peergrid_proto::signing::{self, Endorsement};
use peergrid_proto::spec::{JobSpec, JobSubmission, Metering, UnitSpec, Validator};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cause is the error's `source`, not repeated in its text: the
    /// CLI prints the chain.
    #[error("cannot reach the coordinator at {url}")]
    Unreachable { url: String, source: ureq::Error },
    #[error(
        "the server address `{0}` has no scheme: write `http://{0}` (or `https://` when the coordinator is behind TLS)"
    )]
    NoScheme(String),
    #[error("the coordinator refused ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("unexpected answer from the coordinator: {0}")]
    BadAnswer(String),
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Spec(String),
    #[error("{path}: {message}")]
    Profile { path: PathBuf, message: String },
}

pub mod local;

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Text from the server (job and unit names, failure reasons a worker
/// worded, error messages) made safe to print on a terminal: every
/// control character, line breaks included, is written as an escape
/// (`\u{1b}`, `\r`, `\n`), so the text cannot move the cursor, clear the
/// screen, retitle the window or hide what follows it.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `value` as one line of JSON with every control character escaped:
/// serde_json escapes those below U+0020 but writes DEL and the C1
/// controls (U+0080–U+009F, which some terminals obey) as they are.
pub fn printable_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if !text.chars().any(char::is_control) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            // Only inside strings (JSON's own syntax has none), where
            // `\uXXXX` is the same character.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A job spec read from disk: the submission to make and the blobs it needs.
pub struct PreparedJob {
    pub submission: JobSubmission,
    /// Module and inputs by hash, deduplicated.
    pub blobs: Vec<(Hash, Vec<u8>)>,
    /// Folders inside the inputs folder, which are not work units (only
    /// its files are): the CLI says so rather than drop them silently.
    pub skipped_folders: Vec<PathBuf>,
}

/// A researcher's signing key and the project's endorsement of it.
pub struct Researcher {
    pub key: SigningKey,
    pub endorsement: Endorsement,
}

impl Researcher {
    /// Loads a key file (`peergrid keys new`) and an endorsement file
    /// (`peergrid-coordinator endorse`), checking that they belong together.
    pub fn load(key_path: &Path, endorsement_path: &Path) -> Result<Researcher> {
        let text = fs::read_to_string(key_path).map_err(io_err(key_path))?;
        let key = signing::parse_secret_key(&text)
            .map_err(|e| ClientError::Spec(format!("{}: {e}", key_path.display())))?;
        let text = fs::read_to_string(endorsement_path).map_err(io_err(endorsement_path))?;
        let endorsement: Endorsement = serde_json::from_str(&text).map_err(|e| {
            ClientError::Spec(format!(
                "{}: not an endorsement: {e}",
                endorsement_path.display()
            ))
        })?;
        if endorsement.researcher_key != hex::encode(key.verifying_key().to_bytes()) {
            return Err(ClientError::Spec(format!(
                "{} endorses another key than {}",
                endorsement_path.display(),
                key_path.display()
            )));
        }
        Ok(Researcher { key, endorsement })
    }
}

/// Makes a new researcher key; returns the secret (hex, for the key file)
/// and the public key (hex, for the operator to endorse).
pub fn new_key() -> Result<(String, String)> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| ClientError::Spec(format!("no OS randomness: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    Ok((
        hex::encode(key.to_bytes()),
        hex::encode(key.verifying_key().to_bytes()),
    ))
}

/// Reads a spec file, its module and its inputs, and signs the module and
/// arguments. Paths in the spec are relative to the spec file.
pub fn prepare_job(spec_path: &Path, researcher: &Researcher) -> Result<PreparedJob> {
    let text = fs::read_to_string(spec_path).map_err(io_err(spec_path))?;
    let spec = JobSpec::from_toml(&text)
        .map_err(|e| ClientError::Spec(format!("{}: {e}", spec_path.display())))?;
    // Checked by `from_toml`; the submission carries them in SPDX's spelling.
    let terms = spec
        .terms()
        .map_err(|e| ClientError::Spec(format!("{}: {e}", spec_path.display())))?;
    let base = spec_path.parent().unwrap_or(Path::new("."));
    let module_path = base.join(&spec.module);
    let module = fs::read(&module_path).map_err(io_err(&module_path))?;
    check_wasm("the module", &module_path, &module)?;
    if module.len() > MAX_MODULE {
        return Err(ClientError::Spec(format!(
            "{}: the module is {} bytes; the limit is {MAX_MODULE}",
            module_path.display(),
            module.len()
        )));
    }
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut skipped_folders = Vec::new();
    if let Some(dir) = &spec.inputs.dir {
        let dir = base.join(dir);
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let p = entry.map_err(io_err(&dir))?.path();
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_file() {
                paths.push(p);
            } else if p.is_dir() {
                skipped_folders.push(p);
            }
        }
        paths.sort();
        skipped_folders.sort();
        for p in paths {
            let bytes = fs::read(&p).map_err(io_err(&p))?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            inputs.push((name, bytes));
        }
    } else if let Some(file) = &spec.inputs.jsonl {
        let file = base.join(file);
        let text = fs::read(&file).map_err(io_err(&file))?;
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            inputs.push((format!("line {}", i + 1), line.to_vec()));
        }
    }
    if inputs.is_empty() {
        let why = if skipped_folders.is_empty() {
            "empty folder or file"
        } else {
            "the inputs folder holds only folders; each file directly in it is a work unit"
        };
        return Err(ClientError::Spec(format!(
            "{}: the job has no inputs ({why})",
            spec_path.display()
        )));
    }
    let mut blobs = std::collections::BTreeMap::new();
    let module_hash = Hash::of(&module);
    blobs.insert(module_hash, module);
    let mut units = Vec::with_capacity(inputs.len());
    for (name, bytes) in inputs {
        if bytes.len() > MAX_INPUT {
            return Err(ClientError::Spec(format!(
                "input `{name}` is {} bytes; a work unit's input is at most {MAX_INPUT} bytes",
                bytes.len()
            )));
        }
        let hash = Hash::of(&bytes);
        units.push(UnitSpec { name, input: hash });
        blobs.entry(hash).or_insert(bytes);
    }
    let validator = match spec.validator {
        Validator::Custom { module } => {
            let path = base.join(&module);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            check_wasm("the custom validator", &path, &bytes)?;
            if bytes.len() > MAX_MODULE {
                return Err(ClientError::Spec(format!(
                    "{}: the validator module is {} bytes; the limit is {MAX_MODULE}",
                    path.display(),
                    bytes.len()
                )));
            }
            let hash = Hash::of(&bytes);
            blobs.entry(hash).or_insert(bytes);
            Validator::Custom { module: hash }
        }
        other => other.map_module(|_| Hash([0; 32])),
    };
    let signature = signing::sign_module(
        &researcher.key,
        &researcher.endorsement,
        &module_hash,
        &spec.args,
    );
    let submission = JobSubmission {
        terms,
        name: spec.name,
        module: module_hash,
        args: spec.args,
        settings: spec.settings,
        units,
        validator,
        signature,
        plots: spec.plots,
    };
    submission
        .validate()
        .map_err(|e| ClientError::Spec(e.to_string()))?;
    Ok(PreparedJob {
        submission,
        blobs: blobs.into_iter().collect(),
        skipped_folders,
    })
}

/// Refuses a file that is not a wasm binary (a `.wat` text, a native
/// executable, a truncated download) before anything is uploaded.
fn check_wasm(what: &str, path: &Path, bytes: &[u8]) -> Result<()> {
    if bytes.starts_with(b"\0asm") {
        return Ok(());
    }
    Err(ClientError::Spec(format!(
        "{what} {} is not a wasm module (it does not start with the `\\0asm` header); \
         build it for wasm32-wasip1",
        path.display()
    )))
}

/// How long a request may wait on the network: to connect, and between
/// two reads or writes once connected. A stalled or vanished coordinator
/// gives an error instead of a hang; a long export or upload that keeps
/// moving is never cut off.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a job submission may take to be answered.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(600);

/// The address the user gave, checked: `http://` or `https://` and a
/// host. `127.0.0.1:8080` gets [`ClientError::NoScheme`] instead of
/// ureq's puzzling answer.
pub fn server_url(text: &str) -> Result<String> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    match ["http://", "https://"]
        .iter()
        .find(|scheme| lower.starts_with(*scheme))
    {
        Some(scheme) if text.len() > scheme.len() => Ok(text.trim_end_matches('/').to_string()),
        Some(_) => Err(ClientError::Spec(format!(
            "the server address `{text}` names no host"
        ))),
        None => Err(ClientError::NoScheme(text.to_string())),
    }
}

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// What an upload cost.
#[derive(Debug, Default)]
pub struct UploadStats {
    pub uploaded: usize,
    pub uploaded_bytes: usize,
    pub already_there: usize,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Client {
        Client::with_timeout(server, token, NETWORK_TIMEOUT)
    }

    /// A client whose requests give up after `timeout` without progress
    /// (see [`NETWORK_TIMEOUT`]).
    pub fn with_timeout(server: &str, token: Option<String>, timeout: Duration) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(timeout))
            .build()
            .into();
        Client {
            base: server.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token.as_deref().unwrap_or(""))
    }

    fn check(
        &self,
        url: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut resp = r.map_err(|source| ClientError::Unreachable {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            let message = serde_json::from_str::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or(body);
            return Err(ClientError::Refused { status, message });
        }
        Ok(resp)
    }

    fn json<T: DeserializeOwned>(resp: ureq::http::Response<ureq::Body>) -> Result<T> {
        let mut resp = resp;
        resp.body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_json()
            .map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(path);
        let r = self.agent.get(&url).call();
        Self::json(self.check(&url, r)?)
    }

    /// Checks that the server answers and, when the client has a token,
    /// that it takes it (an empty missing-blobs query, which needs it).
    pub fn check_token(&self) -> Result<()> {
        if self.token.is_none() {
            let _: Vec<JobStatus> = self.jobs()?;
            return Ok(());
        }
        let url = self.url("/api/v1/blobs/missing");
        let r = self
            .agent
            .post(&url)
            .header("Authorization", &self.auth())
            .send_json(Vec::<Hash>::new());
        let _: Vec<Hash> = Self::json(self.check(&url, r)?)?;
        Ok(())
    }

    /// Submits a job whose blobs are uploaded; returns its id.
    pub fn submit(&self, job: &JobSubmission) -> Result<u64> {
        let url = self.url("/api/v1/jobs");
        // The server checks every unit's input and stores the job before
        // it answers: a job of a million units takes longer than a stalled
        // read elsewhere (docs/benchmarks.md).
        let r = self
            .agent
            .post(&url)
            .config()
            .timeout_per_read(Some(SUBMIT_TIMEOUT))
            .build()
            .header("Authorization", &self.auth())
            .send_json(job);
        let submitted: Submitted = Self::json(self.check(&url, r)?)?;
        Ok(submitted.job_id)
    }

    /// A job's status, failed units and what re-running a unit needs.
    pub fn status(&self, job: u64) -> Result<JobDetail> {
        self.get(&format!("/api/v1/jobs/{job}"))
    }

    /// Cancels a job (`POST /api/v1/jobs/{id}/cancel`, with the token and
    /// the signature of the researcher who submitted it).
    pub fn cancel(&self, job: u64, researcher: &Researcher) -> Result<Cancelled> {
        let url = self.url(&format!("/api/v1/jobs/{job}/cancel"));
        let body = CancelRequest {
            signature: signing::sign_cancel(&researcher.key, &researcher.endorsement, job),
        };
        let r = self
            .agent
            .post(&url)
            .header("Authorization", &self.auth())
            .send_json(&body);
        Self::json(self.check(&url, r)?)
    }

    /// Every job's status, by id.
    pub fn jobs(&self) -> Result<Vec<JobStatus>> {
        self.get("/api/v1/jobs")
    }

    /// One page of a job's failed units with their last errors and the
    /// end of their stderr, after unit `after` (0: from the start).
    pub fn job_logs(&self, job: u64, after: u64) -> Result<JobLogs> {
        self.get(&format!("/api/v1/jobs/{job}/logs?after={after}"))
    }

    /// Every error result of one unit of a job, with its stderr.
    pub fn unit_logs(&self, job: u64, unit: u64) -> Result<UnitLogs> {
        self.get(&format!("/api/v1/jobs/{job}/logs/{unit}"))
    }

    /// A stored blob, checked against its hash.
    pub fn blob(&self, hash: &Hash) -> Result<Vec<u8>> {
        let url = self.url(&format!("/api/v1/blob/{hash}"));
        let r = self.agent.get(&url).call();
        let mut resp = self.check(&url, r)?;
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        if Hash::of(&bytes) != *hash {
            return Err(ClientError::BadAnswer(format!(
                "the server's blob {hash} does not match its hash"
            )));
        }
        Ok(bytes)
    }

    /// One row of a job's dataset (without its output). A job without a
    /// validated row for `unit` is the server's 404, whose message says so
    /// (an older server without the route says something else: its words
    /// are passed on, not guessed at).
    pub fn dataset_row(&self, job: u64, unit: u64) -> Result<DatasetRow> {
        self.get(&format!("/api/v1/jobs/{job}/dataset/{unit}"))
    }

    /// The BLAKE3 (hex) and length the coordinator's checksum manifest
    /// gives for a job's whole export in `format` (its name in the
    /// manifest: `jsonl`, `csv`, `csv_columns` or `parquet`).
    pub fn export_digest(&self, job: u64, format: &str) -> Result<(String, u64)> {
        #[derive(serde::Deserialize)]
        struct Manifest {
            exports: std::collections::HashMap<String, Digest>,
        }
        #[derive(serde::Deserialize)]
        struct Digest {
            blake3: String,
            bytes: u64,
        }
        let url = self.url(&format!("/api/v1/jobs/{job}/manifest"));
        // The server hashes the whole dataset before it writes the
        // checksums: allow it far longer than a stalled read elsewhere.
        let r = self
            .agent
            .get(&url)
            .config()
            .timeout_per_read(Some(Duration::from_secs(600)))
            .build()
            .call();
        let manifest: Manifest = Self::json(self.check(&url, r)?)?;
        let digest = manifest.exports.get(format).ok_or_else(|| {
            ClientError::BadAnswer(format!(
                "the manifest of job {job} has no `{format}` export"
            ))
        })?;
        Ok((digest.blake3.clone(), digest.bytes))
    }

    /// Where a job's `CITATION.cff` is served.
    pub fn citation_url(&self, job: u64) -> String {
        self.url(&format!("/api/v1/jobs/{job}/CITATION.cff"))
    }

    /// Streams a job's dataset in `format` (as [`Client::export_digest`]
    /// names it) into `out`; returns the bytes written.
    pub fn export(&self, job: u64, format: &str, out: &mut dyn Write) -> Result<u64> {
        let query = match format {
            "csv_columns" => "format=csv&columns=json".to_string(),
            f => format!("format={f}"),
        };
        let url = self.url(&format!("/api/v1/jobs/{job}/results?{query}"));
        let r = self.agent.get(&url).call();
        let mut resp = self.check(&url, r)?;
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(io_err(Path::new("<output>")))?;
            total += n as u64;
        }
        Ok(total)
    }
}

/// What re-running a unit locally found.
#[derive(Debug, serde::Serialize)]
pub struct Verification {
    pub job: u64,
    pub unit: u64,
    pub matches: bool,
    pub expected_output: String,
    pub got_output: Option<String>,
    pub expected_fuel: u64,
    pub got_fuel: u64,
    pub engine: String,
    pub error: Option<String>,
}

impl Client {
    /// Re-runs unit `unit` of job `job` in the same sandbox workers use and
    /// compares the output hash and fuel with the dataset row (the output
    /// alone for a `fixed` job).
    pub fn verify(&self, job: u64, unit: u64) -> Result<Verification> {
        use peergrid_sandbox::RunOutcome;
        let detail = self.status(job)?;
        let row = self.dataset_row(job, unit)?;
        let module = self.blob(&detail.status.module)?;
        let input = self.blob(&row.input_hash)?;
        let run = local::run_unit(&local::LocalTask {
            module: &module,
            input: &input,
            args: &detail.args,
            settings: &detail.status.settings,
            seed: peergrid_sandbox::unit_seed(
                job,
                if row.seed_unit == 0 {
                    unit
                } else {
                    row.seed_unit
                },
            ),
            canonical_nan: row.canonical_nan(),
        })?;
        // A `fixed` job counts no fuel: its row's `fuel` is the declared
        // credit, and the output alone is checked.
        let expected_fuel = match detail.status.settings.metering {
            Metering::Fuel => row.fuel,
            Metering::Fixed => 0,
        };
        let expected_output = row.output_hash;
        let (got_output, error) = match run.outcome {
            RunOutcome::Success(out) => (Some(Hash::of(&out)), None),
            RunOutcome::Error(e) => (None, Some(e)),
        };
        Ok(Verification {
            job,
            unit,
            matches: got_output == Some(expected_output) && run.fuel == expected_fuel,
            expected_output: expected_output.to_hex(),
            got_output: got_output.map(|h| h.to_hex()),
            expected_fuel,
            got_fuel: run.fuel,
            engine: run.engine,
            error,
        })
    }
}

#[cfg(test)]
mod tests;
