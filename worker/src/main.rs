//! `peergrid-worker`: the volunteer's daemon.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use peergrid_proto::JoinString;
use peergrid_worker::daemon::{Fault, Worker, WorkerConfig};
use peergrid_worker::{identity, sandbox};

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
    /// Join a project and compute in the foreground until interrupted.
    Run {
        /// Folder for this host's key and caches (one folder per host).
        #[arg(long)]
        data: PathBuf,
        /// The project's join string: peergrid://HOST:PORT#sha256:...
        #[arg(long, env = "PEERGRID_JOIN")]
        join: String,
        /// Concurrent tasks (default: all cores but one, at least one).
        #[arg(long)]
        cores: Option<usize>,
        /// Your volunteer account name: credit of all your hosts adds up
        /// under it on the project's leaderboard (default: anonymous).
        #[arg(long, env = "PEERGRID_ACCOUNT", default_value = "")]
        account: String,
        /// Most memory one task may use, in MiB (a job asking for more
        /// gets this much; its module may then fail).
        #[arg(long)]
        max_task_memory_mb: Option<u64>,
        /// Testing aid: misbehave on purpose to exercise validation.
        #[arg(long, value_enum, hide = true)]
        simulate_fault: Option<FaultArg>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FaultArg {
    WrongOutput,
    ForeignArch,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PEERGRID_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Run {
            data,
            join,
            cores,
            account,
            max_task_memory_mb,
            simulate_fault,
        } => {
            let join: JoinString = join.parse().context("--join")?;
            let slots = cores
                .unwrap_or_else(identity::default_slots)
                .clamp(1, sandbox::MAX_CONCURRENT_TASKS);
            let key = identity::load_or_create_key(&data)?;
            tracing::info!(
                host_key = %hex::encode(key.verifying_key().to_bytes()),
                slots,
                "starting worker"
            );
            let config = WorkerConfig {
                data,
                join,
                slots,
                account,
                max_task_memory: max_task_memory_mb.map(|m| m.saturating_mul(1024 * 1024)),
                fault: simulate_fault.map(|f| match f {
                    FaultArg::WrongOutput => Fault::WrongOutput,
                    FaultArg::ForeignArch => Fault::ForeignArch,
                }),
            };
            let worker = Worker::new(config, key)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(worker.run(shutdown_signal()))
        }
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
