//! The volunteer's preferences: what share of the machine the grid may
//! use and when. Read from a TOML file (`worker.toml` in the platform's
//! config folder, or `--config PATH`), overridden by command-line flags,
//! shown by `peergrid-worker config`.
//!
//! The defaults follow the BOINC client's: suspend when other programs use
//! more than 25 % of the CPU, 50 % of RAM while the machine is in use and
//! 90 % when idle, no computing on battery, a checkpoint every 60 s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

/// File name of the preferences in the platform's config folder.
pub const CONFIG_FILE: &str = "worker.toml";

/// Every preference, with its default. The file may set any subset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preferences {
    /// Concurrent tasks; unset: `max_cores_percent` of the cores, but
    /// never all of them on a machine with more than one (at least one).
    pub cores: Option<usize>,
    /// At most this share of the cores runs tasks (1 to 100).
    pub max_cores_percent: u8,
    /// Duty cycle: each task runs this share of the time and sleeps the
    /// rest (1 to 100).
    pub cpu_time_percent: u8,
    /// Suspend computing while programs other than the grid use more than
    /// this share of the machine's CPU (1 to 100; 100 never suspends).
    pub suspend_cpu_percent: u8,
    /// Most RAM the grid's tasks may reserve while the machine is in use
    /// (other programs busy), as a share of the machine's RAM.
    pub memory_in_use_percent: u8,
    /// The same while the machine is idle.
    pub memory_idle_percent: u8,
    /// Most disk space the module caches (`modules/`, `compiled/`) keep, in MiB.
    pub disk_cache_mb: u64,
    /// Compute while the machine runs on battery.
    pub run_on_battery: bool,
    /// Daily windows of local time when computing is allowed, as
    /// `"HH:MM-HH:MM"` (a window may pass midnight), parsed when the file
    /// is read. Empty: any time.
    pub time_windows: Vec<TimeWindow>,
    /// Keep a task's checkpoint at most this often, in seconds.
    pub checkpoint_secs: u64,
    /// Tasks kept queued beyond the running ones, so a short outage of the
    /// coordinator does not idle the CPU; unset: one per task slot.
    pub work_buffer: Option<usize>,
    /// The volunteer's account name (empty: anonymous unless
    /// `account_key` is set).
    pub account: String,
    /// The account's key file (hex Ed25519 seed, made if missing); copy it
    /// to each of your machines to add their credit up under one account.
    /// Unset with an account name: `DATA/account.key`.
    pub account_key: Option<PathBuf>,
    /// Most memory one task may use, in MiB.
    pub max_task_memory_mb: Option<u64>,
    /// The host's name on the project's pages (empty: `host-` and the
    /// first 8 hex digits of its key; the machine's own hostname is never
    /// sent unless given here).
    pub name: String,
    /// The team the account joins (empty: none); the first account to
    /// name a team founds it. Signed with the account's attachment, so it
    /// needs an account: with no `account` or `account_key`, one is made.
    pub team: String,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            cores: None,
            max_cores_percent: 100,
            cpu_time_percent: 100,
            suspend_cpu_percent: 25,
            memory_in_use_percent: 50,
            memory_idle_percent: 90,
            disk_cache_mb: 2048,
            run_on_battery: false,
            time_windows: Vec::new(),
            checkpoint_secs: 60,
            work_buffer: None,
            account: String::new(),
            account_key: None,
            max_task_memory_mb: None,
            name: String::new(),
            team: String::new(),
        }
    }
}

