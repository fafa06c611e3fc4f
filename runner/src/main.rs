//! `peergrid-runner`: runs tasks one at a time in the sandbox, for the
//! process that started it (the worker's daemon, a test), over its stdin
//! and stdout (`peergrid_proto::runner`). It keeps its engines and compiled
//! modules warm between tasks.
//!
//! Before reading anything it drops to the lowest priority, arranges to
//! die with its parent, lowers its limit on open files, turns off core
//! dumps, and makes SIGUSR1 a request for a checkpoint (the worker is
//! shutting down).
//! Its generated code has no epoch checks: the daemon stops it at the
//! deadline by killing it, and paces it with SIGSTOP and SIGCONT.
//!
//! `peergrid-runner [--cache DIR]`: DIR keeps compiled modules across
//! runner processes (as the in-process sandbox's cache does).

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

#[cfg(feature = "simulate-fault")]
mod fault;

use peergrid_os::lock;
use peergrid_proto::codec;
use peergrid_proto::runner::{
    FromRunner, RUNNER_PROTOCOL, RunTask, RunnerOutcome, RunnerReport, ToRunner, frame, frame_len,
};
use peergrid_proto::spec::Metering;
use peergrid_sandbox::{Checkpoint, NanMode, RunOutcome, Sandbox, SandboxTask, TaskHooks};

/// Least time between two progress events: a guest may report progress
/// in a tight loop, and each event is a write to the daemon.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Open files a runner may hold: its pipes, the compiled-module cache's
/// reads and writes, wasmtime's own.
const MAX_FILES: u64 = 64;

/// Writable memory a runner may hold beyond its task's memory: its own
/// heap, the engines, and compiling a module (Cranelift's working memory
/// for a few MiB of wasm). Between the example jobs' tasks a runner holds
/// 30-140 MiB (VmData, measured), most of it after compiling SETI.
const MEMORY_HEADROOM: u64 = 512 << 20;

/// Where events go: the runner's stdout, one frame at a time.
type Events = Arc<Mutex<BufWriter<io::Stdout>>>;

fn main() -> ExitCode {
    // First, before anything here opens a file of its own.
    #[cfg(target_os = "linux")]
    {
        if let Err(e) = peergrid_os::confine::close_inherited_files() {
            eprintln!("peergrid-runner: cannot close the files it inherited: {e}");
        }
        if let Err(e) = peergrid_os::confine::leave_terminal() {
            eprintln!("peergrid-runner: cannot leave the worker's terminal: {e}");
        }
    }
    let parent = std::env::var("PEERGRID_RUNNER_PARENT")
        .ok()
        .and_then(|p| p.parse().ok());
    if let Err(e) = peergrid_os::process::die_with_parent(parent) {
        eprintln!("peergrid-runner: cannot arrange to die with the worker: {e}");
    }
    // Before any thread starts: the policy is inherited by threads made
    // after it is set.
    if let Err(e) = peergrid_os::process::lowest_priority() {
        eprintln!("peergrid-runner: cannot lower its priority: {e}");
    }
    #[cfg(target_os = "linux")]
    for (resource, name, value) in [
        (libc::RLIMIT_NOFILE, "open files", MAX_FILES),
        (libc::RLIMIT_CORE, "core dumps", 0),
        // The most any task may have, for good; each task then lowers
        // the soft limit to its own (`hold_to`).
        (
            libc::RLIMIT_DATA,
            "writable memory",
            peergrid_proto::limits::MAX_TASK_MEMORY + MEMORY_HEADROOM,
        ),
    ] {
        match peergrid_os::process::limit(resource, value) {
            // An emulator (qemu-user) says yes to RLIMIT_DATA and keeps
            // its own: say so rather than claim a limit that is not there.
            Ok(())
                if peergrid_os::process::limits_of(resource)
                    .is_ok_and(|(_, hard)| hard > value) =>
            {
                eprintln!("peergrid-runner: its limit on {name} did not take (an emulator?)")
            }
            Ok(()) => {}
            Err(e) => eprintln!("peergrid-runner: cannot limit {name}: {e}"),
        }
    }
    let checkpoint_now = match peergrid_os::process::checkpoint_requests() {
        Ok(flag) => Some(flag),
        Err(e) => {
            eprintln!("peergrid-runner: cannot take checkpoint requests: {e}");
            None
        }
    };
    let mut cache = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--cache", Some(dir)) => cache = Some(PathBuf::from(dir)),
            _ => {
                eprintln!("usage: peergrid-runner [--cache DIR]");
                return ExitCode::from(64);
            }
        }
    }
    #[cfg(feature = "simulate-fault")]
    let fault = std::env::var("PEERGRID_RUNNER_FAULT").ok();
    #[cfg(target_os = "linux")]
    let cache = confine(cache);
    #[cfg(feature = "simulate-fault")]
    if let Some(fault) = fault {
        FAULT.get_or_init(|| fault);
    }
    match serve(cache, checkpoint_now) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peergrid-runner: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The second wall, below the wasm sandbox: landlock confines the file
