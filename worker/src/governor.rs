//! The resource governor: decides when the grid may compute and how hard,
//! from the volunteer's preferences and what the machine is doing.
//!
//! [`ResourceGovernor`] is sans-IO: it takes a [`Sample`] and the time and
//! returns whether to suspend, and why ([`Suspension`]). [`DutyCycle`] is
//! the CPU-time arithmetic a running task is paced by. [`Monitor`] is the
//! thin shell that reads the machine (sysinfo for CPU and memory,
//! starship-battery for the power source) once a second.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};
use sysinfo::{
    CpuRefreshKind, MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, RefreshKind,
    System,
};

use crate::prefs::{Preferences, TimeWindow, in_windows};

/// Above the threshold this long (two one-second samples) before suspending.
pub const SUSPEND_AFTER: Duration = Duration::from_secs(1);
/// Below the threshold this long before resuming, so a bursty program does
/// not make the grid flap.
pub const RESUME_AFTER: Duration = Duration::from_secs(3);
/// Non-grid CPU use at or above which the machine counts as in use (for the
/// in-use memory cap).
pub const IN_USE_PERCENT: f32 = 10.0;
/// The duty cycle's period: a task at 50 % runs about half a second, then
/// sleeps about half a second.
pub const DUTY_PERIOD: Duration = Duration::from_secs(1);

/// Why computing is suspended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Suspension {
    /// `peergrid-worker pause`.
    UserRequest,
    /// The machine runs on battery and `run_on_battery` is off.
    OnBattery,
    /// Outside every daily time window.
    OutsideTimeWindows,
    /// Other programs use more CPU than `suspend_cpu_percent`.
    MachineBusy { non_grid_cpu_percent: f32 },
}

impl std::fmt::Display for Suspension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Suspension::UserRequest => {
                write!(f, "paused by the volunteer (peergrid-worker resume)")
            }
            Suspension::OnBattery => write!(f, "the computer runs on battery"),
            Suspension::OutsideTimeWindows => write!(f, "outside the allowed time windows"),
            Suspension::MachineBusy {
                non_grid_cpu_percent,
            } => write!(
                f,
                "other programs use {non_grid_cpu_percent:.0} % of the CPU"
            ),
        }
    }
}

/// One reading of the machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// CPU use of everything but this worker, as a share of the whole
    /// machine (0 to 100).
    pub non_grid_cpu_percent: f32,
    pub on_battery: bool,
    /// Local time of day.
    pub local_time: NaiveTime,
}

/// Decides, sample by sample, whether the grid computes.
#[derive(Debug)]
pub struct ResourceGovernor {
    suspend_cpu_percent: f32,
    run_on_battery: bool,
    windows: Vec<TimeWindow>,
    memory_in_use_percent: u8,
    memory_idle_percent: u8,
    /// Since when the non-grid load has been above the threshold.
    busy_since: Option<Instant>,
    /// Since when it has been below, while suspended for it.
    calm_since: Option<Instant>,
    /// Suspended for a busy machine (the hysteresis state).
    busy: bool,
    /// The last sample's non-grid CPU use.
    last_cpu: f32,
}

impl ResourceGovernor {
    pub fn new(prefs: &Preferences) -> ResourceGovernor {
        ResourceGovernor {
            suspend_cpu_percent: prefs.suspend_cpu_percent as f32,
            run_on_battery: prefs.run_on_battery,
            windows: prefs.time_windows.clone(),
            memory_in_use_percent: prefs.memory_in_use_percent,
            memory_idle_percent: prefs.memory_idle_percent,
            busy_since: None,
            calm_since: None,
            busy: false,
            last_cpu: 0.0,
        }
    }

    /// Takes the volunteer's changed preferences, keeping what it has
    /// measured (how long the machine has been busy or calm).
    pub fn set_preferences(&mut self, prefs: &Preferences) {
        self.suspend_cpu_percent = prefs.suspend_cpu_percent as f32;
        self.run_on_battery = prefs.run_on_battery;
        self.windows = prefs.time_windows.clone();
        self.memory_in_use_percent = prefs.memory_in_use_percent;
        self.memory_idle_percent = prefs.memory_idle_percent;
    }

