//! `peergrid-worker`: the volunteer's daemon and its controls.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use peergrid_proto::JoinString;
use peergrid_worker::control::{self, ControlRequest};
use peergrid_worker::daemon::{FatalStop, PrefsSource, Worker, WorkerConfig};
use peergrid_worker::display::{LogAboveBars, MultiProgress};
use peergrid_worker::identity;
use peergrid_worker::install::{self, Install};
use peergrid_worker::prefs::{Overrides, Preferences};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Parser)]
#[command(
    name = "peergrid-worker",
    version,
    about = "Donate spare CPU to a peergrid project"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a project and compute in the foreground until interrupted
    /// (SIGTERM or Ctrl-C checkpoint the running tasks and exit).
    Run {
        /// Folder for this host's key, state and caches (one folder per host);
        /// under systemd, the unit's state folder (`STATE_DIRECTORY`).
        #[arg(long, env = "STATE_DIRECTORY")]
        data: PathBuf,
        /// The project's join string: peergrid://HOST:PORT#sha256:...
        #[arg(long, env = "PEERGRID_JOIN")]
        join: String,
        #[command(flatten)]
        prefs: Overrides,
        /// Never draw progress bars, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Fetch no work: finish the held tasks, report them, then exit.
        #[arg(long)]
        no_more_work: bool,
        /// Testing aid: misbehave on purpose to exercise validation. Only
        /// in builds with the `simulate-fault` feature, which the
        /// end-to-end tests use: the volunteer's binary has no cheat modes.
        #[cfg(feature = "simulate-fault")]
        #[arg(long, value_enum, hide = true)]
        simulate_fault: Option<FaultArg>,
        /// Local IP address to connect from (default: the system's choice),
        /// for a host with several networks.
        #[arg(long, env = "PEERGRID_BIND")]
        bind: Option<std::net::IpAddr>,
        /// Run each task in a `peergrid-runner` process (idle priority,
        /// confined, paused and stopped by signals, no deadline checks in
        /// the generated code): the default on Linux.
        #[arg(long)]
        task_processes: bool,
        /// Run each task in a thread of the worker instead (the default
        /// where task processes are not built yet: outside Linux).
        #[arg(long, conflicts_with_all = ["task_processes", "runner", "runner_wrapper"])]
        in_process: bool,
        /// The runner program for task processes (default:
        /// peergrid-runner beside this executable).
        #[arg(long, value_name = "PATH")]
        runner: Option<PathBuf>,
        /// A command the runner runs under, split at spaces (an emulator
        /// for another architecture, e.g. "qemu-aarch64 -L
        /// /usr/aarch64-linux-gnu").
        #[arg(long, value_name = "COMMAND")]
        runner_wrapper: Option<String>,
    },
    /// Print the preferences in effect (file, then flags), as TOML; or
    /// change one in the file (`config set KEY VALUE`, `config unset
    /// KEY`), which a running worker applies at once.
    Config {
        #[command(subcommand)]
        change: Option<ConfigChange>,
        #[command(flatten)]
        prefs: Overrides,
        /// Print the preferences as JSON (with the file they came from).
        #[arg(long)]
        json: bool,
    },
    /// Show what the running worker is doing.
    Status {
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Suspend computing on the running worker until `resume` (or for a
    /// while with --for).
    Pause {
        #[arg(long)]
        data: Option<PathBuf>,
        /// Resume by itself after this long (90s, 15m, 2h, 1h30m), also
        /// across a restart.
        #[arg(long = "for", value_name = "DURATION", value_parser = control::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Resume computing after `pause`.
    Resume {
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Show the worker's recent events (joined, fetched, finished,
    /// suspended and why, given back, errors), oldest first; also when it
    /// is not running.
    Log {
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print the events as JSON lines.
        #[arg(long)]
        json: bool,
        /// How many of the newest events to show.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// Stop a task (running or held; its unit as `status` shows it) and
    /// give it back to the coordinator, which hands it to another host.
    Abort {
        /// The task's unit number, as `status` shows it.
        unit: u64,
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Finish the held tasks and report them, fetch no more, then exit.
    NoMoreWork {
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Leave the project: give back every held task, report finished
    /// results, then forget the project (its key and this host's state),
    /// so the data folder may join another. The worker exits.
    Detach {
        #[arg(long)]
        data: Option<PathBuf>,
        /// Wait at most this many seconds for the worker to finish.
        #[arg(long, default_value_t = 120)]
        wait_secs: u64,
    },
    /// Install the worker as a service that starts at boot (a systemd
    /// system unit as root, a user unit otherwise) and start it.
    Install {
        #[arg(long, env = "PEERGRID_JOIN")]
        join: String,
        /// Data folder (default: /var/lib/peergrid-worker as root,
        /// ~/.local/share/peergrid-worker otherwise); a system unit's must
        /// be under /var/lib.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Folder for the unit file (default: systemd's).
        #[arg(long)]
        unit_dir: Option<PathBuf>,
        /// Preferences file the service reads (default:
        /// /etc/peergrid/worker.toml for a system unit, the usual one for a
        /// user unit); its memory preference sets the unit's MemoryMax=.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Install a user unit even as root.
        #[arg(long, conflicts_with = "system")]
        user: bool,
        /// Write a system unit even when not root (e.g. to package it);
        /// give --unit-dir.
        #[arg(long)]
        system: bool,
        /// Only write the unit file; do not enable or start it.
        #[arg(long)]
        no_enable: bool,
        /// Volunteer account name for the leaderboard.
        #[arg(long, env = "PEERGRID_ACCOUNT", default_value = "")]
        account: String,
    },
    /// Stop the service and remove its unit file (the data folder stays).
    Uninstall {
        #[arg(long)]
        unit_dir: Option<PathBuf>,
        #[arg(long)]
        user: bool,
        /// Only remove the unit file; do not call systemctl.
        #[arg(long)]
        no_disable: bool,
    },
}

#[derive(Subcommand)]
enum ConfigChange {
    /// Set one preference in the preferences file (e.g. `config set
    /// cpu_time_percent 50`, `config set time_windows 22:00-07:00`); the
    /// running worker applies it without a restart.
    Set {
        /// The preference's name, as `peergrid-worker config` prints it.
        key: String,
        /// Its value (a number, true or false, a name; time windows as
        /// HH:MM-HH:MM, several separated by commas).
        value: String,
        /// The running worker's data folder, to apply the change now
        /// (default: the one `install` uses).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Preferences file to change (default: worker.toml in the
        /// platform's config folder; `PEERGRID_CONFIG`).
        #[arg(long, env = "PEERGRID_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Remove one preference from the file, so its default applies.
    Unset {
        /// The preference's name.
        key: String,
        /// The running worker's data folder (default: the one `install` uses).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Preferences file to change (default: worker.toml in the
        /// platform's config folder; `PEERGRID_CONFIG`).
        #[arg(long, env = "PEERGRID_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Tasks run in `peergrid-runner` processes unless `run --in-process`
/// asks otherwise: on Linux, where runners are confined and paced.
const TASK_PROCESSES_BY_DEFAULT: bool = cfg!(target_os = "linux");

#[cfg(feature = "simulate-fault")]
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum FaultArg {
    WrongOutput,
    ForeignArch,
    InflateFuel,
}

fn main() -> Result<()> {
    match run_cli() {
        Err(e) => match e.downcast_ref::<FatalStop>() {
            // Retrying cannot mend it: say what to do, and exit with a
            // code the service unit does not restart on.
            Some(stop) => {
                eprintln!("peergrid-worker stopped: {stop}");
                std::process::exit(FatalStop::EXIT_CODE);
            }
            None => Err(e),
        },
        ok => ok,
    }
}

fn run_cli() -> Result<()> {
    let cli = Cli::parse();
    // A foreground `run` on a terminal draws progress bars; log lines then
    // print above them.
    let bars = match &cli.command {
        Command::Run { no_progress, .. } if !no_progress && std::io::stderr().is_terminal() => {
            Some(MultiProgress::new())
        }
        _ => None,
    };
    let writer = match &bars {
        Some(multi) => BoxMakeWriter::new(LogAboveBars(multi.clone())),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PEERGRID_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Run {
            data,
            join,
            prefs,
            no_progress: _,
            no_more_work,
            #[cfg(feature = "simulate-fault")]
            simulate_fault,
            bind,
            task_processes,
            in_process,
            runner,
            runner_wrapper,
        } => {
            let in_runners = !in_process
                && (task_processes
                    || runner.is_some()
                    || runner_wrapper.is_some()
                    || TASK_PROCESSES_BY_DEFAULT);
            let runner = match peergrid_worker::daemon::runner_command(
                in_runners,
                runner,
                runner_wrapper,
            )? {
                Ok(command) => command,
                Err(missing) => {
                    eprintln!("peergrid-worker: {missing}");
                    // Restarting cannot mend it either.
                    std::process::exit(FatalStop::EXIT_CODE);
                }
            };
            let join: JoinString = join.parse().context("--join")?;
            let overrides = prefs;
            let (prefs, path) = Preferences::resolve(&overrides)?;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let slots = prefs.slots(cores);
            let key = identity::load_or_create_key(&data)?;
            tracing::info!(
                host_key = %hex::encode(key.verifying_key().to_bytes()),
                slots,
                buffer = prefs.buffer(slots),
                cpu_time_percent = prefs.cpu_time_percent,
                suspend_cpu_percent = prefs.suspend_cpu_percent,
                preferences = %path.as_ref().map_or_else(|| "defaults".into(), |p| p.display().to_string()),
                "starting worker"
            );
            let prefs_source = path.map(|path| PrefsSource {
                path,
                overrides,
                cores,
            });
            let config = WorkerConfig {
                data,
                join,
                prefs,
                slots,
                prefs_source,
                #[cfg(feature = "simulate-fault")]
                fault: simulate_fault.map(|f| match f {
                    FaultArg::WrongOutput => peergrid_worker::daemon::Fault::WrongOutput,
                    FaultArg::ForeignArch => peergrid_worker::daemon::Fault::ForeignArch,
                    FaultArg::InflateFuel => peergrid_worker::daemon::Fault::InflateFuel,
                }),
                progress_bars: bars,
                bind,
                no_more_work,
                runner,
            };
            let worker = Worker::new(config, key)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(worker.run(shutdown_signal()))
        }
        Command::Config {
            change: Some(change),
            prefs,
            ..
        } => change_config(change, &prefs),
        Command::Config {
            change: None,
            prefs,
            json,
        } => {
            let (prefs, path) = Preferences::resolve(&prefs)?;
            if json {
                let said = serde_json::json!({
                    "file": path.as_ref().map(|p| p.display().to_string()),
                    "file_exists": path.as_ref().is_some_and(|p| p.exists()),
                    "preferences": prefs,
                });
                println!("{}", serde_json::to_string_pretty(&said)?);
                return Ok(());
            }
            match path {
                Some(p) if p.exists() => {
                    println!("# preferences file: {} (flags applied)", p.display())
                }
                Some(p) => println!(
                    "# preferences file: {} (absent: defaults, flags applied)",
                    p.display()
                ),
                None => println!("# no config folder: defaults, flags applied"),
            }
            print!("{}", prefs.to_toml());
            Ok(())
        }
        Command::Status { data, json } => {
            let data = data_dir(data)?;
            let status = match control::request(&data, ControlRequest::Status) {
                Ok(status) => status,
                Err(e) => match peergrid_worker::state::stopped_for(&data) {
                    // Not running because of a permanent failure: say which.
                    Some(why) => {
                        return Err(e.context(format!("the worker stopped: {why}")));
                    }
                    None => return Err(e),
                },
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("{status}");
            }
            Ok(())
        }
        Command::Pause { data, duration } => {
            let req = match duration {
                Some(d) => ControlRequest::PauseFor { secs: d.as_secs() },
                None => ControlRequest::Pause,
            };
            let status = control::request(&data_dir(data)?, req)?;
            match status.pause_ends_in_secs {
                Some(secs) => println!("paused for {secs} s; then computing resumes by itself"),
                None => println!("paused; {}", status.suspended.unwrap_or_default()),
            }
            Ok(())
        }
        Command::Resume { data } => {
            let status = control::request(&data_dir(data)?, ControlRequest::Resume)?;
            match status.suspended {
                Some(why) => println!("resumed by you, but still suspended: {why}"),
                None => println!("resumed"),
            }
            Ok(())
        }
        Command::Log { data, json, lines } => {
            for event in peergrid_worker::state::read_events(&data_dir(data)?, lines)? {
                if json {
                    println!("{}", serde_json::to_string(&event)?);
                } else {
                    let at = chrono::DateTime::from_timestamp_millis(event.at_ms as i64)
                        .map(|t| {
                            t.with_timezone(&chrono::Local)
                                .format("%Y-%m-%d %H:%M:%S")
                                .to_string()
                        })
                        .unwrap_or_default();
                    println!("{at}  {:<12} {}", event.kind, event.message);
                }
            }
            Ok(())
        }
        Command::Abort { unit, data } => {
            control::request(&data_dir(data)?, ControlRequest::Abort { unit })?;
            println!("unit {unit} aborted: the coordinator gets it back at the next exchange");
            Ok(())
        }
        Command::NoMoreWork { data } => {
            let status = control::request(&data_dir(data)?, ControlRequest::NoMoreWork)?;
            println!(
                "no more work: the worker exits once its {} held task(s) are reported",
                status.running.len() + status.queued
            );
            Ok(())
        }
        Command::Detach { data, wait_secs } => {
            let data = data_dir(data)?;
            let status = control::request(&data, ControlRequest::Detach)?;
            println!(
                "detaching: giving back {} task(s) and reporting {} result(s)",
                status.running.len() + status.queued,
                status.pending_uploads
            );
            let until = std::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
            while control::request(&data, ControlRequest::Status).is_ok() {
                if std::time::Instant::now() > until {
                    anyhow::bail!(
                        "still detaching after {wait_secs} s (is the coordinator reachable?); \
                         `peergrid-worker status` shows what is left"
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            if data.join("project.pub").exists() {
                anyhow::bail!(
                    "the worker stopped before it had detached; start it again and retry"
                );
            }
            println!("detached: {} may join another project", data.display());
            Ok(())
        }
        Command::Install {
            join,
            data,
            unit_dir,
            config,
            user,
            system,
            no_enable,
            account,
        } => {
            let join: JoinString = join
                .parse()
                .context("--join is not a valid join string; nothing was written")?;
            let user = user || (!system && !install::is_root());
            let data = match data {
                Some(d) => std::path::absolute(&d)?,
                None => install::default_data_dir(user)?,
            };
            let unit_dir = match unit_dir {
                Some(d) => std::path::absolute(&d)?,
                None => install::default_unit_dir(user)?,
            };
            let config = config.map(|c| std::path::absolute(&c)).transpose()?;
            let prefs_path = match &config {
                Some(c) => Some(c.clone()),
                None if user => peergrid_worker::prefs::default_config_path(),
                None => Some(PathBuf::from(install::SYSTEM_CONFIG)),
            };
            let prefs = match &prefs_path {
                Some(p) => Preferences::load(p)?,
                None => Preferences::default(),
            };
            let exe = std::env::current_exe().context("finding this binary")?;
            let path = Install {
                join,
                data,
                config,
                memory_max_percent: prefs.memory_in_use_percent.max(prefs.memory_idle_percent),
                unit_dir,
                user,
                exe,
                account,
            }
            .install(!no_enable)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Uninstall {
            unit_dir,
            user,
            no_disable,
        } => {
            let user = user || !install::is_root();
            let unit_dir = match unit_dir {
                Some(d) => d,
                None => install::default_unit_dir(user)?,
            };
            match install::uninstall(&unit_dir, user, !no_disable)? {
                Some(path) => println!("removed {}", path.display()),
                None => println!("not installed in {}", unit_dir.display()),
            }
            Ok(())
        }
    }
}

/// `config set` and `config unset`: rewrites the preferences file (other
/// keys and comments kept; checked as a whole first) through a renamed
/// temporary file, then asks a running worker to apply it and says what
/// would keep the change from taking effect.
fn change_config(change: ConfigChange, flags: &Overrides) -> Result<()> {
    let (key, value, data, config) = match &change {
        ConfigChange::Set {
            key,
            value,
            data,
            config,
        } => (key, Some(value.as_str()), data, config),
        ConfigChange::Unset { key, data, config } => (key, None, data, config),
    };
    let path = config
        .clone()
        .or_else(|| flags.config.clone())
        .or_else(peergrid_worker::prefs::default_config_path)
        .context("no config folder; name the preferences file with --config")?;
    let before = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let after = peergrid_worker::prefs::edit_file(&before, key, value)
        .with_context(|| format!("{} was not changed", path.display()))?;
    replace_file(&path, after.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    match value {
        Some(v) => println!("{key} = {v} in {}", path.display()),
        None => println!(
            "{key} removed from {} (its default applies)",
            path.display()
        ),
    }
    let data = data_dir(data.clone())?;
    match control::request(&data, ControlRequest::Reload) {
        Ok(status) => {
            let reads = status.preferences_file.as_deref();
            if reads != Some(path.display().to_string().as_str()) {
                println!(
                    "the running worker reads {}, not this file: the change does not apply to it",
                    reads.unwrap_or("no preferences file")
                );
            } else if status.set_by_flags.iter().any(|k| k == key) {
                println!(
                    "the running worker was started with a flag that sets {key}; the flag wins until it restarts without it"
                );
            } else if peergrid_worker::prefs::APPLY_AT_RESTART.contains(&key.as_str()) {
                println!("the running worker applies {key} at its next start");
            } else {
                println!("applied to the running worker");
            }
        }
        Err(e) => {
            if control::socket_path(&data).exists() {
                return Err(e.context("saved, but the running worker did not apply it"));
            }
            println!(
                "no worker is running on {}: it applies when one starts",
                data.display()
            );
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file renamed over it, so
/// a running worker never reads half a file; keeps an existing file's
/// permissions and makes the folder if missing.
fn replace_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions())?;
    }
    std::fs::rename(&tmp, path)
}

/// `--data`, or the data folder `install` uses by default.
fn data_dir(data: Option<PathBuf>) -> Result<PathBuf> {
    match data {
        Some(d) => Ok(d),
        None => install::default_data_dir(!install::is_root()),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;

    use super::Cli;

    /// `run` with its required flags, then `extra`.
    fn parse(extra: &[&str]) -> Result<Cli, clap::Error> {
        let run = ["peergrid-worker", "run", "--data", "d", "--join", "j"];
        Cli::try_parse_from(run.iter().chain(extra))
    }

    /// The volunteer's build has no cheat modes: clap refuses the flag.
    #[cfg(not(feature = "simulate-fault"))]
    #[test]
    fn the_default_build_refuses_simulate_fault() {
        let refused = parse(&["--simulate-fault", "wrong-output"]).err();
        assert_eq!(refused.map(|e| e.kind()), Some(ErrorKind::UnknownArgument));
        // The harness (tests/src/lib.rs) tells the two builds apart by this.
        let probe = parse(&["--simulate-fault", "wrong-output", "--help"]).err();
        assert_eq!(probe.map(|e| e.kind()), Some(ErrorKind::UnknownArgument));
    }

    /// The end-to-end tests' build takes the flag and hands it to the daemon.
    #[cfg(feature = "simulate-fault")]
    #[test]
    fn the_test_build_accepts_simulate_fault() {
        for (arg, fault) in [
            ("wrong-output", super::FaultArg::WrongOutput),
            ("foreign-arch", super::FaultArg::ForeignArch),
            ("inflate-fuel", super::FaultArg::InflateFuel),
        ] {
            let Ok(cli) = parse(&["--simulate-fault", arg]) else {
                panic!("--simulate-fault {arg} refused");
            };
            let super::Command::Run { simulate_fault, .. } = cli.command else {
                panic!("not parsed as `run`");
            };
            assert_eq!(simulate_fault, Some(fault));
        }
        let probe = parse(&["--simulate-fault", "wrong-output", "--help"]).err();
        assert_eq!(probe.map(|e| e.kind()), Some(ErrorKind::DisplayHelp));
    }
}
