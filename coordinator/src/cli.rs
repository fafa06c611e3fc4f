//! The command line: `peergrid-coordinator`'s commands and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use peergrid_coordinator::http::HttpLimits;
use peergrid_coordinator::mirror::{Mirrors, Publisher};
use peergrid_coordinator::project::ProjectEdit;
use peergrid_coordinator::quic::DoorLimits;
use peergrid_coordinator::store::{BanTarget, HostId, Store};
use peergrid_coordinator::trust::HostPolicy;

#[derive(Parser)]
#[command(
    name = "peergrid-coordinator",
    version,
    about = "Runs a peergrid project: hands out work, validates results, serves the dataset"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Bring the project's database up to this release's schema (`serve`
    /// does so itself when it starts); print the steps applied.
    Migrate {
        /// The project folder `init` made.
        #[arg(long)]
        data: PathBuf,
        /// Only say where the schema stands and what would be applied.
        #[arg(long)]
        status: bool,
    },
    /// Copy the project (settings, keys, certificate and a consistent
    /// snapshot of the database) to a new folder; works while `serve` runs.
    /// `serve --data TO` serves the copy under the same join string.
    Backup {
        /// The project folder `init` made.
        #[arg(long)]
        data: PathBuf,
        /// The new folder to write (must not exist).
        #[arg(long)]
        to: PathBuf,
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
        #[command(flatten)]
        mirrors: MirrorArgs,
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
pub enum ProjectCommand {
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
pub struct ProjectArgs {
    /// The project's name, shown in every page's title.
    #[arg(long)]
    pub name: Option<String>,
    /// What the science is, for the public (blank lines separate
    /// paragraphs).
    #[arg(long)]
    pub description: Option<String>,
    /// The project's web site (https:// or http://).
    #[arg(long)]
    pub url: Option<String>,
    /// Who runs the project (a person, lab or institute).
    #[arg(long)]
    pub operator: Option<String>,
    /// Where volunteers download peergrid-worker (https:// or http://).
    #[arg(long)]
    pub download_url: Option<String>,
}

impl ProjectArgs {
    pub fn edit(self) -> ProjectEdit {
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
pub struct StrangerArgs {
    /// Tasks per core per day a new host starts with (its quota doubles
    /// with every valid result).
    #[arg(long, default_value_t = HostPolicy::default().young_per_core_per_day)]
    pub new_host_quota_per_core: u32,
    /// Most cores a host is counted with until it is established.
    #[arg(long, default_value_t = HostPolicy::default().young_cores)]
    pub new_host_cores: u32,
    /// Copies a host may hold unreported, per counted core.
    #[arg(long, default_value_t = HostPolicy::default().in_flight_per_core)]
    pub in_flight_per_core: u32,
    /// Hours since its first Hello before a trusted host is established
    /// (runs single copies, completes new hosts' quorums).
    #[arg(long, default_value_t = 24.0)]
    pub established_after_hours: f64,
    /// MiB of output one host may have stored for units not yet validated,
    /// counting the largest output (4 MiB) for each copy it holds; past
    /// it, it gets no fresh units, only copies that decide units.
    #[arg(long, default_value_t = HostPolicy::default().max_stored_bytes >> 20)]
    pub host_storage_mb: u64,
    /// Authenticated worker connections at once; when all are taken, the
    /// quietest one whose host holds no work gives way to a newcomer.
    #[arg(long, default_value_t = DoorLimits::default().max_connections)]
    pub max_connections: usize,
    /// Connections before their Hello at once; when all are taken, the
    /// oldest gives way.
    #[arg(long, default_value_t = DoorLimits::default().max_unauthenticated)]
    pub max_unauthenticated: usize,
    /// Worker connections from one IP address at once.
    #[arg(long, default_value_t = DoorLimits::default().max_connections_per_ip)]
    pub max_connections_per_ip: usize,
    /// New host identities one IP address may register per hour.
    #[arg(long, default_value_t = DoorLimits::default().new_hosts_per_ip_per_hour)]
    pub new_hosts_per_ip_per_hour: u32,
    /// Seconds after which a connection whose host holds no work and asks
    /// for none is closed.
    #[arg(long, default_value_t = DoorLimits::default().idle_timeout.as_secs())]
    pub idle_secs: u64,
}

impl StrangerArgs {
    pub fn policy(&self, per_core_per_day: u32) -> HostPolicy {
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

    pub fn door(&self) -> DoorLimits {
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
pub struct BanArgs {
    /// A host, by id (as on the dashboard) or public key (hex).
    #[arg(long)]
    pub host: Option<String>,
    /// A volunteer account, by its key (hex): every host attached to it.
    #[arg(long)]
    pub account: Option<String>,
}

impl BanArgs {
    pub fn resolve(self, store: &dyn Store) -> Result<BanTarget> {
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

/// `serve`'s blob mirror flags (docs/operations.md, "Blob mirrors").
#[derive(clap::Args, Debug)]
pub struct MirrorArgs {
    /// Write every module and input into DIR/ab/cdef… (by BLAKE3 hash) for
    /// a plain web server to serve: each upload as it arrives, and at start
    /// whatever a job references that DIR lacks.
    #[arg(long, value_name = "DIR")]
    pub publish_blobs: Option<PathBuf>,
    /// Base address of a web server serving that folder (repeat for
    /// several, tried in order): workers fetch modules and inputs there
    /// first, check each blob's hash, and fall back to this coordinator.
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// With mirrors, inputs of at least this many bytes go by reference
    /// (workers fetch them); smaller ones ride inside the task.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub mirror_inputs_from: usize,
    /// Uploaded blobs no job has claimed after this many seconds (a
    /// submission that never came) are deleted, from the database and
    /// the published folder; 0 keeps them.
    #[arg(long, value_name = "SECS", default_value_t = 2 * 24 * 3600)]
    pub blob_grace_secs: u64,
}

impl MirrorArgs {
    /// How long an upload may stay unclaimed, if uploads are collected.
    pub fn blob_grace(&self) -> Option<std::time::Duration> {
        (self.blob_grace_secs > 0).then(|| std::time::Duration::from_secs(self.blob_grace_secs))
    }

    pub fn mirrors(self) -> anyhow::Result<Mirrors> {
        let publisher = self
            .publish_blobs
            .as_deref()
            .map(Publisher::open)
            .transpose()?
            .map(std::sync::Arc::new);
        Mirrors::new(self.mirrors, publisher, self.mirror_inputs_from)
    }
}
