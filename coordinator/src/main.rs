//! `peergrid-coordinator`: `init` a project's data folder, `serve` it,
//! `migrate` its database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use peergrid_coordinator::datadir::{DataDir, read_project_secret_key};
use peergrid_coordinator::grid::Grid;
use peergrid_coordinator::http::{self, Api, HttpLimits};
use peergrid_coordinator::metrics;
use peergrid_coordinator::mirror::Mirrors;
use peergrid_coordinator::project::{self, Project};
use peergrid_coordinator::quic::{DoorLimits, QuicServer};
use peergrid_coordinator::store::{ReissueUnits, SCHEMA_VERSION, SqliteStore, Store, StoreError};
use peergrid_coordinator::trust::HostPolicy;
use peergrid_coordinator::{tls, writer::Writer};
use peergrid_os::now_ms;
use peergrid_proto::signing;
use serde_json::json;

mod cli;

use cli::{Cli, Command, ProjectCommand};

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
            mirrors,
        } => {
            let blob_grace = mirrors.blob_grace();
            let mirrors = mirrors.mirrors()?;
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
                    mirrors,
                    blob_grace,
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
        Command::Migrate { data, status } => migrate(&data, status),
        Command::Backup { data, to } => {
            existing_db(&data)?;
            DataDir::new(&data).backup(&to)?;
            let status = SqliteStore::schema_status(&DataDir::new(&to).db())?;
            println!(
                "backed up {} to {} (database schema version {})",
                data.display(),
                to.display(),
                status.version
            );
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

/// `migrate`: says where the schema stands, then (unless `status_only`)
/// applies what is pending.
fn migrate(data: &std::path::Path, status_only: bool) -> Result<()> {
    let db = existing_db(data)?;
    let status = SqliteStore::schema_status(&db)
        .with_context(|| format!("reading the schema of {}", db.display()))?;
    println!(
        "{}: schema version {}; this release's is {SCHEMA_VERSION}",
        db.display(),
        status.version
    );
    if status.version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: status.version,
            known: SCHEMA_VERSION,
        }
        .into());
    }
    if status.pending.is_empty() {
        println!("up to date");
        return Ok(());
    }
    let verb = if status_only { "to apply" } else { "applying" };
    for (version, summary) in &status.pending {
        println!("{verb} step {version}: {summary}");
    }
    if !status_only {
        drop(SqliteStore::open(&db, false).with_context(|| format!("migrating {}", db.display()))?);
        // What the database says now (another process may have applied
        // some of the steps meanwhile).
        let now = SqliteStore::schema_status(&db)?;
        println!("done: schema version {}", now.version);
    }
    Ok(())
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
    let db = existing_db(data)?;
    SqliteStore::open(&db, false).with_context(|| format!("opening {}", db.display()))
}

/// The database file of a project made by `init`.
fn existing_db(data: &std::path::Path) -> Result<PathBuf> {
    let db = DataDir::new(data).db();
    anyhow::ensure!(
        db.exists(),
        "{} has no peergrid project (run `peergrid-coordinator init` first)",
        data.display()
    );
    Ok(db)
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
    mirrors: Mirrors,
    /// Uploads no job claimed for this long are deleted; `None`: kept.
    blob_grace: Option<std::time::Duration>,
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
        mirrors,
        blob_grace,
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
    if let Some(publisher) = &mirrors.publisher {
        publisher.catch_up_in_background(grid.store.clone());
    }
    grid.set_mirrors(mirrors);
    grid.refill().await.context("loading unfinished work")?;
    grid.spawn_background();
    if let Some(grace) = blob_grace {
        grid.spawn_blob_collection(grace);
    }
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
