//! `peergrid`: the researcher's command line: submit jobs, follow them,
//! export their datasets.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use peergrid_client::profile::{self, Profile, Reached, Settings};
use peergrid_client::{
    Client, Researcher, export, new_key, prepare_job, printable, printable_json, server_url,
};

mod local_cli;
mod logs;
mod watch;

#[derive(Parser)]
#[command(
    name = "peergrid",
    version,
    about = "Submit wasm jobs to a peergrid project and fetch their results"
)]
struct Cli {
    /// The coordinator's HTTP address [default: the profile's
    /// (`peergrid login`), else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "PEERGRID_SERVER")]
    server: Option<String>,
    /// The researcher token `peergrid-coordinator init` printed [default:
    /// the profile's].
    #[arg(long, global = true, env = "PEERGRID_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Jobs: submit, follow, list.
    #[command(subcommand)]
    Job(JobCommand),
    /// A job's validated dataset.
    #[command(subcommand)]
    Results(ResultsCommand),
    /// Researcher signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Save --server, --token, --key and --endorsement in your profile
    /// ($XDG_CONFIG_HOME/peergrid/config.toml, mode 0600), so later
    /// commands need none of them; checks them against the server when it
    /// answers.
    Login {
        /// Your secret key (`peergrid keys new`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The project's endorsement of your key.
        #[arg(long)]
        endorsement: Option<PathBuf>,
    },
    /// Re-run one unit of a job's dataset locally, in the same sandbox as
    /// the workers, and check its output hash and fuel against the row.
    Verify {
        /// The job's id.
        job: u64,
        /// The unit's number within the job.
        unit: u64,
        /// Print what was found as JSON (exit status 1 on a mismatch all
        /// the same).
        #[arg(long)]
        json: bool,
    },
    /// Run a module on one input locally, in the workers' sandbox and
    /// limits: its output on stdout, fuel and time on stderr.
    Run(local_cli::RunArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a signing key; prints the public key for the operator to endorse.
    New {
        /// Where to write the secret key (created, never overwritten).
        #[arg(long, default_value = "researcher.key")]
        out: PathBuf,
        /// Not used: making a key talks to no server. Declared here so the
        /// global --server is not offered in this command's help (clap
        /// does not give a subcommand a global argument it declares).
        #[arg(long, hide = true)]
        server: Option<String>,
        /// Not used, as --server.
        #[arg(long, hide = true)]
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum JobCommand {
    /// Upload a job's module and inputs (only what the server lacks) and submit it.
    Submit {
        /// The job spec (TOML).
        spec: PathBuf,
        /// Your secret key (`peergrid keys new`) [default: the profile's,
        /// else researcher.key].
        #[arg(long, env = "PEERGRID_KEY")]
        key: Option<PathBuf>,
        /// The project's endorsement of your key (`peergrid-coordinator
        /// endorse`) [default: the profile's, else researcher.endorsement].
        #[arg(long, env = "PEERGRID_ENDORSEMENT")]
        endorsement: Option<PathBuf>,
        /// Print only the job's id (on standard output), nothing else.
        #[arg(long, short)]
        quiet: bool,
        /// Print the submitted job as JSON (its id, name, units and what
        /// was uploaded) instead of the id.
        #[arg(long, conflicts_with = "dry_run")]
        json: bool,
        /// Check the spec, the module and every input and print a summary;
        /// upload nothing and contact no server.
        #[arg(long)]
        dry_run: bool,
    },
    /// Units total, validated, in progress and failed.
    Status {
        /// The job's id.
        id: u64,
        /// Follow the job until it is finished (a bar with the rate and the
        /// time left on a terminal), then exit 0 if every unit validated,
        /// 4 if units failed, 3 if the job was cancelled.
        #[arg(long)]
        wait: bool,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every job on the server.
    List {
        /// Print the server's JSON (an array of job statuses).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: no more copies of its unfinished units go out, hosts
    /// running one stop at their next exchange, and its dataset keeps what
    /// validated. Needs the researcher token and the key that signed the job.
    Cancel {
        /// The job's id.
        id: u64,
        /// Your secret key: the one that signed the job [default: the
        /// profile's, else researcher.key].
        #[arg(long, env = "PEERGRID_KEY")]
        key: Option<PathBuf>,
        /// Your endorsement [default: the profile's, else
        /// researcher.endorsement].
        #[arg(long, env = "PEERGRID_ENDORSEMENT")]
        endorsement: Option<PathBuf>,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Why units failed: each failed unit's reason, last error and the end
    /// of its stderr; with UNIT, every error result of that unit.
    Logs {
        id: u64,
        unit: Option<u64>,
        /// Print the server's JSON (without UNIT: one failed unit per line).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ResultsCommand {
    /// Write a job's dataset, one row per validated unit, with provenance.
    Export {
        id: u64,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// With `--format csv`: one more column per top-level key of the
        /// outputs that are JSON objects (Parquet always has them).
        #[arg(long)]
        json_columns: bool,
        /// File to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
    /// Typed columns (the JSON outputs' keys among them); opens in
    /// pandas, polars and DuckDB.
    Parquet,
}

/// One line on a dataset's licence and where its citation is.
fn terms_note(job: &peergrid_proto::api::JobStatus, citation_url: &str) -> String {
    let license = match &job.terms.license {
        Some(l) => format!("licence: {l}"),
        None => "no licence declared: ask the researcher before reusing the data".into(),
    };
    printable(&format!("{license}; how to cite it: {citation_url}")).into_owned()
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        // Errors quote the server's words: print them escaped.
        eprintln!("peergrid: {}", printable(&format!("{e:#}")));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = profile::config_path();
    if let Command::Login { key, endorsement } = cli.command {
        let path = config.context("no config folder: set XDG_CONFIG_HOME or HOME")?;
        let reached = profile::login(&path, cli.server, cli.token, key, endorsement)?;
        match reached {
            Reached::Checked => eprintln!("saved your profile in {}", path.display()),
            Reached::Unreachable(why) => eprintln!(
                "saved your profile in {}, unchecked: {}",
                path.display(),
                printable(&why)
            ),
        }
        return Ok(());
    }
    // Making a key needs neither server nor profile.
    if let Command::Keys(KeysCommand::New { out, server, token }) = &cli.command {
        if server.is_some() || token.is_some() {
            bail!(
                "`peergrid keys new` makes a key on this machine and contacts no server: leave out --server and --token"
            );
        }
        let (secret, public) = new_key()?;
        peergrid_os::write_private(out, format!("{secret}\n").as_bytes()).with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                out.display()
            )
        })?;
        eprintln!(
            "wrote your secret key to {}; ask the project's operator to run\n  \
             peergrid-coordinator endorse --project-key PROJECT.key --name \"YOUR NAME\" --researcher {public} --out researcher.endorsement",
            out.display()
        );
        println!("{public}");
        return Ok(());
    }
    let profile = match &config {
        Some(path) => Profile::load(path)?,
        None => Profile::default(),
    };
    let (key, endorsement) = match &cli.command {
        Command::Job(
            JobCommand::Submit {
                key, endorsement, ..
            }
            | JobCommand::Cancel {
                key, endorsement, ..
            },
        ) => (key.clone(), endorsement.clone()),
        _ => (None, None),
    };
    let settings = Settings::resolve(cli.server, cli.token, key, endorsement, &profile);
    let client = Client::new(&server_url(&settings.server)?, settings.token.clone());
    match cli.command {
        Command::Verify { job, unit, json } => {
            let v = client.verify(job, unit)?;
            if json {
                println!("{}", printable_json(&serde_json::to_value(&v)?));
                if !v.matches {
                    std::process::exit(1);
                }
            } else if v.matches {
                println!(
                    "verified: unit {unit} of job {job} gives output {} with fuel {} ({})",
                    v.expected_output, v.got_fuel, v.engine
                );
            } else {
                bail!(
                    "MISMATCH for unit {unit} of job {job}: the dataset says output {} with fuel {}; \
                     this machine got {} with fuel {}{} ({})",
                    v.expected_output,
                    v.expected_fuel,
                    v.got_output.as_deref().unwrap_or("no output"),
                    v.got_fuel,
                    v.error.map(|e| format!(": {e}")).unwrap_or_default(),
                    v.engine
                );
            }
        }
        Command::Login { .. } | Command::Keys(_) => unreachable!("handled above"),
        Command::Run(args) => local_cli::run(args)?,
        Command::Job(JobCommand::Submit {
            spec,
            quiet,
            dry_run,
            json,
            ..
        }) => {
            if dry_run {
                return local_cli::dry_run(&spec, &settings.key, &settings.endorsement);
            }
            if settings.token.is_none() {
                bail!(
                    "submitting needs the researcher token: run `peergrid login --token …`, pass --token or set PEERGRID_TOKEN"
                );
            }
            let researcher = Researcher::load(&settings.key, &settings.endorsement)?;
            let job = prepare_job(&spec, &researcher)?;
            let say = |line: String| {
                if !quiet && !json {
                    eprintln!("{line}");
                }
            };
            if !job.skipped_folders.is_empty() {
                let names: Vec<String> = job
                    .skipped_folders
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                say(format!(
                    "skipped {} folder(s) in the inputs folder (only its files are work units): {}",
                    names.len(),
                    names.join(", ")
                ));
            }
            let stats = client.upload(&job.blobs)?;
            say(format!(
                "uploaded {} blobs ({} bytes); {} already on the server",
                stats.uploaded, stats.uploaded_bytes, stats.already_there
            ));
            let id = client.submit(&job.submission)?;
            say(format!(
                "submitted job {id} \"{}\" with {} units",
                job.submission.name,
                job.submission.units.len()
            ));
            if json {
                let said = serde_json::json!({
                    "job_id": id,
                    "name": job.submission.name,
                    "units": job.submission.units.len(),
                    "uploaded_blobs": stats.uploaded,
                    "uploaded_bytes": stats.uploaded_bytes,
                    "blobs_already_there": stats.already_there,
                });
                println!("{}", printable_json(&said));
            } else {
                println!("{id}");
            }
        }
        Command::Job(JobCommand::Status { id, wait, json }) => {
            let code = watch::status(&client, id, wait, json)?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Job(JobCommand::Cancel { id, json, .. }) => {
            let researcher = Researcher::load(&settings.key, &settings.endorsement)?;
            let done = client.cancel(id, &researcher)?;
            if json {
                println!("{}", printable_json(&serde_json::to_value(&done)?));
            } else if done.already {
                println!(
                    "job {id} was already cancelled ({} units cancelled, {} validated)",
                    done.cancelled, done.validated
                );
            } else {
                println!(
                    "job {id} cancelled: {} unfinished units will not run; the dataset keeps its {} validated rows",
                    done.cancelled, done.validated
                );
            }
        }
        Command::Job(JobCommand::Logs { id, unit, json }) => {
            logs::print(&client, id, unit, json)?;
        }
        Command::Job(JobCommand::List { json }) => {
            let jobs = client.jobs()?;
            if json {
                println!("{}", printable_json(&serde_json::to_value(&jobs)?));
            }
            for j in jobs.iter().filter(|_| !json) {
                println!("{}", watch::summary(j, None));
            }
        }
        Command::Results(ResultsCommand::Export {
            id,
            format,
            json_columns,
            out,
        }) => {
            let format = match (format, json_columns) {
                (Format::Jsonl, true) => anyhow::bail!(
                    "--json-columns goes with --format csv (Parquet always has the JSON columns)"
                ),
                (Format::Jsonl, false) => "jsonl",
                (Format::Csv, false) => "csv",
                (Format::Csv, true) => "csv_columns",
                (Format::Parquet, _) => "parquet",
            };
            match &out {
                Some(path) => {
                    let done = export::export_to_file(&client, id, format, path)?;
                    eprintln!(
                        "wrote {} bytes to {} (BLAKE3 {}, as the checksum manifest says)",
                        done.bytes,
                        path.display(),
                        done.blake3
                    );
                    // The terms travel in the file's metadata only for
                    // Parquet: say them here for every format.
                    if let Ok(job) = client.status(id) {
                        eprintln!("{}", terms_note(&job.status, &client.citation_url(id)));
                    }
                }
                None if format == "parquet" && std::io::stdout().is_terminal() => anyhow::bail!(
                    "Parquet is binary: give --out FILE, or redirect standard output to a file"
                ),
                None => {
                    let stdout = std::io::stdout();
                    let mut lock = stdout.lock();
                    client.export(id, format, &mut lock)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// `keys new` contacts no server, so its help offers no --server or
    /// --token; the other commands keep them.
    #[test]
    fn making_a_key_does_not_offer_server_flags() {
        let mut cli = Cli::command();
        cli.build();
        let keys = cli.find_subcommand_mut("keys").expect("keys");
        let help = keys
            .find_subcommand_mut("new")
            .expect("keys new")
            .render_long_help()
            .to_string();
        assert!(help.contains("--out"), "{help}");
        assert!(
            !help.contains("--server") && !help.contains("--token"),
            "{help}"
        );
        let job = cli.find_subcommand_mut("job").expect("job");
        let help = job
            .find_subcommand_mut("list")
            .expect("job list")
            .render_long_help()
            .to_string();
        assert!(
            help.contains("--server") && help.contains("--token"),
            "{help}"
        );
    }
}