/// Preferences given on the command line; each one set replaces the file's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// Preferences file (default: worker.toml in the platform's config
    /// folder, e.g. ~/.config/peergrid/worker.toml; `PEERGRID_CONFIG`).
    #[arg(long, env = "PEERGRID_CONFIG")]
    pub config: Option<PathBuf>,
    /// Concurrent tasks (default: all cores but one, at least one).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Use at most this % of the cores.
    #[arg(long, value_name = "PERCENT")]
    pub max_cores_percent: Option<u8>,
    /// Run tasks this % of the time (duty cycle).
    #[arg(long, value_name = "PERCENT")]
    pub cpu_time_percent: Option<u8>,
    /// Suspend while other programs use more than this % of the CPU.
    #[arg(long, value_name = "PERCENT")]
    pub suspend_cpu_percent: Option<u8>,
    /// RAM the grid may use while the machine is in use, in %.
    #[arg(long, value_name = "PERCENT")]
    pub memory_in_use_percent: Option<u8>,
    /// RAM the grid may use while the machine is idle, in %.
    #[arg(long, value_name = "PERCENT")]
    pub memory_idle_percent: Option<u8>,
    /// Disk space for the module caches, in MiB.
    #[arg(long, value_name = "MIB")]
    pub disk_cache_mb: Option<u64>,
    /// Compute on battery too (true or false).
    #[arg(long, value_name = "BOOL")]
    pub run_on_battery: Option<bool>,
    /// Allowed daily window of local time, HH:MM-HH:MM (repeatable).
    #[arg(long = "time-window", value_name = "HH:MM-HH:MM")]
    pub time_windows: Vec<TimeWindow>,
    /// Keep a task's checkpoint at most every this many seconds.
    #[arg(long, value_name = "SECS")]
    pub checkpoint_secs: Option<u64>,
    /// Tasks kept queued beyond the running ones.
    #[arg(long = "buffer-tasks", value_name = "N")]
    pub work_buffer: Option<usize>,
    /// Your volunteer account name: credit of all your hosts adds up under
    /// it on the project's leaderboard (default: anonymous).
    #[arg(long, env = "PEERGRID_ACCOUNT")]
    pub account: Option<String>,
    /// Your account's key file (default with --account: DATA/account.key,
    /// made on first start). The account *is* this key: copy that file to
    /// your other machines and name it here so their credit adds up under
    /// one account; keep it private, since whoever has it can attach
    /// hosts to your account.
    #[arg(long, env = "PEERGRID_ACCOUNT_KEY", value_name = "FILE")]
    pub account_key: Option<PathBuf>,
    /// Most memory one task may use, in MiB (a job asking for more gets
    /// this much; its module may then fail).
    #[arg(long, value_name = "MIB")]
    pub max_task_memory_mb: Option<u64>,
    /// This host's name on the project's pages (default: host- and 8 hex
    /// digits of its key; your machine's hostname is not sent).
    #[arg(long, env = "PEERGRID_HOST_NAME")]
    pub name: Option<String>,
    /// Your account's team on the project's leaderboard (the first to
    /// name a team founds it; makes an account if you have none).
    #[arg(long, env = "PEERGRID_TEAM")]
    pub team: Option<String>,
}

impl Overrides {
    /// The preferences these flags set, by their names in the file: a
    /// change of those in the file has no effect while the flags stand.
    pub fn given(&self) -> Vec<&'static str> {
        let set = [
            ("cores", self.cores.is_some()),
            ("max_cores_percent", self.max_cores_percent.is_some()),
            ("cpu_time_percent", self.cpu_time_percent.is_some()),
            ("suspend_cpu_percent", self.suspend_cpu_percent.is_some()),
            (
                "memory_in_use_percent",
                self.memory_in_use_percent.is_some(),
            ),
            ("memory_idle_percent", self.memory_idle_percent.is_some()),
            ("disk_cache_mb", self.disk_cache_mb.is_some()),
            ("run_on_battery", self.run_on_battery.is_some()),
            ("time_windows", !self.time_windows.is_empty()),
            ("checkpoint_secs", self.checkpoint_secs.is_some()),
            ("work_buffer", self.work_buffer.is_some()),
            ("account", self.account.is_some()),
            ("account_key", self.account_key.is_some()),
            ("name", self.name.is_some()),
            ("team", self.team.is_some()),
            ("max_task_memory_mb", self.max_task_memory_mb.is_some()),
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k)
            .collect()
    }
}

/// Preferences a running worker cannot take over: the greeting carries
/// them (the account, the host's name, the team), so they apply at its
/// next start.
pub const APPLY_AT_RESTART: [&str; 4] = ["account", "account_key", "name", "team"];

/// The text of a preferences file with `key` set to `value` (`None`:
/// removed), other keys and comments kept; checked as a whole, so the
/// error names a mistaken key or value. `value` is read as TOML (`50`,
/// `true`, `["22:00-06:00"]`) where it parses as such, else as a string;
/// `time_windows` also takes `22:00-06:00,08:00-09:00`.
pub fn edit_file(text: &str, key: &str, value: Option<&str>) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .context("the preferences file is not valid TOML; fix or remove it first")?;
    match value {
        None => {
            doc.remove(key);
        }
        Some(raw) => {
            let raw = raw.trim();
            let string_key = matches!(key, "account" | "account_key" | "name" | "team");
            let parsed = raw.parse::<toml_edit::Value>();
            let value: toml_edit::Value = if key == "time_windows" && !raw.starts_with('[') {
                raw.split(',')
                    .map(str::trim)
                    .filter(|w| !w.is_empty())
                    .collect::<toml_edit::Array>()
                    .into()
            } else {
                match parsed {
                    Ok(v) if !string_key || v.is_str() => v,
                    _ => raw.into(),
                }
            };
            doc[key] = toml_edit::value(value);
        }
    }
    let text = doc.to_string();
    Preferences::parse(&text)?;
    Ok(text)
}

