//! The local control channel: `peergrid-worker pause`, `resume` and
//! `status` talk to the running daemon through `DATA/control.sock`, a Unix
//! socket only the data folder's owner can open (mode 0600), or on Windows
//! a named pipe named after the data folder that only its creator, the
//! administrators and the system may write to ([`Channel`]).
//!
//! One JSON line per request ([`ControlRequest`]) and one JSON line per
//! reply ([`Status`], or `{"error": …}`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// File name of the control socket in the data folder.
pub const SOCKET_FILE: &str = "control.sock";
/// Longest request line the daemon reads.
const MAX_REQUEST: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlRequest {
    Status,
    Pause,
    /// Pause for this many seconds, then resume by itself.
    PauseFor {
        secs: u64,
    },
    Resume,
    /// Stop the task of this unit (running or held) and give it back to
    /// the coordinator at the next exchange.
    Abort {
        unit: u64,
    },
    /// Finish the held tasks, fetch no more, exit once all are reported.
    NoMoreWork,
    /// Give back every held task, deliver finished results, then forget
    /// the project (its pinned key and the state) and exit.
    Detach,
    /// Read the preferences file again now and apply it (`config set`
    /// asks; the worker also looks at the file every 2 s).
    Reload,
}

/// What the daemon is doing, as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The coordinator's address.
    pub coordinator: String,
    /// `connected`, `connecting`, or `offline: <why>`.
    pub connection: String,
    /// A failure retrying cannot mend (wrong certificate fingerprint,
    /// ban, refused greeting, other protocol version) and what to do about
    /// it; the worker stops after a few in a row. None once connected.
    #[serde(default)]
    pub permanent_error: Option<String>,
    /// Why computing is suspended, if it is.
    pub suspended: Option<String>,
    pub paused_by_user: bool,
    /// Seconds until a `pause --for` ends by itself (None: no end set).
    #[serde(default)]
    pub pause_ends_in_secs: Option<u64>,
    pub slots: usize,
    pub cpu_time_percent: u8,
    /// The preferences file the worker reads and applies when it changes.
    #[serde(default)]
    pub preferences_file: Option<String>,
    /// Preferences set by flags on the worker's command line, which the
    /// file cannot change while it runs.
    #[serde(default)]
    pub set_by_flags: Vec<String>,
    /// `no more work` or `detaching`: the worker fetches nothing and exits
    /// once what it holds is settled. None: it runs on.
    #[serde(default)]
    pub winding_down: Option<String>,
    pub running: Vec<RunningTask>,
    /// Tasks held locally and waiting for a slot.
    pub queued: usize,
    /// Finished results the coordinator has not acknowledged yet.
    pub pending_uploads: u64,
    /// Tasks finished since local midnight.
    pub results_today: u64,
    /// Fuel of the successful results the coordinator acknowledged: the
    /// credit this host claimed. The coordinator grants it once a quorum
    /// of hosts agrees; the worker is not told, so this is a claim.
    pub claimed_credit_fuel: u64,
    /// The same for results finished in the last 24 hours: this host's
    /// claimed points per day.
    #[serde(default)]
    pub claimed_credit_fuel_last_day: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningTask {
    pub unit: u64,
    pub job: u64,
    /// What the module reported with the guest SDK's `progress` (None: it
    /// does not use the SDK).
    pub progress: Option<f64>,
    pub running_secs: u64,
    /// Seconds left at the pace so far (from `progress` and
    /// `running_secs`); None without progress.
    #[serde(default)]
    pub eta_secs: Option<u64>,
    /// Resumed from a checkpoint after a restart.
    pub resumed: bool,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "coordinator:      {} ({})",
            self.coordinator, self.connection
        )?;
        if let Some(e) = &self.permanent_error {
            writeln!(f, "permanent error:  {e}")?;
        }
        match (&self.suspended, self.pause_ends_in_secs) {
            (Some(why), Some(left)) => writeln!(
                f,
                "computing:        suspended: {why}; the pause ends by itself in {left} s"
            )?,
            (Some(why), None) => writeln!(f, "computing:        suspended: {why}")?,
            (None, _) => writeln!(
                f,
                "computing:        yes, {} slot(s) at {} % CPU time",
                self.slots, self.cpu_time_percent
            )?,
        }
        if let Some(w) = &self.winding_down {
            writeln!(f, "winding down:     {w}")?;
        }
        writeln!(f, "running tasks:    {}", self.running.len())?;
        for t in &self.running {
            let progress = t.progress.map_or_else(
                || "progress unknown".to_string(),
                |p| format!("{:5.1} %", p * 100.0),
            );
            let eta = t
                .eta_secs
                .map_or_else(String::new, |s| format!(", about {s} s left"));
            writeln!(
                f,
                "  unit {:>8} (job {}): {progress}, {} s{eta}{}",
                t.unit,
                t.job,
                t.running_secs,
                if t.resumed {
                    ", resumed from a checkpoint"
                } else {
                    ""
                }
            )?;
        }
        writeln!(f, "queued tasks:     {}", self.queued)?;
        writeln!(f, "pending uploads:  {}", self.pending_uploads)?;
        writeln!(f, "results today:    {}", self.results_today)?;
        writeln!(
            f,
            "claimed credit:   {} fuel (acknowledged results; granted once a quorum agrees)",
            self.claimed_credit_fuel
        )?;
        write!(
            f,
            "last 24 hours:    {} fuel claimed",
            self.claimed_credit_fuel_last_day
        )
    }
}

