//! `peergrid-worker install` / `uninstall`: runs the worker as a systemd
//! service that starts at boot and restarts on failure: a system unit when
//! run as root, a user unit (`systemctl --user`) otherwise.
//!
//! The unit runs `peergrid-worker run` at the lowest CPU and I/O priority;
//! SIGTERM (systemd's stop) makes the worker checkpoint and exit. The
//! system unit runs it as a dynamic unprivileged user (`DynamicUser=yes`)
//! whose only writable folder is its state folder under `/var/lib`, with
//! the volunteer's memory cap and the sandboxing settings the worker
//! tolerates, so a sandbox escape is not root.
//!
//! The unit file is written from the parsed join string (its canonical
//! form), never from the volunteer's raw argument.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use peergrid_proto::JoinString;

/// The unit's file name.
pub const UNIT_NAME: &str = "peergrid-worker.service";
/// The preferences file a system unit reads.
pub const SYSTEM_CONFIG: &str = "/etc/peergrid/worker.toml";

/// Where systemd keeps system services' state (`StateDirectory=`).
const STATE_ROOT: &str = "/var/lib";

/// Where and how to install.
#[derive(Clone, Debug)]
pub struct Install {
    /// Parsed, so the unit holds its canonical form: nothing of the raw
    /// argument (a line break, a quote) reaches the unit file.
    pub join: JoinString,
    /// The worker's data folder (absolute). For a system unit it must be
    /// a folder under `/var/lib`: systemd creates it for the service's
    /// dynamic user (`StateDirectory=`).
    pub data: PathBuf,
    /// The preferences file the unit's worker reads (`--config`); for a
    /// system unit `None` means [`SYSTEM_CONFIG`].
    pub config: Option<PathBuf>,
    /// `MemoryMax=` in % of the machine's RAM: the larger of the
    /// volunteer's two memory preferences, so the kernel holds the grid to
    /// it even if the worker's own accounting is wrong.
    pub memory_max_percent: u8,
    /// The folder the unit file goes to.
    pub unit_dir: PathBuf,
    /// A user unit (`systemctl --user`) rather than a system unit.
    pub user: bool,
    /// The `peergrid-worker` binary the unit runs (absolute).
    pub exe: PathBuf,
    /// Volunteer account name (empty: anonymous).
    pub account: String,
}

