//! A task runner process's view of itself, and its parent's hold on it: the
//! lowest CPU and I/O priority (Linux, macOS, Windows), death with its
//! parent and tight resource limits (Linux; elsewhere an error that says
//! so), pausing and ending it (signals on Unix, their equivalents on
//! Windows). These are the crate's only `unsafe` blocks: single system
//! calls on plain integers, handles and a zeroed struct.

use std::io;

/// Runs the calling process (its threads started from now on) at the
/// lowest priority there is: on Linux `SCHED_IDLE` (only on otherwise idle
/// CPU; nice 19 where the kernel refuses it) and the idle I/O class, on
/// macOS the background state, on Windows the idle class. Call it before
/// starting threads: a policy is per thread and inherited at creation.
/// Returns the policy in force, to log.
pub fn lowest_priority() -> io::Result<&'static str> {
    #[cfg(target_os = "linux")]
    {
        // IOPRIO_CLASS_IDLE (3) in the class bits (from 13), for this
        // process (IOPRIO_WHO_PROCESS = 1, pid 0 = self).
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_IDLE: libc::c_long = 3 << 13;
        #[allow(unsafe_code)]
        // SAFETY: ioprio_set takes three integers and touches no memory.
        let io_ok =
            unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_IDLE) } == 0;
        let param = libc::sched_param { sched_priority: 0 };
        #[allow(unsafe_code)]
        // SAFETY: `param` is a valid sched_param that outlives the call.
        let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
        if idle {
            return Ok(if io_ok {
                "SCHED_IDLE, idle I/O"
            } else {
                "SCHED_IDLE"
            });
        }
        #[allow(unsafe_code)]
        // SAFETY: setpriority takes integers only.
        let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0;
        if niced {
            return Ok("nice 19");
        }
        Err(io::Error::last_os_error())
    }
    #[cfg(target_os = "macos")]
    {
        // The background state (Darwin's PRIO_DARWIN_BG): the lowest CPU
        // priority and throttled I/O for the whole process, what Time
        // Machine and Spotlight run at; nice 19 where it is refused.
        #[allow(unsafe_code)]
        // SAFETY: setpriority takes integers only.
        let background =
            unsafe { libc::setpriority(libc::PRIO_DARWIN_PROCESS, 0, libc::PRIO_DARWIN_BG) } == 0;
        if background {
            return Ok("background (PRIO_DARWIN_BG)");
        }
        #[allow(unsafe_code)]
        // SAFETY: setpriority takes integers only.
        let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0;
        if niced {
            return Ok("nice 19");
        }
        Err(io::Error::last_os_error())
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::Threading::{
            GetCurrentProcess, IDLE_PRIORITY_CLASS, PROCESS_MODE_BACKGROUND_BEGIN, SetPriorityClass,
        };
        // The idle class (only on otherwise idle CPU), then background
        // mode, which also lowers I/O and memory priority.
        #[allow(unsafe_code)]
        // SAFETY: the pseudo handle of the current process needs no closing.
        let idle = unsafe { SetPriorityClass(GetCurrentProcess(), IDLE_PRIORITY_CLASS) } != 0;
        if !idle {
            return Err(io::Error::last_os_error());
        }
        #[allow(unsafe_code)]
        // SAFETY: as above.
        let background =
            unsafe { SetPriorityClass(GetCurrentProcess(), PROCESS_MODE_BACKGROUND_BEGIN) } != 0;
        Ok(if background {
            "IDLE_PRIORITY_CLASS, background mode"
        } else {
            "IDLE_PRIORITY_CLASS"
        })
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "priorities are set on Linux, macOS and Windows only",
    ))
}

/// Has the kernel kill this process when the thread that started it exits
/// (`PR_SET_PDEATHSIG`), and exits at once if `parent` (the starter's pid,
/// passed by it) is already gone, which the signal would not catch.
///
/// The signal follows the starting *thread*: a process that starts
/// runners must do so from a thread that lives as long as they should.
pub fn die_with_parent(parent: Option<u32>) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        #[allow(unsafe_code)]
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(parent) = parent
            && std::os::unix::process::parent_id() != parent
        {
            std::process::exit(70);
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = parent;
        Err(io::Error::new(io::ErrorKind::Unsupported, "only on Linux"))
    }
}

/// Sets the soft and hard limit of `resource` (a `libc::RLIMIT_*`) to
/// `value`; never raises one.
#[cfg(target_os = "linux")]
pub fn limit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: `current` is a valid rlimit the call writes into.
    if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let value = value.min(current.rlim_max);
    let new = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    #[allow(unsafe_code)]
    // SAFETY: `new` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(resource, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The soft and hard limits on `resource` in force.
#[cfg(target_os = "linux")]
pub fn limits_of(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: `current` is a valid rlimit the call writes into.
    if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((current.rlim_cur, current.rlim_max))
}

/// Sets the soft limit on `resource` to `value` (at most the hard limit,
/// which stays): a limit that can follow each task, under a hard limit
/// set once.
#[cfg(target_os = "linux")]
pub fn limit_soft(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: `current` is a valid rlimit the call writes into.
    if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let new = libc::rlimit {
        rlim_cur: value.min(current.rlim_max),
        rlim_max: current.rlim_max,
    };
    #[allow(unsafe_code)]
    // SAFETY: `new` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(resource, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The scheduling policy of process `pid` as `/proc/PID/stat` gives it
/// (field 41: 0 normal, 3 batch, 5 idle), and its nice value (field 19).
pub fn policy_and_nice(pid: u32) -> io::Result<(u32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc stat");
    // `rest` starts at field 3.
    let nice = fields
        .get(19 - 3)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    let policy = fields
        .get(41 - 3)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    Ok((policy, nice))
}

/// What [`signal`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Pause the process (SIGSTOP): it cannot ignore it.
    Stop,
    /// Let it run again (SIGCONT).
    Continue,
    /// End it at once (SIGKILL).
    Kill,
    /// A runner: checkpoint at the next offer (SIGUSR1).
    CheckpointNow,
}