/// Parses a duration as `pause --for` takes it: a whole number with a unit,
/// `s`, `m`, `h` or `d`, or several (`1h30m`); a bare number is seconds.
/// (Twenty lines instead of a dependency.)
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 90s, 15m, 2h or 1h30m");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// The socket's path in data folder `data`.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join(SOCKET_FILE)
}

/// One platform's local channel between the running daemon and the
/// commands that steer it: a Unix socket in the data folder (mode 0600) on
/// Unix, a named pipe named after the data folder on Windows.
pub(crate) trait Channel: Sized + Send + 'static {
    /// One connection, as the daemon sees it.
    type Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// One connection, as a command sees it.
    type Client: std::io::Read + std::io::Write;
    /// Opens the channel of data folder `data`; refused when another
    /// daemon answers on it.
    fn bind(data: &Path) -> Result<Self>;
    /// Waits for the next connection.
    fn accept(&mut self) -> impl std::future::Future<Output = std::io::Result<Self::Conn>> + Send;
    /// Connects to the daemon on `data`, with reads that give up after
    /// `timeout`.
    fn connect(data: &Path, timeout: std::time::Duration) -> std::io::Result<Self::Client>;
}

#[cfg(unix)]
#[path = "control/unix.rs"]
mod platform;
#[cfg(windows)]
#[path = "control/windows.rs"]
mod platform;

/// Where data folder `data`'s channel lives, to say in messages.
pub fn channel_name(data: &Path) -> String {
    platform::name(data)
}

/// Answers requests on data folder `data`'s channel until the task is
/// dropped. `handle` runs each request against the daemon.
pub async fn serve(
    data: &Path,
    handle: Arc<dyn Fn(ControlRequest) -> Result<Status> + Send + Sync>,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut channel = platform::Local::bind(data)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(conn) = channel.accept().await else {
                continue;
            };
            tokio::spawn(answer(conn, handle.clone()));
        }
    }))
}

/// Reads one request line from `conn` (at most [`MAX_REQUEST`] bytes) and
/// writes the reply line.
async fn answer<C>(conn: C, handle: Arc<dyn Fn(ControlRequest) -> Result<Status> + Send + Sync>)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (read, mut write) = tokio::io::split(conn);
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let reply = match serde_json::from_str::<ControlRequest>(line.trim()) {
        Ok(req) => match handle(req) {
            Ok(status) => serde_json::to_string(&status),
            Err(e) => serde_json::to_string(&serde_json::json!({"error": format!("{e:#}")})),
        },
        Err(e) => {
            serde_json::to_string(&serde_json::json!({"error": format!("unknown request: {e}")}))
        }
    };
    if let Ok(mut reply) = reply {
        reply.push('\n');
        let _ = write.write_all(reply.as_bytes()).await;
        let _ = write.flush().await;
    }
}

/// Sends `req` to the daemon running on data folder `data`.
pub fn request(data: &Path, req: ControlRequest) -> Result<Status> {
    use std::io::{BufRead, BufReader, Write};
    let mut conn = platform::Local::connect(data, std::time::Duration::from_secs(10))
        .with_context(|| {
            format!(
                "no worker answers on {}; is `peergrid-worker run --data {}` running?",
                channel_name(data),
                data.display()
            )
        })?;
    let mut line = serde_json::to_string(&req)?;
    line.push('\n');
    conn.write_all(line.as_bytes())?;
    conn.flush()?;
    let mut reply = String::new();
    BufReader::new(conn)
        .read_line(&mut reply)
        .context("reading the worker's reply")?;
    let value: serde_json::Value =
        serde_json::from_str(&reply).context("the worker's reply is not JSON")?;
    if let Some(e) = value.get("error").and_then(|e| e.as_str()) {
        bail!("the worker refused: {e}");
    }
    serde_json::from_value(value).context("the worker's reply is not a status")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn durations_with_units_and_plain_seconds() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "h", "2 h", "2x", "1h30", "-5s", "99999999999999999999d"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not a duration"), "{bad}: {e}");
        }
    }
}