/// The default preferences file: `worker.toml` in the platform's config
/// folder (`$XDG_CONFIG_HOME/peergrid` or `~/.config/peergrid` on Linux).
pub fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("peergrid").join(CONFIG_FILE))
}

impl Preferences {
    /// Reads the file at `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Preferences> {
        match std::fs::read_to_string(path) {
            Ok(text) => Preferences::parse(&text)
                .with_context(|| format!("reading preferences from {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Preferences::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Parses and checks the TOML text of a preferences file.
    pub fn parse(text: &str) -> Result<Preferences> {
        let prefs: Preferences = toml::from_str(text).context("not a valid preferences file")?;
        prefs.validate()?;
        Ok(prefs)
    }

    /// The file's preferences (from `--config` or the default path) with
    /// the flags applied; also returns the file it read, if any.
    pub fn resolve(overrides: &Overrides) -> Result<(Preferences, Option<PathBuf>)> {
        let path = overrides.config.clone().or_else(default_config_path);
        let base = match &path {
            Some(p) => Preferences::load(p)?,
            None => Preferences::default(),
        };
        let prefs = base.merge(overrides);
        prefs.validate()?;
        Ok((prefs, path))
    }

    /// These preferences with every flag that was given replacing its value.
    pub fn merge(mut self, o: &Overrides) -> Preferences {
        fn set<T: Clone>(slot: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *slot = v.clone();
            }
        }
        if o.cores.is_some() {
            self.cores = o.cores;
        }
        set(&mut self.max_cores_percent, &o.max_cores_percent);
        set(&mut self.cpu_time_percent, &o.cpu_time_percent);
        set(&mut self.suspend_cpu_percent, &o.suspend_cpu_percent);
        set(&mut self.memory_in_use_percent, &o.memory_in_use_percent);
        set(&mut self.memory_idle_percent, &o.memory_idle_percent);
        set(&mut self.disk_cache_mb, &o.disk_cache_mb);
        set(&mut self.run_on_battery, &o.run_on_battery);
        if !o.time_windows.is_empty() {
            self.time_windows = o.time_windows.clone();
        }
        set(&mut self.checkpoint_secs, &o.checkpoint_secs);
        if o.work_buffer.is_some() {
            self.work_buffer = o.work_buffer;
        }
        set(&mut self.account, &o.account);
        if o.account_key.is_some() {
            self.account_key = o.account_key.clone();
        }
        if o.max_task_memory_mb.is_some() {
            self.max_task_memory_mb = o.max_task_memory_mb;
        }
        set(&mut self.name, &o.name);
        set(&mut self.team, &o.team);
        self
    }

    /// Checks every value is in range; the message names the preference.
    pub fn validate(&self) -> Result<()> {
        use peergrid_proto::{limits, text::volunteer_name};
        volunteer_name("account name", &self.account, limits::MAX_ACCOUNT)
            .map_err(|e| anyhow::anyhow!("account: {e}"))?;
        volunteer_name("host name", &self.name, limits::MAX_HOST_NAME)
            .map_err(|e| anyhow::anyhow!("name: {e}"))?;
        volunteer_name("team name", &self.team, limits::MAX_TEAM)
            .map_err(|e| anyhow::anyhow!("team: {e}"))?;
        for (name, v) in [
            ("max_cores_percent", self.max_cores_percent),
            ("cpu_time_percent", self.cpu_time_percent),
            ("suspend_cpu_percent", self.suspend_cpu_percent),
            ("memory_in_use_percent", self.memory_in_use_percent),
            ("memory_idle_percent", self.memory_idle_percent),
        ] {
            if !(1..=100).contains(&v) {
                bail!("{name} = {v} is out of range; give a percentage from 1 to 100");
            }
        }
        if self.cores == Some(0) {
            bail!("cores = 0 would never compute; give at least 1");
        }
        if self.checkpoint_secs == 0 {
            bail!("checkpoint_secs must be at least 1");
        }
        Ok(())
    }

    /// Task slots on a machine with `cores` cores.
    pub fn slots(&self, cores: usize) -> usize {
        let slots = match self.cores {
            Some(n) => n,
            None => {
                let allowed = cores * self.max_cores_percent as usize / 100;
                // By default leave one core to the volunteer.
                let allowed = if self.max_cores_percent == 100 && cores > 1 {
                    cores - 1
                } else {
                    allowed
                };
                allowed.max(1)
            }
        };
        slots.clamp(1, crate::sandbox::MAX_CONCURRENT_TASKS)
    }

    /// Tasks to keep queued beyond the running ones.
    pub fn buffer(&self, slots: usize) -> usize {
        self.work_buffer
            .unwrap_or(slots)
            .min(peergrid_proto::limits::MAX_TASKS_PER_EXCHANGE as usize)
    }

    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_secs(self.checkpoint_secs)
    }

    /// What differs from `before`, one `key: old → new` line per
    /// preference (unset ones read `unset`), in the file's key order.
    pub fn differences(&self, before: &Preferences) -> Vec<String> {
        let table = |p: &Preferences| toml::Table::try_from(p).unwrap_or_default();
        let (old, new) = (table(before), table(self));
        let show =
            |v: Option<&toml::Value>| v.map_or_else(|| "unset".to_string(), |v| v.to_string());
        let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| old.get(*k) != new.get(*k))
            .map(|k| format!("{k}: {} → {}", show(old.get(k)), show(new.get(k))))
            .collect()
    }

