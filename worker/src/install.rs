//! `peergrid-worker install` / `uninstall`: runs the worker as a systemd
//! service that starts at boot and restarts on failure: a system unit when
//! run as root, a user unit (`systemctl --user`) otherwise.
//!
//! The unit runs `peergrid-worker run` at the lowest CPU and I/O priority;
//! SIGTERM (systemd's stop) makes the worker checkpoint and exit.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use peergrid_proto::JoinString;

/// The unit's file name.
pub const UNIT_NAME: &str = "peergrid-worker.service";
/// The preferences file a system unit reads.
pub const SYSTEM_CONFIG: &str = "/etc/peergrid/worker.toml";

/// Where and how to install.
#[derive(Clone, Debug)]
pub struct Install {
    pub join: String,
    /// The worker's data folder (absolute).
    pub data: PathBuf,
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

impl Install {
    /// The unit file's text.
    pub fn unit_file(&self) -> String {
        let mut exec = vec![
            quote(&self.exe.to_string_lossy()),
            "run".into(),
            "--data".into(),
            quote(&self.data.to_string_lossy()),
            "--join".into(),
            quote(&self.join),
        ];
        if !self.user {
            exec.push("--config".into());
            exec.push(quote(SYSTEM_CONFIG));
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
        format!(
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
             # Spare CPU only: the lowest priorities.\n\
             Nice=19\n\
             IOSchedulingClass=idle\n\
             CPUSchedulingPolicy=idle\n\
             # SIGTERM makes the worker checkpoint its tasks and exit.\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec=30\n\
             Environment=PEERGRID_LOG=info\n\
             \n\
             [Install]\n\
             WantedBy={wanted_by}\n",
            exec = exec.join(" ")
        )
    }

    /// Writes the unit file; with `enable`, reloads systemd and enables and
    /// starts the service if systemctl can reach systemd. Returns the
    /// unit file's path.
    pub fn install(&self, enable: bool) -> Result<PathBuf> {
        self.join
            .parse::<JoinString>()
            .context("--join is not a valid join string")?;
        if !self.data.is_absolute() || !self.exe.is_absolute() {
            bail!("the data folder and the binary must be absolute paths");
        }
        std::fs::create_dir_all(&self.data)
            .with_context(|| format!("creating {}", self.data.display()))?;
        std::fs::create_dir_all(&self.unit_dir)
            .with_context(|| format!("creating {}", self.unit_dir.display()))?;
        let path = self.unit_dir.join(UNIT_NAME);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.unit_file())
            .with_context(|| format!("writing {}", tmp.display()))?;
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
        let install = Install {
            join: "peergrid://h:1#sha256:00&project=11".into(),
            data: "/var/lib/pg w".into(),
            unit_dir: "/tmp".into(),
            user: false,
            exe: "/usr/bin/peergrid-worker".into(),
            account: String::new(),
        };
        let unit = install.unit_file();
        assert!(unit.contains("ExecStart=\"/usr/bin/peergrid-worker\" run --data \"/var/lib/pg w\" --join \"peergrid://h:1#sha256:00&project=11\""), "{unit}");
        assert!(unit.contains("Restart=on-failure") && unit.contains("WantedBy=multi-user.target"));
        let user = Install {
            user: true,
            ..install
        }
        .unit_file();
        assert!(user.contains("WantedBy=default.target") && !user.contains("--config"));
    }
}