/// system to the compiled-module cache (to nothing without one), then the
/// seccomp filter (`peergrid_os::confine`) forbids sockets, exec, new
/// processes and the like for good. A layer the kernel lacks is named on
/// stderr, and the runner goes on behind the others. Returns the cache
/// the runner may keep: none unless landlock confines it to that folder.
#[cfg(target_os = "linux")]
fn confine(cache: Option<PathBuf>) -> Option<PathBuf> {
    use peergrid_os::confine;
    let cache = cache.filter(|dir| match std::fs::create_dir_all(dir) {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "peergrid-runner: cannot create {}: {e}; compiled modules are not kept",
                dir.display()
            );
            false
        }
    });
    let mut landlocked = confine::landlock(cache.as_deref());
    // A cache folder landlock cannot take: no cache, and no file at all.
    let cache = match (&landlocked, cache) {
        (Err(e), Some(dir)) => {
            eprintln!(
                "peergrid-runner: landlock cannot confine it to {} ({e}); compiled modules are not kept",
                dir.display()
            );
            landlocked = confine::landlock(None);
            None
        }
        (_, cache) => cache,
    };
    let filtered = confine::seccomp(landlocked.is_ok());
    match (&landlocked, &filtered) {
        (Ok(_), Ok(())) => {}
        (Err(e), Ok(())) => eprintln!(
            "peergrid-runner: no landlock ({e}): the seccomp filter refuses to open any file, so compiled modules are not kept on disk"
        ),
        (Ok(_), Err(e)) => {
            eprintln!(
                "peergrid-runner: no seccomp filter ({e}); landlock and the wasm sandbox remain"
            )
        }
        (Err(l), Err(s)) => eprintln!(
            "peergrid-runner: neither landlock ({l}) nor a seccomp filter ({s}): only the wasm sandbox contains a task"
        ),
    }
    // Kept only where landlock confines the runner to it (the fallback
    // above dropped it otherwise).
    if landlocked.is_ok() { cache } else { None }
}

/// `PEERGRID_RUNNER_FAULT`, in builds with the `simulate-fault` feature.
#[cfg(feature = "simulate-fault")]
static FAULT: OnceLock<String> = OnceLock::new();

/// Answers requests until stdin ends.
fn serve(
    cache: Option<PathBuf>,
    checkpoint_now: Option<&'static AtomicBool>,
) -> Result<(), String> {
    let fuel = Sandbox::for_runner(cache.as_deref(), false).map_err(|e| e.to_string())?;
    let fixed: OnceLock<Sandbox> = OnceLock::new();
    let events: Events = Arc::new(Mutex::new(BufWriter::new(io::stdout())));
    send(
        &events,
        &FromRunner::Ready {
            protocol: RUNNER_PROTOCOL,
            arch: std::env::consts::ARCH.to_string(),
        },
    )?;
    let mut input = BufReader::new(io::stdin().lock());
    while let Some(request) = read_request(&mut input)? {
        let ToRunner::Run(task) = request;
        // Compiling runs under the hard limit; the task's own limit
        // follows once it has started (`Hooks::started`).
        hold_to(None);
        #[cfg(feature = "simulate-fault")]
        if let Some(fault) = FAULT.get().filter(|_| fault::triggered_by(&task.input)) {
            // As in a task that has started.
            hold_to(Some(task.limits.memory_bytes));
            let said = fault::provoke(fault);
            send(&events, &fault::report(said))?;
            continue;
        }
        let sandbox = match task.limits.metering {
            Metering::Fuel => &fuel,
            Metering::Fixed => match fixed.get() {
                Some(sandbox) => sandbox,
                None => {
                    let built =
                        Sandbox::for_runner(cache.as_deref(), true).map_err(|e| e.to_string())?;
                    fixed.get_or_init(|| built)
                }
            },
        };
        let event = run(sandbox, *task, &events, checkpoint_now);
        send(&events, &event)?;
    }
    Ok(())
}

