//! The starting side of a task runner process (`peergrid-runner`, this
//! crate's binary): [`Runner`] starts one, hands it tasks one at a time and
//! reads back its events, and kills it. A runner that dies mid-task costs
//! that task, which ends with [`RunnerError::Died`] saying how; the caller
//! starts a fresh runner.
//!
//! The runner dies with the *thread* that started it (`PR_SET_PDEATHSIG`
//! on Linux): start runners from a thread that lives as long as they
//! should, never from a pool thread that may exit when idle.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

mod pool;
mod stderr;

pub use pool::{BoundedError, Pool};

use peergrid_proto::Hash;
use peergrid_proto::codec;
use peergrid_proto::runner::{
    FromRunner, RUNNER_PROTOCOL, RunTask, RunnerReport, ToRunner, frame, frame_len,
};

/// How long a starting runner may take to say `Ready` (under an emulator
/// it builds its engines slowly).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a runner could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot start the task runner {program}: {source}")]
    Start { program: String, source: io::Error },
    #[error(
        "the task runner speaks protocol {0}, this worker {RUNNER_PROTOCOL}; reinstall peergrid"
    )]
    Protocol(u32),
    #[error("the task runner died ({0}); the task is lost")]
    Died(String),
    #[error("the task runner sent something unreadable: {0}")]
    Garbled(String),
    #[error("the task is too large to send to a runner: {0}")]
    TooLarge(String),
}

/// How to start a runner: its program, and what runs it (an emulator such
/// as `qemu-aarch64` for another architecture; empty to start it directly).
#[derive(Clone, Debug)]
pub struct RunnerCommand {
    pub program: PathBuf,
    pub prefix: Vec<OsString>,
    /// Compiled modules kept across runner processes.
    pub cache: Option<PathBuf>,
}

impl RunnerCommand {
    /// `peergrid-runner` beside the current executable.
    pub fn beside_current_exe() -> io::Result<RunnerCommand> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().unwrap_or(Path::new("."));
        Ok(RunnerCommand {
            program: dir.join(format!("peergrid-runner{}", std::env::consts::EXE_SUFFIX)),
            prefix: Vec::new(),
            cache: None,
        })
    }
}

/// A running runner process, ready for a task.
pub struct Runner {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The CPU architecture its code runs on (from its `Ready`).
    arch: String,
    /// Modules sent to it so far (it may have dropped some; it then asks).
    sent: HashSet<Hash>,
}