    /// The preferences as the TOML of a preferences file.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot show: {e}\n"))
    }
}

/// A daily window of local time, `start` inclusive, `end` exclusive;
/// `start > end` passes midnight, `start == end` is the whole day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeWindow {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl std::str::FromStr for TimeWindow {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<TimeWindow> {
        let bad = || anyhow::anyhow!("time window {s:?} is not HH:MM-HH:MM (e.g. 22:00-07:30)");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let parse = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| bad());
        Ok(TimeWindow {
            start: parse(a)?,
            end: parse(b)?,
        })
    }
}

impl TryFrom<String> for TimeWindow {
    type Error = anyhow::Error;

    fn try_from(s: String) -> Result<TimeWindow> {
        s.parse()
    }
}

impl std::fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

impl From<TimeWindow> for String {
    fn from(w: TimeWindow) -> String {
        w.to_string()
    }
}

impl TimeWindow {
    pub fn contains(&self, t: NaiveTime) -> bool {
        match self.start.cmp(&self.end) {
            std::cmp::Ordering::Less => self.start <= t && t < self.end,
            std::cmp::Ordering::Greater => t >= self.start || t < self.end,
            std::cmp::Ordering::Equal => true,
        }
    }
}

/// Whether local time `t` falls in one of `windows` (no windows: always).
pub fn in_windows(windows: &[TimeWindow], t: NaiveTime) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn windows_within_a_day_and_past_midnight() {
        let day: TimeWindow = "09:00-17:30".parse().unwrap();
        assert!(day.contains(t(9, 0)) && day.contains(t(17, 29)));
        assert!(!day.contains(t(17, 30)) && !day.contains(t(8, 59)));
        let night: TimeWindow = "22:00-06:00".parse().unwrap();
        assert!(night.contains(t(23, 0)) && night.contains(t(0, 0)) && night.contains(t(5, 59)));
        assert!(!night.contains(t(6, 0)) && !night.contains(t(12, 0)));
        let all: TimeWindow = "00:00-00:00".parse().unwrap();
        assert!(all.contains(t(13, 37)));
        assert!(in_windows(&[], t(3, 0)));
        assert!(in_windows(&[day, night], t(23, 0)));
        assert!(!in_windows(&[day, night], t(7, 0)));
    }

    #[test]
    fn bad_windows_are_named() {
        for bad in ["9-17", "25:00-01:00", "09:00", "aa:bb-cc:dd"] {
            let e = bad.parse::<TimeWindow>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = Preferences::parse(
            "cpu_time_percent = 60\nsuspend_cpu_percent = 40\ntime_windows = [\"22:00-06:00\"]\n",
        )
        .unwrap();
        assert_eq!(file.cpu_time_percent, 60);
        assert_eq!(file.checkpoint_secs, 60, "unset keeps the default");
        let merged = file.merge(&Overrides {
            cpu_time_percent: Some(50),
            checkpoint_secs: Some(2),
            ..Overrides::default()
        });
        assert_eq!(merged.cpu_time_percent, 50);
        assert_eq!(merged.suspend_cpu_percent, 40, "not overridden");
        assert_eq!(merged.checkpoint_secs, 2);
        assert_eq!(
            merged.time_windows,
            vec!["22:00-06:00".parse::<TimeWindow>().unwrap()]
        );
        // What `config` prints reads back as the same preferences.
        assert_eq!(Preferences::parse(&merged.to_toml()).unwrap(), merged);
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let e = Preferences::parse("cpu_time_percent = 0").unwrap_err();
        assert!(format!("{e:#}").contains("cpu_time_percent"), "{e:#}");
        let e = Preferences::parse("cpu_percent = 50").unwrap_err();
        assert!(format!("{e:#}").contains("cpu_percent"), "{e:#}");
        let e = Preferences::parse("time_windows = [\"noon\"]").unwrap_err();
        assert!(format!("{e:#}").contains("noon"), "{e:#}");
    }

    #[test]
    fn host_name_and_team_are_checked_like_the_coordinator_does() {
        let p = Preferences::parse("name = \"Ada's laptop\"\nteam = \"Équipe\"\n").unwrap();
        assert_eq!(
            (p.name.as_str(), p.team.as_str()),
            ("Ada's laptop", "Équipe")
        );
        let merged = p.merge(&Overrides {
            name: Some("desk".into()),
            ..Overrides::default()
        });
        assert_eq!(
            (merged.name.as_str(), merged.team.as_str()),
            ("desk", "Équipe")
        );
        for (text, field) in [
            ("name = \"x\\u202Egnp\"", "name: the host name contains"),
            ("team = \"a\\nb\"", "team: the team name contains"),
            (
                "name = \"0123456789012345678901234567890123456789012345678901234567890123456789\"",
                "name: the host name is 70 bytes",
            ),
        ] {
            let e = Preferences::parse(text).unwrap_err();
            assert!(format!("{e:#}").contains(field), "{text}: {e:#}");
        }
    }

    #[test]
    fn slots_follow_cores_and_percent() {
        let p = Preferences::default();
        assert_eq!(p.slots(8), 7);
        assert_eq!(p.slots(1), 1);
        let half = Preferences {
            max_cores_percent: 50,
            ..Preferences::default()
        };
        assert_eq!(half.slots(8), 4);
        assert_eq!(half.slots(1), 1);
        let fixed = Preferences {
            cores: Some(3),
            ..Preferences::default()
        };
        assert_eq!(fixed.slots(8), 3);
        assert_eq!(p.buffer(4), 4);
    }

    #[test]
    fn config_set_edits_one_key_and_keeps_the_rest() {
        let file = "# my laptop\ncpu_time_percent = 60 # quiet fan\n";
        let text = edit_file(file, "suspend_cpu_percent", Some("40")).unwrap();
        assert!(
            text.contains("# my laptop") && text.contains("# quiet fan"),
            "{text}"
        );
        let p = Preferences::parse(&text).unwrap();
        assert_eq!((p.cpu_time_percent, p.suspend_cpu_percent), (60, 40));
        let text = edit_file(&text, "cpu_time_percent", Some("25")).unwrap();
        assert_eq!(Preferences::parse(&text).unwrap().cpu_time_percent, 25);
        let text = edit_file(&text, "cpu_time_percent", None).unwrap();
        assert_eq!(Preferences::parse(&text).unwrap().cpu_time_percent, 100);
        let text = edit_file("", "time_windows", Some("22:00-07:00, 12:00-13:00")).unwrap();
        assert_eq!(Preferences::parse(&text).unwrap().time_windows.len(), 2);
        let text = edit_file("", "account", Some("alice")).unwrap();
        assert_eq!(Preferences::parse(&text).unwrap().account, "alice");
        let text = edit_file("", "run_on_battery", Some("true")).unwrap();
        assert!(Preferences::parse(&text).unwrap().run_on_battery);
    }

    #[test]
    fn config_set_refuses_unknown_keys_and_bad_values_by_name() {
        for (key, value, named) in [
            ("cpu_percent", "50", "cpu_percent"),
            ("cpu_time_percent", "0", "cpu_time_percent"),
            ("cpu_time_percent", "lots", "cpu_time_percent"),
            ("time_windows", "noon", "noon"),
        ] {
            let e = edit_file("", key, Some(value)).unwrap_err();
            assert!(format!("{e:#}").contains(named), "{key}={value}: {e:#}");
        }
        let e = edit_file("cpu_time_percent = [", "cores", Some("2")).unwrap_err();
        assert!(format!("{e:#}").contains("not valid TOML"), "{e:#}");
    }

    #[test]
    fn differences_name_each_changed_preference() {
        let before = Preferences::default();
        let after = Preferences {
            cpu_time_percent: 50,
            cores: Some(2),
            ..Preferences::default()
        };
        assert_eq!(
            after.differences(&before),
            vec!["cores: unset → 2", "cpu_time_percent: 100 → 50"]
        );
        assert!(before.differences(&before).is_empty());
        let flags = Overrides {
            cores: Some(1),
            time_windows: vec!["22:00-06:00".parse().unwrap()],
            ..Overrides::default()
        };
        assert_eq!(flags.given(), vec!["cores", "time_windows"]);
    }
}