    /// Takes a sample; returns why to suspend, or `None` to compute.
    /// `user_paused` is the volunteer's `pause`, which wins over all.
    pub fn update(
        &mut self,
        sample: Sample,
        user_paused: bool,
        now: Instant,
    ) -> Option<Suspension> {
        self.last_cpu = sample.non_grid_cpu_percent;
        // 100 % means "never suspend for load".
        let above = self.suspend_cpu_percent < 100.0
            && sample.non_grid_cpu_percent > self.suspend_cpu_percent;
        if above {
            self.calm_since = None;
            let since = *self.busy_since.get_or_insert(now);
            if now.duration_since(since) >= SUSPEND_AFTER {
                self.busy = true;
            }
        } else {
            self.busy_since = None;
            if self.busy {
                let since = *self.calm_since.get_or_insert(now);
                if now.duration_since(since) >= RESUME_AFTER {
                    self.busy = false;
                    self.calm_since = None;
                }
            }
        }
        if user_paused {
            Some(Suspension::UserRequest)
        } else if sample.on_battery && !self.run_on_battery {
            Some(Suspension::OnBattery)
        } else if !in_windows(&self.windows, sample.local_time) {
            Some(Suspension::OutsideTimeWindows)
        } else if self.busy {
            Some(Suspension::MachineBusy {
                non_grid_cpu_percent: sample.non_grid_cpu_percent,
            })
        } else {
            None
        }
    }

    /// Bytes of RAM the grid's tasks may reserve together on a machine with
    /// `total_memory` bytes: the in-use share while other programs are
    /// busy, the idle share otherwise.
    pub fn memory_budget(&self, total_memory: u64) -> u64 {
        let percent = if self.last_cpu >= IN_USE_PERCENT {
            self.memory_in_use_percent
        } else {
            self.memory_idle_percent
        };
        (total_memory as u128 * percent as u128 / 100) as u64
    }
}

/// The CPU-time limit as arithmetic: how long to pause after running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DutyCycle {
    /// Share of time a task runs, 1 to 100.
    pub percent: u8,
}

impl DutyCycle {
    /// After a task ran `ran` since its last pause: how long to pause now,
    /// or `None` to keep running. It runs its share of [`DUTY_PERIOD`],
    /// then pauses so that running time over running-plus-paused time is
    /// `percent` %, making up for overshooting the share (the check comes
    /// once per epoch tick, not exactly on time).
    pub fn pause_after(&self, ran: Duration) -> Option<Duration> {
        let percent = self.percent.clamp(1, 100) as u32;
        if percent == 100 {
            return None;
        }
        let quota = DUTY_PERIOD * percent / 100;
        (ran >= quota).then(|| ran * (100 - percent) / percent)
    }
}

/// CPU use of programs other than the grid, as a share of the whole
/// machine (0 to 100): the machine's `total` use less `grid`, the use of
/// each grid process (`peergrid-worker`s, this one and any other on the
/// machine) in % of one core, over `cores` cores. Other workers are the
/// grid too: counting them as other programs would make several workers on
/// one machine suspend each other.
pub fn non_grid_percent(total: f32, grid: &[f32], cores: usize) -> f32 {
    let grid: f32 = grid.iter().sum::<f32>() / cores.max(1) as f32;
    (total - grid).clamp(0.0, 100.0)
}

/// One entry of the process list: pid, parent pid, name, and whether it
/// is a thread (sysinfo lists a process's threads too, each with the
/// process as its parent; a process's CPU use already includes theirs).
pub type Listed<'a> = (u32, Option<u32>, &'a std::ffi::OsStr, bool);