impl Runner {
    /// Starts a runner and waits for its `Ready`.
    pub fn start(command: &RunnerCommand) -> Result<Runner, RunnerError> {
        let (program, args) = match command.prefix.split_first() {
            Some((first, rest)) => {
                let mut args = rest.to_vec();
                args.push(command.program.clone().into_os_string());
                (PathBuf::from(first), args)
            }
            None => (command.program.clone(), Vec::new()),
        };
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .env("PEERGRID_RUNNER_PARENT", std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cache) = &command.cache {
            cmd.arg("--cache").arg(cache);
        }
        let mut child = cmd.spawn().map_err(|source| RunnerError::Start {
            program: program.display().to_string(),
            source,
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunnerError::Died("no pipes".into()));
        };
        // Its stderr reaches the worker's cleaned and bounded (a runner
        // whose sandbox was escaped must not type into a terminal).
        if let Err(source) = stderr::spawn(child.id(), stderr) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunnerError::Start {
                program: program.display().to_string(),
                source,
            });
        }
        let mut runner = Runner {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            arch: String::new(),
            sent: HashSet::new(),
        };
        // A runner that never says Ready (a wrong wrapper, a hung start) is
        // killed, so a task start cannot hang the worker. The watchdog is
        // joined before anything can reap the runner: it never signals a
        // pid that another process may have taken.
        let pid = runner.pid();
        let (cancel, cancelled) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::Builder::new()
            .name("peergrid-runner-watchdog".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    cancelled.recv_timeout(READY_TIMEOUT)
                {
                    let _ = peergrid_os::process::signal(pid, peergrid_os::process::Signal::Kill);
                }
            })
            .map_err(|source| RunnerError::Start {
                program: program.display().to_string(),
                source,
            })?;
        let ready = runner.next_event();
        drop(cancel);
        let _ = watchdog.join();
        match ready? {
            FromRunner::Ready { protocol, arch } if protocol == RUNNER_PROTOCOL => {
                runner.arch = arch;
                Ok(runner)
            }
            FromRunner::Ready { protocol, .. } => Err(RunnerError::Protocol(protocol)),
            other => Err(RunnerError::Garbled(format!("{other:?} before Ready"))),
        }
    }

    /// The runner's process id (to pause it with SIGSTOP, or kill it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPU architecture the runner's code runs on.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Runs `task` (whose `module_bytes` is ignored: `module_bytes` is
    /// sent when the runner may lack it; the task is moved, not copied,
    /// into its frame), handing every checkpoint and
    /// progress event to `on_event`, and returns the report.
    pub fn run(
        &mut self,
        task: RunTask,
        module_bytes: &[u8],
        mut on_event: impl FnMut(FromRunner),
    ) -> Result<RunnerReport, RunnerError> {
        let module = task.module;
        let mut with_bytes = !self.sent.contains(&module);
        let mut request = ToRunner::Run(Box::new(task));
        loop {
            let ToRunner::Run(task) = &mut request;
            task.module_bytes = with_bytes.then(|| module_bytes.to_vec());
            let bytes = frame(&request).map_err(|e| RunnerError::TooLarge(e.to_string()))?;
            if let Err(e) = self
                .stdin
                .write_all(&bytes)
                .and_then(|()| self.stdin.flush())
            {
                return Err(self.died(e));
            }
            if with_bytes {
                self.sent.insert(module);
            }
            loop {
                match self.next_event()? {
                    FromRunner::Done(report) => return Ok(report),
                    FromRunner::NeedModule if !with_bytes => {
                        with_bytes = true;
                        break;
                    }
                    event @ (FromRunner::Checkpoint { .. }
                    | FromRunner::Progress(_)
                    | FromRunner::Started
                    | FromRunner::UsesCheckpoints) => on_event(event),
                    other => return Err(RunnerError::Garbled(format!("{other:?} during a task"))),
                }
            }
        }
    }

    /// Kills the runner at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the runner is still running (one that ended while idle is
    /// reaped here).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn next_event(&mut self) -> Result<FromRunner, RunnerError> {
        let mut header = [0u8; 4];
        if let Err(e) = self.stdout.read_exact(&mut header) {
            return Err(self.died(e));
        }
        let len = frame_len(header).map_err(|e| RunnerError::Garbled(e.to_string()))?;
        let mut body = vec![0; len];
        if let Err(e) = self.stdout.read_exact(&mut body) {
            return Err(self.died(e));
        }
        codec::decode(&body).map_err(|e| RunnerError::Garbled(e.to_string()))
    }

    /// The pipe broke: the runner is gone or going. Says how it ended
    /// *without reaping it*: until [`Runner::kill`] or drop reaps it, its
    /// pid stays its own, so another thread pacing it with signals cannot
    /// reach a process that took the pid over.
    fn died(&mut self, e: io::Error) -> RunnerError {
        // Make sure it is gone (it may only have closed its stdout).
        let _ = peergrid_os::process::signal(self.pid(), peergrid_os::process::Signal::Kill);
        #[cfg(target_os = "linux")]
        match peergrid_os::process::wait_unreaped(self.pid()) {
            Ok(ended) => RunnerError::Died(describe_end(ended)),
            Err(_) => RunnerError::Died(e.to_string()),
        }
        #[cfg(not(target_os = "linux"))]
        RunnerError::Died(e.to_string())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a runner process ended, for the task's error message.
#[cfg(target_os = "linux")]
fn describe_end(ended: peergrid_os::process::Ended) -> String {
    match ended {
        peergrid_os::process::Ended::Exited(code) => format!("exit status {code}"),
        peergrid_os::process::Ended::Signalled(signal) => {
            let name = match signal {
                6 => "SIGABRT: the runner aborted",
                9 => "SIGKILL: killed, perhaps for using too much memory",
                11 => "SIGSEGV: the runner crashed",
                31 => "SIGSYS: a forbidden system call",
                _ => "a signal",
            };
            format!("signal {signal}, {name}")
        }
    }
}
