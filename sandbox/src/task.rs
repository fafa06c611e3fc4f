//! What callers hand the sandbox and get back: a [`SandboxTask`] in, a
//! [`RunReport`] out, and the [`TaskHooks`] through which a running task's
//! guest SDK calls reach them and they pace it. None of these types names
//! wasmtime, so they are all a caller ever sees (see the crate's
//! Architecture Invariant).

use peergrid_proto::Hash;
use peergrid_proto::wire::TaskLimits;
use std::time::Duration;

/// Why the sandbox could not be built or a module cannot be run.
///
/// Messages carry wasmtime's explanation as text so wasmtime types never leave
/// this crate.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
    #[error("cannot start the epoch ticker thread: {0}")]
    Ticker(#[from] std::io::Error),
    #[error(
        "module bytes hash to {actual}, not to the expected {expected}; the download is corrupt"
    )]
    HashMismatch { expected: String, actual: String },
    #[error("module is not valid WebAssembly: {0}")]
    Compile(String),
    #[error(
        "module imports something the sandbox does not provide (only WASI preview 1 and the peergrid guest SDK are available): {0}"
    )]
    Link(String),
    #[error(
        "module has no `_start` function taking and returning nothing; build it as a WASI command (e.g. a wasm32-wasip1 binary)"
    )]
    NoStart,
}

/// How a run's float arithmetic makes NaNs (see the crate's "NaN modes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NanMode {
    /// Whatever the CPU makes: replicas agree bitwise on one architecture.
    /// The default.
    Fast,
    /// Every arithmetic NaN canonical: comparable on every architecture.
    Canonical,
}

impl NanMode {
    /// The mode a task asks for (`Task::canonical_nan` on the wire).
    pub fn from_canonical(canonical_nan: bool) -> NanMode {
        match canonical_nan {
            true => NanMode::Canonical,
            false => NanMode::Fast,
        }
    }
}

/// One task for [`Sandbox::run`](crate::Sandbox::run).
#[derive(Clone, Copy, Debug)]
pub struct SandboxTask<'a> {
    /// The module's hash: the compiled-module caches' key.
    pub module: &'a Hash,
    /// Read only on a cache miss, and then must hash to `module`.
    pub module_bytes: &'a [u8],
    /// The work unit, on stdin.
    pub input: &'a [u8],
    /// Follow the program name `task`.
    pub args: &'a [String],
    /// Seeds every source of randomness the module can reach.
    pub seed: u64,
    pub limits: &'a TaskLimits,
    /// Picks the engine (see the crate's "NaN modes").
    pub nan: NanMode,
}

/// What one run of a task produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub outcome: RunOutcome,
    /// Fuel the module consumed: deterministic, so replicas of a task agree on
    /// it and it can be credited exactly. Zero when the module never ran.
    pub fuel_used: u64,
    /// What the module wrote to stderr: its last
    /// [`MAX_STDERR`](peergrid_proto::limits::MAX_STDERR) bytes at most (the
    /// earlier ones are dropped).
    pub stderr: Vec<u8>,
    /// Wall time spent in [`Sandbox::run`](crate::Sandbox::run), compilation
    /// on a cache miss included.
    pub elapsed: Duration,
    /// The run resumed from a checkpoint ([`TaskHooks::resume_from`]):
    /// `fuel_used` is the checkpoint's fuel plus what the run used after
    /// `restore`, an estimate rather than a replica-exact count.
    pub resumed: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The module returned from `_start` or exited with status 0; holds its
    /// stdout.
    Success(Vec<u8>),
    /// Anything else, as a message meant for the researcher.
    Error(String),
}

/// A task's state as the guest SDK's `checkpoint` offered it, with the fuel
/// the task had used when it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub state: Vec<u8>,
    pub fuel_used: u64,
}

/// What [`TaskHooks::pace`] decides at an epoch tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pace {
    /// Keep running (after the hook slept, if it wanted a pause).
    Continue,
    /// End the run now; the report's outcome is an error with this message.
    /// The caller asked for it, so it knows to ignore that report.
    Stop(String),
}

/// The caller's side of a running task: the guest SDK's calls land here,
/// and the worker paces the task through it. Every method runs on the
/// task's own thread, so a method that sleeps pauses the task.
pub trait TaskHooks: Send + Sync {
    /// The module is compiled and linked: the run itself starts now.
    fn started(&self) {}
    /// The checkpoint to resume from, if the task ran before; asked once.
    fn resume_from(&self) -> Option<Checkpoint> {
        None
    }
    /// Whether a `checkpoint` call now would be kept (the interval has
    /// passed); the module's memory is only copied when it would.
    fn wants_checkpoint(&self) -> bool {
        false
    }
    /// The guest offered its state while [`TaskHooks::wants_checkpoint`]
    /// said yes; `fuel_used` counts from the task's very first start.
    fn checkpoint(&self, _checkpoint: Checkpoint) {}
    /// The guest says it is `fraction` done (clamped to 0..=1).
    fn progress(&self, _fraction: f64) {}
    /// Called about every epoch tick (10 ms) while the module runs. It may
    /// sleep to pause the module; that time does not count as wall time.
    fn pace(&self) -> Pace {
        Pace::Continue
    }
}