/// The grid's processes among `processes`: this worker (`me`), every
/// process of its `name` (other workers), and their child processes (task
/// runners, directly or through a wrapper that execs them, such as `env`
/// or qemu-user), never threads. A runner computing flat out must not look
/// like another program to the worker that paces it.
pub fn grid_pids(
    processes: &[Listed<'_>],
    me: Option<u32>,
    name: Option<&std::ffi::OsStr>,
) -> HashSet<u32> {
    let processes = || processes.iter().filter(|(_, _, _, thread)| !thread);
    let workers: HashSet<u32> = processes()
        .filter(|(pid, _, n, _)| Some(*pid) == me || Some(*n) == name)
        .map(|(pid, _, _, _)| *pid)
        .collect();
    let children = processes()
        .filter(|(_, parent, _, _)| parent.is_some_and(|p| workers.contains(&p)))
        .map(|(pid, _, _, _)| *pid);
    children.chain(workers.iter().copied()).collect()
}

/// The share of CPU time that was busy between two readings of a
/// machine's `(busy, total)` CPU time counters, in % (0 when no time
/// passed or the counters went back).
pub fn busy_percent(before: (u64, u64), now: (u64, u64)) -> f32 {
    let total = now.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    let busy = now.0.saturating_sub(before.0).min(total);
    (busy as f64 * 100.0 / total as f64) as f32
}

/// Each grid process's CPU use since the last sample, in % of one core,
/// from its CPU time (`cpu_ms`, accumulated since it started) now and at
/// the last sample (`before`, `elapsed_ms` ago). A process not seen then
/// started since, so all its CPU time is in the interval: a task runner
/// computing from its first moment is the grid's at once, not another
/// program's for one sample (sysinfo gives a process its first CPU share
/// only on its second sighting). A pid whose time went backwards is a new
/// process under a reused pid. No process is given more than `cores`
/// cores: a process missed by one sample, or a very short interval
/// against the kernel's 10 ms ticks, must not hide other programs' load.
pub fn grid_cpu_percent(
    before: &HashMap<u32, u64>,
    cpu_ms: &HashMap<u32, u64>,
    elapsed_ms: u64,
    cores: usize,
) -> HashMap<u32, f32> {
    let most = 100.0 * cores.max(1) as f32;
    cpu_ms
        .iter()
        .map(|(pid, &now)| {
            let then = before.get(pid).copied().filter(|&t| t <= now).unwrap_or(0);
            let share = (now - then) as f32 * 100.0 / elapsed_ms.max(1) as f32;
            (*pid, share.min(most))
        })
        .collect()
}

/// Reads the machine: CPU use (whole machine and the grid's processes),
/// memory, power source.
pub struct Monitor {
    /// The grid processes' CPU time (ms) at the last sample, and when.
    grid_cpu: HashMap<u32, u64>,
    sampled: Option<Instant>,
    /// Each grid process's share found by the last sample (% of a core).
    grid_percent: HashMap<u32, f32>,
    sys: Option<System>,
    pid: Option<Pid>,
    /// This process's name: processes of the same name are the grid too.
    name: Option<std::ffi::OsString>,
    cores: usize,
    battery: Option<starship_battery::Manager>,
    /// Windows: the machine's CPU ticks (busy, total) at the last sample.
    #[cfg(windows)]
    machine_ticks: Option<(u64, u64)>,
}

impl Monitor {
    pub fn new() -> Monitor {
        // On Windows sysinfo reads CPU use from the performance-counter
        // library (PDH), which may need reloading and is missing from Wine;
        // the machine's use is read from its CPU times there instead.
        let cpu = if cfg!(windows) {
            CpuRefreshKind::nothing()
        } else {
            CpuRefreshKind::nothing().with_usage()
        };
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(cpu)
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        )
        .map_err(|e| tracing::warn!("cannot read CPU use; never suspending for load: {e}"))
        .ok();
        let cores = sys.as_ref().map_or(1, |s| s.cpus().len().max(1));
        let battery = starship_battery::Manager::new()
            .map_err(|e| tracing::info!("cannot read the battery state; assuming mains power: {e}"))
            .ok();
        Monitor {
            grid_cpu: HashMap::new(),
            sampled: None,
            grid_percent: HashMap::new(),
            sys,
            pid: sysinfo::get_current_pid().ok(),
            name: None,
            cores,
            battery,
            #[cfg(windows)]
            machine_ticks: None,
        }
    }

    /// The whole machine's CPU use since the last call, in % of all cores.
    #[cfg(not(windows))]
    fn machine_cpu_percent(&mut self) -> f32 {
        self.sys.as_mut().map_or(0.0, |sys| {
            sys.refresh_cpu_usage();
            sys.global_cpu_usage()
        })
    }

    /// The whole machine's CPU use since the last call, in % of all cores.
    #[cfg(windows)]
    fn machine_cpu_percent(&mut self) -> f32 {
        let Ok((busy, total)) = peergrid_os::process::machine_cpu_ticks() else {
            return 0.0;
        };
        let percent = self
            .machine_ticks
            .map_or(0.0, |before| busy_percent(before, (busy, total)));
        self.machine_ticks = Some((busy, total));
        percent
    }

    /// CPU use of everything but the grid (this process, other processes
    /// of the same name, i.e. other workers, and their runners) since the last
    /// call, as a share of the whole machine ([`non_grid_percent`]).
    pub fn non_grid_cpu_percent(&mut self) -> f32 {
        if self.sys.is_none() {
            return 0.0;
        }
        let total = self.machine_cpu_percent();
        let now = Instant::now();
        let grid_pids = self.grid_processes();
        let Some(sys) = &self.sys else {
            return 0.0;
        };
        let cpu_ms: HashMap<u32, u64> = sys
            .processes()
            .iter()
            .filter(|(pid, _)| grid_pids.contains(&pid.as_u32()))
            .map(|(pid, p)| (pid.as_u32(), p.accumulated_cpu_time()))
            .collect();
        self.grid_percent = match self.sampled {
            Some(then) => grid_cpu_percent(
                &self.grid_cpu,
                &cpu_ms,
                now.duration_since(then).as_millis() as u64,
                self.cores,
            ),
            // The first sample: nothing to count from (as before, when
            // sysinfo gave every process 0 on its first sighting).
            None => HashMap::new(),
        };
        self.grid_cpu = cpu_ms;
        self.sampled = Some(now);
        let grid: Vec<f32> = self.grid_percent.values().copied().collect();
        non_grid_percent(total, &grid, self.cores)
    }

    /// Refreshes the process list and returns the grid's processes
    /// ([`grid_pids`]).
    pub(crate) fn grid_processes(&mut self) -> HashSet<u32> {
        let Some(sys) = &mut self.sys else {
            return HashSet::new();
        };
        sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().with_cpu(),
        );
        if self.name.is_none() {
            self.name = self
                .pid
                .and_then(|pid| sys.process(pid))
                .map(|p| p.name().to_os_string());
        }
        // A process's threads, as sysinfo lists them (its `tasks`; a
        // process's main thread shares its pid, and is the process).
        let threads: HashSet<Pid> = sys
            .processes()
            .iter()
            .flat_map(|(pid, p)| {
                p.tasks()
                    .into_iter()
                    .flatten()
                    .filter(move |t| *t != pid)
                    .copied()
            })
            .collect();
        let listed: Vec<Listed<'_>> = sys
            .processes()
            .iter()
            .map(|(pid, p)| {
                (
                    pid.as_u32(),
                    p.parent().map(Pid::as_u32),
                    p.name(),
                    threads.contains(pid),
                )
            })
            .collect();
        grid_pids(&listed, self.pid.map(Pid::as_u32), self.name.as_deref())
    }

    /// Total RAM in bytes.
    pub fn total_memory(&mut self) -> u64 {
        match &mut self.sys {
            Some(sys) => {
                sys.refresh_memory();
                sys.total_memory()
            }
            None => 0,
        }
    }

    /// Whether a battery is discharging (no battery, or unreadable: no).
    pub fn on_battery(&self) -> bool {
        let Some(manager) = &self.battery else {
            return false;
        };
        match manager.batteries() {
            Ok(batteries) => batteries
                .flatten()
                .any(|b| b.state() == starship_battery::State::Discharging),
            Err(_) => false,
        }
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor::new()
    }
}

#[cfg(test)]
mod tests;