/// Sends `sig` to process `pid` (a child the caller started and has not
/// reaped, so the pid is still its own).
#[cfg(unix)]
pub fn signal(pid: u32, sig: Signal) -> io::Result<()> {
    // 0 and negative pids name process groups: never the caller's own.
    if pid == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "pid 0"));
    }
    let number = match sig {
        Signal::Stop => libc::SIGSTOP,
        Signal::Continue => libc::SIGCONT,
        Signal::Kill => libc::SIGKILL,
        Signal::CheckpointNow => libc::SIGUSR1,
    };
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    #[allow(unsafe_code)]
    // SAFETY: kill takes integers only.
    if unsafe { libc::kill(pid, number) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it (this number).
    Signalled(i32),
}

/// Sends `sig` to process `pid` (a child the caller started and has not
/// reaped). Windows has no signals: a stop suspends every thread of the
/// process (`NtSuspendProcess`, what Task Manager and Process Explorer
/// use), a continue resumes them, a kill terminates it; a runner's
/// checkpoint request has no equivalent and is refused.
#[cfg(windows)]
pub fn signal(pid: u32, sig: Signal) -> io::Result<()> {
    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, PROCESS_SUSPEND_RESUME, PROCESS_TERMINATE, TerminateProcess,
    };
    #[link(name = "ntdll")]
    #[allow(unsafe_code)]
    unsafe extern "system" {
        fn NtSuspendProcess(process: HANDLE) -> i32;
        fn NtResumeProcess(process: HANDLE) -> i32;
    }
    if pid == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "pid 0"));
    }
    let access = match sig {
        Signal::Stop | Signal::Continue => PROCESS_SUSPEND_RESUME,
        Signal::Kill => PROCESS_TERMINATE,
        Signal::CheckpointNow => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no checkpoint request on Windows",
            ));
        }
    };
    #[allow(unsafe_code)]
    // SAFETY: OpenProcess takes integers and returns a handle or null.
    let process = unsafe { OpenProcess(access, 0, pid) };
    if process.is_null() {
        return Err(io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: `process` is a handle we opened with the right access and
    // close below; the calls take nothing else.
    let ok = unsafe {
        match sig {
            Signal::Stop => NtSuspendProcess(process) >= 0,
            Signal::Continue => NtResumeProcess(process) >= 0,
            _ => TerminateProcess(process, 137) != 0,
        }
    };
    let error = io::Error::last_os_error();
    #[allow(unsafe_code)]
    // SAFETY: closes the handle opened above, once.
    unsafe {
        CloseHandle(process)
    };
    if ok { Ok(()) } else { Err(error) }
}

/// The whole machine's CPU time since boot, summed over its cores, in
/// 100 ns ticks: `(busy, total)` (`GetSystemTimes`; kernel time includes
/// idle time). Two readings' differences give the share in use, without
/// the performance-counter library that sysinfo reads it with.
#[cfg(windows)]
pub fn machine_cpu_ticks() -> io::Result<(u64, u64)> {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::GetSystemTimes;
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut idle, mut kernel, mut user) = (zero, zero, zero);
    #[allow(unsafe_code)]
    // SAFETY: three valid FILETIMEs the call writes into.
    if unsafe { GetSystemTimes(&mut idle, &mut kernel, &mut user) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let ticks = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    let total = ticks(kernel).saturating_add(ticks(user));
    Ok((total.saturating_sub(ticks(idle)), total))
}

/// Waits for child `pid` to end and says how, *without reaping it*: its
/// pid stays its own (a zombie) until the caller reaps it, so signals sent
/// meanwhile by another thread cannot reach a process that reused the pid.
#[cfg(target_os = "linux")]
pub fn wait_unreaped(pid: u32) -> io::Result<Ended> {
    let id = libc::id_t::from(pid);
    #[allow(unsafe_code)]
    // SAFETY: siginfo_t is plain old data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        #[allow(unsafe_code)]
        // SAFETY: `info` is a valid siginfo_t the call writes into.
        let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    #[allow(unsafe_code)]
    // SAFETY: waitid filled `info` for a child that ended (WEXITED), for
    // which si_status is the field the kernel set.
    let status = unsafe { info.si_status() };
    Ok(match info.si_code {
        libc::CLD_EXITED => Ended::Exited(status),
        _ => Ended::Signalled(status),
    })
}

/// Set by SIGUSR1 once [`checkpoint_requests`] installed its handler.
#[cfg(unix)]
static CHECKPOINT_REQUESTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_sigusr1(_: libc::c_int) {
    // An atomic store is async-signal-safe.
    CHECKPOINT_REQUESTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Makes SIGUSR1 set a flag instead of ending the process, and returns the
/// flag: a runner's "checkpoint now" request from the worker.
#[cfg(unix)]
pub fn checkpoint_requests() -> io::Result<&'static std::sync::atomic::AtomicBool> {
    let handler = on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
    #[allow(unsafe_code)]
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; SIGUSR1 has no other user in the process.
    if unsafe { libc::signal(libc::SIGUSR1, handler) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(&CHECKPOINT_REQUESTED)
}