/// Whether this process runs as root (then a system unit is installed).
pub fn is_root() -> bool {
    // The effective user of this process, as the kernel reports it.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The default unit folder: `/etc/systemd/system`, or the user's
/// `~/.config/systemd/user`.
pub fn default_unit_dir(user: bool) -> Result<PathBuf> {
    if !user {
        return Ok(PathBuf::from("/etc/systemd/system"));
    }
    dirs::config_dir()
        .map(|d| d.join("systemd/user"))
        .context("cannot find your config folder; give --unit-dir")
}

/// The default data folder: `/var/lib/peergrid-worker`, or the user's
/// `~/.local/share/peergrid-worker`.
pub fn default_data_dir(user: bool) -> Result<PathBuf> {
    if !user {
        return Ok(PathBuf::from("/var/lib/peergrid-worker"));
    }
    dirs::data_local_dir()
        .map(|d| d.join("peergrid-worker"))
        .context("cannot find your data folder; give --data")
}

/// One argument quoted for a unit file's `ExecStart=`: in double quotes,
/// with `\` and `"` escaped, `%` (specifiers) and `$` (variables) doubled.
fn quote(arg: &str) -> String {
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Hardening of the system unit: what the worker (QUIC and a Unix control
/// socket, wasmtime's JIT, reading `/proc` and `/sys` for the governor)
/// still runs under. `MemoryDenyWriteExecute=` is absent: wasmtime writes
/// the machine code it compiles.
const SYSTEM_HARDENING: &str = "\
# An unprivileged user of its own; writable: only its state folder.
DynamicUser=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0077
";

impl Install {
    /// For a system unit, the data folder relative to `/var/lib`: the
    /// unit's `StateDirectory=`.
    fn state_directory(&self) -> Result<String> {
        let relative = self
            .data
            .strip_prefix(STATE_ROOT)
            .ok()
            .map(|r| r.to_string_lossy().into_owned())
            .filter(|r| {
                !r.is_empty()
                    && r.split('/').all(|part| {
                        !part.is_empty()
                            && part != "."
                            && part != ".."
                            && part
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    })
            });
        relative.with_context(|| {
            format!(
                "a system unit keeps its data in a folder under {STATE_ROOT} that systemd makes for \
                 the service's own user; give --data {STATE_ROOT}/NAME (letters, digits, - _ .) \
                 instead of {}, or install a user unit with --user",
                self.data.display()
            )
        })
    }

    /// The unit file's text.
    pub fn unit_file(&self) -> Result<String> {
        let mut exec = vec![quote(&self.exe.to_string_lossy()), "run".into()];
        let state = if self.user {
            // A user unit runs as the volunteer: the folder is named.
            exec.extend(["--data".into(), quote(&self.data.to_string_lossy())]);
            None
        } else {
            // systemd hands the folder it made over as STATE_DIRECTORY,
            // which `run` reads when --data is absent.
            Some(self.state_directory()?)
        };
        exec.extend(["--join".into(), quote(&self.join.to_string())]);
        match (&self.config, self.user) {
            (Some(config), _) => {
                exec.extend(["--config".into(), quote(&config.to_string_lossy())]);
            }
            (None, false) => exec.extend(["--config".into(), quote(SYSTEM_CONFIG)]),
            (None, true) => {}
        }
        if !self.account.is_empty() {
            exec.push("--account".into());
            exec.push(quote(&self.account));
        }
        let (wanted_by, after) = if self.user {
            ("default.target", "")
        } else {
            (
                "multi-user.target",
                "After=network-online.target\nWants=network-online.target\n",
            )
        };
        let hardening = match &state {
            Some(state) => format!("{SYSTEM_HARDENING}StateDirectory={state}\n"),
            None => String::new(),
        };
        Ok(format!(
            "# Written by `peergrid-worker install`; remove with `peergrid-worker uninstall`.\n\
             [Unit]\n\
             Description=peergrid volunteer worker (donates spare CPU)\n\
             {after}\
             \n\
             [Service]\n\
             Type=simple\n\
             ExecStart={exec}\n\
             Restart=on-failure\n\
             RestartSec=10\n\
             # A wrong join string or a ban: restarting cannot mend it.\n\
             RestartPreventExitStatus={fatal}\n\
             # Spare CPU only: the lowest priorities.\n\
             Nice=19\n\
             IOSchedulingClass=idle\n\
             CPUSchedulingPolicy=idle\n\
             # SIGTERM makes the worker checkpoint its tasks and exit.\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec=30\n\
             Environment=PEERGRID_LOG=info\n\
             # The volunteer's memory preference, enforced by the kernel.\n\
             MemoryMax={memory}%\n\
             {hardening}\
             \n\
             [Install]\n\
             WantedBy={wanted_by}\n",
            exec = exec.join(" "),
            memory = self.memory_max_percent.clamp(1, 100),
            fatal = crate::daemon::FatalStop::EXIT_CODE,
        ))
    }

    /// Writes the unit file; with `enable`, reloads systemd and enables and
    /// starts the service if systemctl can reach systemd. Returns the
    /// unit file's path.
    pub fn install(&self, enable: bool) -> Result<PathBuf> {
        if !self.data.is_absolute() || !self.exe.is_absolute() {
            bail!("the data folder and the binary must be absolute paths");
        }
        // Everything is checked before anything is written.
        let text = self.unit_file()?;
        if self.user {
            // A system unit's folder is made by systemd, owned by its user.
            std::fs::create_dir_all(&self.data)
                .with_context(|| format!("creating {}", self.data.display()))?;
        }
        std::fs::create_dir_all(&self.unit_dir)
            .with_context(|| format!("creating {}", self.unit_dir.display()))?;
        let path = self.unit_dir.join(UNIT_NAME);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        if enable {
            if systemd_reachable(self.user) {
                systemctl(self.user, &["daemon-reload"])?;
                systemctl(self.user, &["enable", "--now", UNIT_NAME])?;
            } else {
                tracing::warn!(
                    "systemd is not reachable here; enable the service later with `systemctl {}enable --now {UNIT_NAME}`",
                    if self.user { "--user " } else { "" }
                );
            }
        }
        Ok(path)
    }
}

/// Stops and disables the service (if systemd is reachable and `disable`)
/// and removes its unit file from `unit_dir`. The data folder stays.
/// Returns the removed file's path, or `None` if there was none.
pub fn uninstall(unit_dir: &Path, user: bool, disable: bool) -> Result<Option<PathBuf>> {
    let path = unit_dir.join(UNIT_NAME);
    if !path.exists() {
        return Ok(None);
    }
    if disable && systemd_reachable(user) {
        // Already stopped or disabled is fine.
        let _ = systemctl(user, &["disable", "--now", UNIT_NAME]);
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    if disable && systemd_reachable(user) {
        systemctl(user, &["daemon-reload"])?;
    }
    Ok(Some(path))
}

/// Whether systemctl can talk to a running systemd (not so in most
/// containers, or for a user without a login session).
fn systemd_reachable(user: bool) -> bool {
    if !user {
        return Path::new("/run/systemd/system").is_dir();
    }
    Command::new("systemctl")
        .args(["--user", "show-environment"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn systemctl(user: bool, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("systemctl");
    if user {
        cmd.arg("--user");
    }
    let out = cmd.args(args).output().context("running systemctl")?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_quotes_what_systemd_would_expand() {
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("50%$HOME\"\\"), "\"50%%$$HOME\\\"\\\\\"");
        let join: JoinString = format!(
            "peergrid://h:1#sha256:{}&project={}",
            "0".repeat(64),
            "1".repeat(64)
        )
        .parse()
        .unwrap();
        let install = Install {
            join: join.clone(),
            data: "/var/lib/pg-w".into(),
            config: None,
            memory_max_percent: 80,
            unit_dir: "/tmp".into(),
            user: false,
            exe: "/usr/bin/peer grid/worker".into(),
            account: String::new(),
        };
        let unit = install.unit_file().unwrap();
        assert!(unit.contains(&format!("ExecStart=\"/usr/bin/peer grid/worker\" run --join \"{join}\" --config \"/etc/peergrid/worker.toml\"")), "{unit}");
        assert!(unit.contains("Restart=on-failure") && unit.contains("WantedBy=multi-user.target"));
        assert!(unit.contains("\nRestartPreventExitStatus=78\n"), "{unit}");
        assert!(
            unit.contains("\nStateDirectory=pg-w\n") && unit.contains("\nMemoryMax=80%\n"),
            "{unit}"
        );
        let user = Install {
            user: true,
            data: "/home/v/pg w".into(),
            ..install.clone()
        }
        .unit_file()
        .unwrap();
        assert!(
            user.contains("run --data \"/home/v/pg w\" --join"),
            "{user}"
        );
        assert!(user.contains("WantedBy=default.target") && !user.contains("--config"));
        assert!(!user.contains("DynamicUser") && !user.contains("StateDirectory"));
    }

    #[test]
    fn a_system_unit_keeps_its_data_under_var_lib() {
        let install = Install {
            join: format!(
                "peergrid://h:1#sha256:{}&project={}",
                "0".repeat(64),
                "1".repeat(64)
            )
            .parse()
            .unwrap(),
            data: "/var/lib/peergrid-worker".into(),
            config: None,
            memory_max_percent: 90,
            unit_dir: "/tmp".into(),
            user: false,
            exe: "/usr/bin/peergrid-worker".into(),
            account: String::new(),
        };
        assert!(
            install
                .unit_file()
                .unwrap()
                .contains("\nStateDirectory=peergrid-worker\n")
        );
        for data in [
            "/srv/peergrid",
            "/var/lib",
            "/var/lib/../etc",
            "/var/lib/a b",
            "/var/libx/y",
        ] {
            let err = Install {
                data: data.into(),
                ..install.clone()
            }
            .unit_file()
            .unwrap_err();
            assert!(
                err.to_string().contains("--data /var/lib/NAME"),
                "{data}: {err}"
            );
        }
    }
}
