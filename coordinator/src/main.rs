//! `peergrid-coordinator`: `init` a project's data folder, `serve` it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use peergrid_coordinator::datadir::{DataDir, read_project_secret_key};
use peergrid_coordinator::grid::Grid;
use peergrid_coordinator::http::{self, Api, HttpLimits};
use peergrid_coordinator::metrics;
use peergrid_coordinator::project::{self, Project, ProjectEdit};
use peergrid_coordinator::quic::{DoorLimits, QuicServer};
use peergrid_coordinator::store::{BanTarget, HostId, ReissueUnits, SqliteStore, Store};
use peergrid_coordinator::trust::HostPolicy;
use peergrid_coordinator::{tls, writer::Writer};
use peergrid_os::now_ms;
use peergrid_proto::signing;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "peergrid-coordinator",
    version,
    about = "Runs a peergrid project: hands out work, validates results, serves the dataset"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a project's data folder: database, TLS certificate, project
    /// key, researcher token; prints the volunteers' join string.
    Init {
        /// Folder to create the project in.
        #[arg(long)]
        data: PathBuf,
        /// Address volunteers will dial (goes into the join string).
        #[arg(long, default_value = "127.0.0.1:7400")]
        public_addr: String,
        /// Print what was made as one JSON object (for scripts).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Show or change what the dashboard says about the project.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// Endorse a researcher's key with the project key, so workers run the
    /// modules they sign. Works from a copy of `project.key` kept offline.
    Endorse {
        /// The project's secret key file (`DIR/project.key` or an offline copy).
        #[arg(long)]
        project_key: PathBuf,
        /// The researcher's public key (hex), as `peergrid keys new` printed it.
        #[arg(long)]
        researcher: String,
        /// The researcher's name, shown with their jobs.
        #[arg(long)]
        name: String,
        /// Write the endorsement here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Serve workers over QUIC and researchers and the public over HTTP.
    Serve {
        /// The project folder `init` made.
        #[arg(long)]
        data: PathBuf,
        /// UDP address for the workers' QUIC endpoint.
        #[arg(long, default_value = "127.0.0.1:7400")]
        quic: SocketAddr,
        /// TCP address for the HTTP API and pages.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Fsync every commit (survives power loss, not just a crash).
        #[arg(long)]
        full_sync: bool,
        /// Address volunteers dial, for the join string (default: the one
        /// given to `init`; the bound address when --quic has port 0).
        #[arg(long)]
        public_addr: Option<String>,
        /// Most tasks one core of a host is sent per day. A host's quota
        /// halves on each failure and doubles on each valid result, up to
        /// this times its cores.
        #[arg(long, default_value_t = HostPolicy::default().per_core_per_day)]
        daily_quota_per_core: u32,
        #[command(flatten)]
        strangers: StrangerArgs,
        /// Most HTTP connections served at once; more are closed as soon as
        /// they are accepted.
        #[arg(long, default_value_t = HttpLimits::default().max_connections)]
        http_max_connections: usize,
        /// Most HTTP connections served at once from one IP address.
        #[arg(long, default_value_t = HttpLimits::default().max_connections_per_ip)]
        http_max_connections_per_ip: usize,
        /// Milliseconds a client has to send a request's headers before its
        /// connection is closed (tests shorten it).
        #[arg(long, hide = true, default_value_t = HttpLimits::default().header_read_timeout.as_millis() as u64)]
        http_header_timeout_ms: u64,
        /// Free disk space (MiB) kept in reserve: below it, new hosts,
        /// uploads and results are refused while everything else is
        /// served.
        #[arg(long, default_value_t = 1024)]
        storage_reserve_mb: u64,
    },
    /// Ban a host or a volunteer account: no more work, and its results
    /// not yet validated count for nothing. Takes effect on a running
    /// coordinator within seconds.
    Ban {
        /// The project folder `init` made.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        target: BanArgs,
        /// Why, for the record (shown to the banned worker).
        #[arg(long, default_value = "banned by the operator")]
        reason: String,
    },
    /// Lift a ban.
    Unban {
        /// The project folder `init` made.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        target: BanArgs,
    },
    /// List the bans in force, as JSON lines.
    Bans {
        /// The project folder `init` made.
        #[arg(long)]
        data: PathBuf,
    },
    /// Compute failed units of a job afresh, with their whole error budget
    /// again (say, after the host behind the failures was banned). Their
    /// earlier copies stay on record but no longer count. A running
    /// coordinator hands them out within seconds.
    Reissue {
        /// The project folder `init` made.
        #[arg(long)]
        data: PathBuf,
        /// The job.
        job: u64,
        /// Units by their numbers within the job (as `peergrid job logs`
        /// and the dashboard show them).
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        units: Vec<u64>,
        /// Every failed unit of the job.
        #[arg(long)]
        failed: bool,
        /// Why, for the record (kept with the retired copies).
        #[arg(long, default_value = "no reason given")]
        reason: String,
        /// Print what happened to each unit as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Change the project's name, description, web site or operator (only
    /// the flags given; an empty value clears one). A running `serve`
    /// shows the change within 2 s.
    Set {
        /// The project folder `init` made.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Print the project's name, description, web site and operator as
    /// JSON.
    Show {
        /// The project folder `init` made.
        #[arg(long)]
        data: PathBuf,
    },
}

/// What the public sees of the project (the dashboard's `/about` page and
/// every page's title).
#[derive(clap::Args)]
struct ProjectArgs {
    /// The project's name, shown in every page's title.
    #[arg(long)]
    name: Option<String>,
    /// What the science is, for the public (blank lines separate
    /// paragraphs).
    #[arg(long)]
    description: Option<String>,
    /// The project's web site (https:// or http://).
    #[arg(long)]
    url: Option<String>,
    /// Who runs the project (a person, lab or institute).
    #[arg(long)]
    operator: Option<String>,
    /// Where volunteers download peergrid-worker (https:// or http://).
    #[arg(long)]
    download_url: Option<String>,
}

impl ProjectArgs {
    fn edit(self) -> ProjectEdit {
        ProjectEdit {
            name: self.name,
            description: self.description,
            url: self.url,
            operator: self.operator,
            download_url: self.download_url,
        }
    }
}

/// What a new identity may do, and the bounds of the workers' door
/// (docs/security.md).
#[derive(clap::Args)]
struct StrangerArgs {
    /// Tasks per core per day a new host starts with (its quota doubles
    /// with every valid result).
    #[arg(long, default_value_t = HostPolicy::default().young_per_core_per_day)]
    new_host_quota_per_core: u32,
    /// Most cores a host is counted with until it is established.
    #[arg(long, default_value_t = HostPolicy::default().young_cores)]
    new_host_cores: u32,
    /// Copies a host may hold unreported, per counted core.
    #[arg(long, default_value_t = HostPolicy::default().in_flight_per_core)]
    in_flight_per_core: u32,
    /// Hours since its first Hello before a trusted host is established
    /// (runs single copies, completes new hosts' quorums).
    #[arg(long, default_value_t = 24.0)]
    established_after_hours: f64,
    /// MiB of output one host may have stored for units not yet validated,
    /// counting the largest output (4 MiB) for each copy it holds; past
    /// it, it gets no fresh units, only copies that decide units.
    #[arg(long, default_value_t = HostPolicy::default().max_stored_bytes >> 20)]
    host_storage_mb: u64,
    /// Authenticated worker connections at once; when all are taken, the
    /// quietest one whose host holds no work gives way to a newcomer.
    #[arg(long, default_value_t = DoorLimits::default().max_connections)]
    max_connections: usize,
    /// Connections before their Hello at once; when all are taken, the
    /// oldest gives way.
    #[arg(long, default_value_t = DoorLimits::default().max_unauthenticated)]
    max_unauthenticated: usize,
    /// Worker connections from one IP address at once.
    #[arg(long, default_value_t = DoorLimits::default().max_connections_per_ip)]
    max_connections_per_ip: usize,
    /// New host identities one IP address may register per hour.
    #[arg(long, default_value_t = DoorLimits::default().new_hosts_per_ip_per_hour)]
    new_hosts_per_ip_per_hour: u32,
    /// Seconds after which a connection whose host holds no work and asks
    /// for none is closed.
    #[arg(long, default_value_t = DoorLimits::default().idle_timeout.as_secs())]
    idle_secs: u64,
}

impl StrangerArgs {
    fn policy(&self, per_core_per_day: u32) -> HostPolicy {
        HostPolicy {
            per_core_per_day: per_core_per_day.max(1),
            young_per_core_per_day: self.new_host_quota_per_core.max(1),
            young_cores: self.new_host_cores.max(1),
            in_flight_per_core: self.in_flight_per_core.max(1),
            established_age_ms: (self.established_after_hours.max(0.0) * 3.6e6) as u64,
            max_stored_bytes: self.host_storage_mb.max(1).saturating_mul(1 << 20),
            ..HostPolicy::default()
        }
    }

    fn door(&self) -> DoorLimits {
        DoorLimits {
            max_connections: self.max_connections.max(1),
            max_unauthenticated: self.max_unauthenticated.max(1),
            max_connections_per_ip: self.max_connections_per_ip.max(1),
            new_hosts_per_ip_per_hour: self.new_hosts_per_ip_per_hour,
            idle_timeout: std::time::Duration::from_secs(self.idle_secs.max(1)),
            ..DoorLimits::default()
        }
    }
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct BanArgs {
    /// A host, by id (as on the dashboard) or public key (hex).
    #[arg(long)]
    host: Option<String>,
    /// A volunteer account, by its key (hex): every host attached to it.
    #[arg(long)]
    account: Option<String>,
}

impl BanArgs {
    fn resolve(self, store: &dyn Store) -> Result<BanTarget> {
        match (self.host, self.account) {
            (Some(h), _) => {
                let id = match h.parse::<HostId>() {
                    Ok(id) if store.host(id)?.is_some() => id,
                    _ => store
                        .host_by_key(&h.to_ascii_lowercase())?
                        .with_context(|| format!("no host with id or key {h}"))?,
                };
                Ok(BanTarget::Host(id))
            }
            (None, Some(a)) => {
                let key = a.trim().to_ascii_lowercase();
                anyhow::ensure!(
                    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
                    "an account is named by its key (64 hex digits, shown on the volunteers page \
                     and in `peergrid-coordinator` host lists), not by its display name, \
                     which anyone may choose"
                );
                Ok(BanTarget::Account(key))
            }
            _ => anyhow::bail!("name a --host or an --account"),
        }
    }
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
        Command::Init {
            data,
            public_addr,
            json,
            project,
        } => {
            let project = Project::default()
                .edited(project.edit())
                .map_err(anyhow::Error::msg)?;
            let made = DataDir::new(&data).init(&public_addr, &project)?;
            if json {
                println!(
                    "{}",
                    json!({ "join": made.join, "token": made.token, "project_public_key": made.project_public_key })
                );
            } else {
                println!("initialised a peergrid project in {}", data.display());
                println!("join:  {}", made.join);
                println!("token: {}", made.token);
                println!("project key (public): {}", made.project_public_key);
                println!(
                    "keep the researcher token secret; it is shown only now. start with:\n  \
                     peergrid-coordinator serve --data {} --quic {public_addr}",
                    data.display()
                );
            }
            Ok(())
        }
        Command::Project {
            command: ProjectCommand::Set { data, project },
        } => {
            let now = DataDir::new(&data).set_project(project.edit())?;
            tracing::info!(name = %now.display_name(), "project description changed");
            println!("{}", json!(now));
            Ok(())
        }
        Command::Project {
            command: ProjectCommand::Show { data },
        } => {
            println!("{}", json!(DataDir::new(&data).settings()?.project));
            Ok(())
        }
        Command::Endorse {
            project_key,
            researcher,
            name,
            out,
        } => {
            let project = read_project_secret_key(&project_key)?;
            let researcher = signing::parse_public_key(&researcher).context("--researcher")?;
            let endorsement = signing::endorse(&project, &researcher, &name)?;
            let json = serde_json::to_string_pretty(&endorsement)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, json + "\n")
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("endorsed {name}; give them {}", path.display());
                }
                None => println!("{json}"),
            }
            Ok(())
        }
        Command::Serve {
            data,
            quic,
            http,
            full_sync,
            public_addr,
            daily_quota_per_core,
            strangers,
            http_max_connections,
            http_max_connections_per_ip,
            http_header_timeout_ms,
            storage_reserve_mb,
        } => {
            let policy = strangers.policy(daily_quota_per_core);
            let door = strangers.door();
            let files = raise_open_file_limit();
            let limits = HttpLimits {
                header_read_timeout: std::time::Duration::from_millis(
                    http_header_timeout_ms.max(1),
                ),
                max_connections: fit_connections(http_max_connections.max(1), files),
                max_connections_per_ip: http_max_connections_per_ip.max(1),
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(Serving {
                    data,
                    quic_addr: quic,
                    http_addr: http,
                    full_sync,
                    public_addr,
                    policy,
                    door,
                    limits,
                    storage_reserve_bytes: storage_reserve_mb.saturating_mul(1 << 20),
                }))
        }
        Command::Ban {
            data,
            target,
            reason,
        } => {
            let store = open_existing(&data)?;
            let target = target.resolve(&store)?;
            store.set_ban(&target, Some(&reason), now_ms())?;
            println!("banned {}", json!(target));
            Ok(())
        }
        Command::Unban { data, target } => {
            let store = open_existing(&data)?;
            let target = target.resolve(&store)?;
            if !store.set_ban(&target, None, now_ms())? {
                anyhow::bail!("{} was not banned", json!(target));
            }
            println!("lifted the ban on {}", json!(target));
            Ok(())
        }
        Command::Reissue {
            data,
            job,
            units,
            failed,
            reason,
            json,
        } => {
            let which = if failed {
                ReissueUnits::Failed
            } else {
                ReissueUnits::Numbers(units)
            };
            let reason = printable_reason(&reason)?;
            let Some(done) = open_existing(&data)?.reissue(job, &which, &reason, now_ms())? else {
                anyhow::bail!("there is no job {job}");
            };
            let reissued = done.iter().filter(|r| r.refused.is_none()).count();
            for r in &done {
                if json {
                    println!("{}", json!(r));
                } else {
                    match &r.refused {
                        None => println!("unit {} ({}): reissued", r.number, r.was),
                        Some(why) => println!("unit {}: left alone: {why}", r.number),
                    }
                }
            }
            if !json {
                println!("{reissued} of {} unit(s) of job {job} reissued", done.len());
            }
            if reissued == 0 && !done.is_empty() {
                anyhow::bail!("no unit was reissued");
            }
            Ok(())
        }
        Command::Bans { data } => {
            for ban in open_existing(&data)?.bans()? {
                println!("{}", json!(ban));
            }
            Ok(())
        }
    }
}