/// Holds the runner's writable memory (RLIMIT_DATA: what it has made
/// writable, whether or not it touched it) to a running task's memory and
/// the headroom, or (`None`, while a module compiles) to the hard limit set
/// at start: behind the sandbox's own cap, the operating system's bound on
/// each runner. A runner over it fails to allocate: the guest's
/// `memory.grow` fails, and the runner's own allocations abort it (the
/// task is lost, with how).
fn hold_to(task_memory: Option<u64>) {
    #[cfg(target_os = "linux")]
    if let Err(e) = peergrid_os::process::limit_soft(
        libc::RLIMIT_DATA,
        task_memory.map_or(u64::MAX, |m| m.saturating_add(MEMORY_HEADROOM)),
    ) {
        eprintln!("peergrid-runner: cannot limit its memory to the task's: {e}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = task_memory;
}

/// The next request, or `None` when the daemon closed the pipe.
fn read_request(input: &mut impl Read) -> Result<Option<ToRunner>, String> {
    let mut header = [0u8; 4];
    match input.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("reading a request: {e}")),
    }
    let len = frame_len(header).map_err(|e| e.to_string())?;
    let mut body = vec![0; len];
    input
        .read_exact(&mut body)
        .map_err(|e| format!("reading a request: {e}"))?;
    codec::decode(&body)
        .map(Some)
        .map_err(|e| format!("a request: {e}"))
}

fn send(events: &Events, event: &FromRunner) -> Result<(), String> {
    let bytes = frame(event).map_err(|e| e.to_string())?;
    let mut out = lock(events);
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| format!("the worker stopped listening: {e}"))
}

/// Runs one task; its last event ([`FromRunner::Done`], or
/// [`FromRunner::NeedModule`] when its bytes are missing).
fn run(
    sandbox: &Sandbox,
    task: RunTask,
    events: &Events,
    checkpoint_now: Option<&'static AtomicBool>,
) -> FromRunner {
    let nan = NanMode::from_canonical(task.canonical_nan);
    if task.module_bytes.is_none() && sandbox.needs_bytes(&task.module, nan) {
        return FromRunner::NeedModule;
    }
    let hooks = Arc::new(Hooks {
        events: events.clone(),
        memory: task.limits.memory_bytes,
        resume: Mutex::new(
            task.resume
                .map(|(state, fuel_used)| Checkpoint { state, fuel_used }),
        ),
        every: Duration::from_millis(task.checkpoint_every_ms),
        last_checkpoint: Mutex::new(Instant::now()),
        last_progress: Mutex::new(None),
        checkpoint_now,
        offered: AtomicBool::new(false),
    });
    // A request meant for an earlier task is void.
    if let Some(flag) = checkpoint_now {
        flag.store(false, Ordering::Relaxed);
    }
    let report = sandbox.run_with_hooks(
        &SandboxTask {
            module: &task.module,
            module_bytes: task.module_bytes.as_deref().unwrap_or_default(),
            input: &task.input,
            args: &task.args,
            seed: task.seed,
            limits: &task.limits,
            nan,
        },
        hooks,
    );
    FromRunner::Done(RunnerReport {
        outcome: match report.outcome {
            RunOutcome::Success(out) => RunnerOutcome::Success(out),
            RunOutcome::Error(why) => RunnerOutcome::Error(why),
        },
        fuel_used: report.fuel_used,
        stderr: report.stderr,
        elapsed_us: report.elapsed.as_micros() as u64,
        resumed: report.resumed,
        engine: sandbox.engine_id(nan).to_string(),
    })
}

/// A running task's guest SDK calls, forwarded to the daemon as events.
struct Hooks {
    events: Events,
    /// The task's memory, which the runner is held to once it starts.
    memory: u64,
    resume: Mutex<Option<Checkpoint>>,
    /// Least time between checkpoints; zero: none wanted.
    every: Duration,
    last_checkpoint: Mutex<Instant>,
    last_progress: Mutex<Option<Instant>>,
    /// Set by SIGUSR1: checkpoint at the next offer.
    checkpoint_now: Option<&'static AtomicBool>,
    /// The guest asked about checkpoints in this task (the daemon was
    /// told).
    offered: AtomicBool,
}

impl TaskHooks for Hooks {
    fn resume_from(&self) -> Option<Checkpoint> {
        lock(&self.resume).take()
    }

    fn started(&self) {
        hold_to(Some(self.memory));
        let _ = send(&self.events, &FromRunner::Started);
    }

    fn wants_checkpoint(&self) -> bool {
        if !self.offered.swap(true, Ordering::Relaxed) {
            let _ = send(&self.events, &FromRunner::UsesCheckpoints);
        }
        if self
            .checkpoint_now
            .is_some_and(|flag| flag.swap(false, Ordering::Relaxed))
        {
            return true;
        }
        !self.every.is_zero() && lock(&self.last_checkpoint).elapsed() >= self.every
    }

    fn checkpoint(&self, checkpoint: Checkpoint) {
        *lock(&self.last_checkpoint) = Instant::now();
        // A daemon that stopped listening will kill this process; until
        // then the task goes on.
        let _ = send(
            &self.events,
            &FromRunner::Checkpoint {
                state: checkpoint.state,
                fuel_used: checkpoint.fuel_used,
            },
        );
    }

    fn progress(&self, fraction: f64) {
        let mut last = lock(&self.last_progress);
        if last.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let _ = send(&self.events, &FromRunner::Progress(fraction));
    }
}