/// The operator's reason, checked: it is kept with the replaced rows.
fn printable_reason(reason: &str) -> Result<String> {
    anyhow::ensure!(
        reason.len() <= 500 && !reason.chars().any(char::is_control),
        "--reason: at most 500 bytes without control characters"
    );
    Ok(reason.to_string())
}

/// Raises the open-file soft limit to the hard limit (many systems start
/// processes at 1024, which HTTP connections, QUIC and SQLite share);
/// returns the soft limit in force, if known.
fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(
                "could not raise the open-file limit: {e}; HTTP connections may run out of file descriptors"
            );
            rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
        }
    }
}

/// File descriptors kept for everything but HTTP connections (SQLite,
/// QUIC, blocking threads' files).
const FILES_KEPT: u64 = 256;

/// `wanted` HTTP connections, lowered so they leave [`FILES_KEPT`] of an
/// open-file limit of `files`.
fn fit_connections(wanted: usize, files: Option<u64>) -> usize {
    let Some(files) = files else { return wanted };
    let room = usize::try_from(files.saturating_sub(FILES_KEPT))
        .unwrap_or(usize::MAX)
        .max(16);
    if wanted > room {
        tracing::warn!(
            "serving at most {room} HTTP connections, not {wanted}: the open-file limit is {files}"
        );
    }
    wanted.min(room)
}

/// The store of a project made by `init` (never creates one).
fn open_existing(data: &std::path::Path) -> Result<SqliteStore> {
    let db = DataDir::new(data).db();
    anyhow::ensure!(
        db.exists(),
        "{} has no peergrid project (run `peergrid-coordinator init` first)",
        data.display()
    );
    SqliteStore::open(&db, false).with_context(|| format!("opening {}", db.display()))
}

/// What `serve` was asked for.
struct Serving {
    data: PathBuf,
    quic_addr: SocketAddr,
    http_addr: SocketAddr,
    full_sync: bool,
    public_addr: Option<String>,
    policy: HostPolicy,
    door: DoorLimits,
    limits: HttpLimits,
    storage_reserve_bytes: u64,
}

async fn serve(serving: Serving) -> Result<()> {
    let Serving {
        data,
        quic_addr,
        http_addr,
        full_sync,
        public_addr,
        policy,
        door,
        limits,
        storage_reserve_bytes,
    } = serving;
    let dir = DataDir::new(&data);
    let settings = dir.settings()?;
    let token_hash = blake3::Hash::from_hex(&settings.researcher_token_blake3)
        .context("coordinator.toml: researcher_token_blake3 is not a BLAKE3 hex digest")?;
    let (cert, key) = dir.tls()?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.db(), full_sync)
            .with_context(|| format!("opening {}", dir.db().display()))?,
    );
    let (writer, writer_thread) = Writer::spawn(store.clone());
    let grid = Grid::with_policy(store, writer, policy);
    grid.storage.watch(data.clone(), storage_reserve_bytes);
    grid.refill().await.context("loading unfinished work")?;
    grid.spawn_background();
    metrics::watch_jobs(grid.store.clone());

    let fingerprint = tls::fingerprint(&cert);
    let quic = Arc::new(QuicServer::bind(
        quic_addr,
        tls::server_config(&cert, &key)?,
        grid.clone(),
        fingerprint,
        door,
    )?);
    let quic_bound = quic.local_addr()?;
    // The join string names the public address, except when serving on an
    // ephemeral port (tests): then the bound one.
    let join_addr = match public_addr {
        Some(a) => a,
        None if quic_addr.port() == 0 => quic_bound.to_string(),
        None => settings.public_addr.clone(),
    };
    let join = dir.join_string(&join_addr)?;

    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding HTTP on {http_addr}"))?;
    let http_bound = listener.local_addr()?;
    let api = Arc::new(Api::new(
        grid.clone(),
        token_hash,
        join.clone(),
        dir.project_public_key()?,
    ));
    api.project.set(settings.project.clone());
    project::watch(api.project.clone(), dir.settings_path());
    let info = json!({ "quic": quic_bound.to_string(), "http": format!("http://{http_bound}"), "join": join });
    std::fs::write(dir.serve_info(), info.to_string()).context("writing serve.json")?;
    tracing::info!("workers: QUIC on {quic_bound}; join string: {join}");
    tracing::info!("researchers and dashboard: http://{http_bound}");
    println!("{info}");

    let quic_task = tokio::spawn(quic.clone().run());
    let http_task = tokio::spawn(http::serve(
        listener,
        http::router(api),
        limits,
        shutdown_signal(),
    ));
    shutdown_signal().await;
    tracing::info!("shutting down: refusing new work, finishing commits");
    quic.endpoint
        .close(0u32.into(), b"coordinator shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), http_task).await;
    quic_task.abort();
    quic.endpoint.wait_idle().await;
    grid.stop_writer();
    tokio::task::spawn_blocking(move || writer_thread.join()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every flag and positional argument of every subcommand, `--help`
    /// and `--version` aside, names its arguments missing help.
    fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                out.push(format!("{path} {} (the command itself)", sub.get_name()));
            }
            missing_help(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        missing_help(&cmd, "peergrid-coordinator", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }
}
