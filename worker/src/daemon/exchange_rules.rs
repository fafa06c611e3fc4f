//! The uplink's decisions, sans-IO: how much work to ask for, which held
//! reports ride on one exchange, what to do before and after an exchange
//! (exchange, idle, or stop draining), how long to back off between
//! connection attempts, and which failures are permanent (a wrong
//! certificate, a ban) rather than network blips, and when to give up on
//! them.
//!
//! No clock, no socket, no database: counts and durations come in as
//! arguments and decisions go out as values, so `Uplink` (the async
//! shell) only reads the state, asks here, and acts.

use std::time::Duration;

use peergrid_proto::limits::MAX_TASKS_PER_EXCHANGE;
use peergrid_proto::wire::{ErrorCode, Outcome, TaskReport};

use crate::net::NetError;

/// Unsettled reports allowed per task the worker holds (slots plus work
/// buffer): past `UNSETTLED_PER_HELD × target` the worker asks for no new
/// work until the coordinator settles some, so a coordinator that never
/// acknowledges cannot make results pile up without bound.
pub const UNSETTLED_PER_HELD: usize = 2;
/// First wait after a failed connection attempt, and the wait again after
/// a connection succeeded.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest backoff between connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long the uplink idles when it has nothing to send and wants no
/// work, unless woken (a finished task, a freed slot, shutdown).
pub const IDLE_WAIT: Duration = Duration::from_secs(5);
/// Shortest wait after an exchange that brought nothing: the coordinator's
/// `retry_after_ms` is raised to this.
pub const MIN_RETRY: Duration = Duration::from_millis(200);
/// Bytes counted for a report on top of its output or error text.
const REPORT_OVERHEAD: usize = 64;

/// How many tasks to ask for: enough to hold `target` (slots plus work
/// buffer), at most [`MAX_TASKS_PER_EXCHANGE`]; none while draining, or
/// while `unsettled` reports (finished, not yet acknowledged or rejected)
/// reach `UNSETTLED_PER_HELD × target`. Reports are still sent then.
pub fn work_wanted(target: usize, held: usize, unsettled: u64, draining: bool) -> u32 {
    let cap = target.saturating_mul(UNSETTLED_PER_HELD) as u64;
    if draining || unsettled >= cap {
        return 0;
    }
    target
        .saturating_sub(held)
        .min(MAX_TASKS_PER_EXCHANGE as usize) as u32
}

/// Whether the worker asks for no work only because too many reports are
/// unsettled (it holds fewer than `target` and is not draining): worth a
/// line in the log.
pub fn held_back(want: u32, held: usize, target: usize, draining: bool) -> bool {
    want == 0 && !draining && held < target
}

/// The longest prefix of `reports` whose outputs (or error texts), with a
/// small overhead each, fit in `budget` bytes; the rest go in later
/// exchanges.
pub fn reports_that_fit(reports: Vec<TaskReport>, mut budget: usize) -> Vec<TaskReport> {
    reports
        .into_iter()
        .take_while(|r| {
            let size = match &r.outcome {
                Outcome::Success(out) => out.len(),
                Outcome::Error(e) => e.len(),
            } + REPORT_OVERHEAD;
            let fits = size <= budget;
            budget = budget.saturating_sub(size);
            fits
        })
        .collect()
}

/// What the uplink does before an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Before {
    /// Send the reports and returns, ask for the work wanted.
    Exchange,
    /// Nothing to say: wait this long (or until woken), then look again.
    Idle(Duration),
    /// Draining and nothing left to deliver: the uplink is done.
    Done,
}

/// Before an exchange: with `reports` held reports and `returns` tasks
/// to give back ready to send and `want` tasks wanted.
pub fn before_exchange(reports: usize, returns: usize, want: u32, draining: bool) -> Before {
    if reports > 0 || returns > 0 || want > 0 {
        Before::Exchange
    } else if draining {
        Before::Done
    } else {
        Before::Idle(IDLE_WAIT)
    }
}

/// What one exchange did, as the uplink's next step needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchanged {
    /// Reports sent.
    pub sent: usize,
    /// Tasks asked for.
    pub want: u32,
    /// Tasks received (after truncation to `want`).
    pub got: usize,
    /// Reports the coordinator settled: accepted plus rejected.
    pub settled: usize,
    /// The coordinator's `retry_after_ms`.
    pub retry_after_ms: u32,
}

impl Exchanged {
    /// Something moved: a task arrived or a report was settled.
    pub fn progressed(&self) -> bool {
        self.got > 0 || self.settled > 0
    }
}

/// Whether draining ends after this exchange: it sent no report (so every
/// report is settled), or it moved nothing (a coordinator that does not
/// settle now will not before the farewell: give up, the reports stay held
/// for the next start).
pub fn drain_done(draining: bool, exchanged: &Exchanged) -> bool {
    draining && (exchanged.sent == 0 || !exchanged.progressed())
}

/// How long to wait after an exchange before the next, or `None` to go on
/// at once (more to send, or the work that came may not be all there is).
/// It waits when nothing settled and nothing came (e.g. a restarted
/// coordinator leaves reports on units it has not loaded yet
/// unacknowledged), or when work was wanted, none came and no report
/// waits: at least [`MIN_RETRY`], or the coordinator's `retry_after_ms`.
pub fn wait_after(exchanged: &Exchanged, more_to_send: bool) -> Option<Duration> {
    let starved = exchanged.got == 0 && exchanged.want > 0 && !more_to_send;
    (!exchanged.progressed() || starved)
        .then(|| Duration::from_millis(exchanged.retry_after_ms as u64).max(MIN_RETRY))
}

/// The wait between connection attempts: [`FIRST_BACKOFF`], doubling
/// after each failure up to [`MAX_BACKOFF`], back to the first after a
/// connection succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// An attempt failed: how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }

    /// A connection succeeded: the next failure waits the first backoff.
    pub fn connected(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

/// Whether the worker runs on or winds down (`no-more-work`, `detach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Winding {
    /// Fetch work and compute for ever.
    RunOn,
    /// Fetch nothing more; run the held tasks; exit once all are reported.
    NoMoreWork,
    /// Fetch nothing more; give back every held task; exit once the
    /// returns and finished results are settled, then forget the project.
    Detach,
}

impl Winding {
    /// What `status` shows, or `None` when running on.
    pub fn describe(self) -> Option<&'static str> {
        match self {
            Winding::RunOn => None,
            Winding::NoMoreWork => Some("no more work: exits once the held tasks are reported"),
            Winding::Detach => Some(
                "detaching: exits once held work is given back and results are reported, then forgets the project",
            ),
        }
    }

    /// Whether to fetch no new work.
    pub fn fetches_nothing(self) -> bool {
        self != Winding::RunOn
    }

    /// Whether held tasks are given back rather than run.
    pub fn gives_back(self) -> bool {
        self == Winding::Detach
    }
}

/// Whether a winding-down worker is done and may exit: nothing held,
/// nothing running, every report and every return settled.
pub fn wound_down(
    winding: Winding,
    held: usize,
    running: usize,
    reports: u64,
    returns: usize,
) -> bool {
    winding != Winding::RunOn && held == 0 && running == 0 && reports == 0 && returns == 0
}

/// A failure that retrying cannot mend: the volunteer (or the operator)
/// has to act, and the worker says what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permanent {
    /// The coordinator's certificate is not the one the join string pins:
    /// a stale or mistyped join string, a coordinator that made a new
    /// certificate, or someone in the middle.
    WrongCertificate,
    /// The coordinator does not accept this host's greeting (a bad
    /// signature, or a clock far off).
    Unauthenticated,
    /// The operator banned this host or its account.
    Banned,
    /// The coordinator speaks another protocol version (it refused the
    /// worker's ALPN).
    OtherVersion,
    /// The join string names another project key than the one this data
    /// folder joined with (found at start, before any connection).
    OtherProject,
}

impl Permanent {
    /// What the volunteer should do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Permanent::WrongCertificate => {
                "get a fresh join string from the project (and check that its address is the project's coordinator)"
            }
            Permanent::Unauthenticated => {
                "check that this computer's clock is right, then ask the project's operator"
            }
            Permanent::Banned => "ask the project's operator why, or join another project",
            Permanent::OtherVersion => "install the peergrid-worker version the project asks for",
            Permanent::OtherProject => {
                "use another --data folder to join another project, or `peergrid-worker detach` this one first"
            }
        }
    }
}

/// What a failed connection attempt was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A network blip or a busy coordinator (timeout, refused, reset,
    /// lost packets, `Busy`, `Internal`): retry with backoff, forever.
    Transient,
    /// Retrying cannot help; see [`GiveUp`].
    Permanent(Permanent),
}

/// The TLS alert a QUIC server closes with when no ALPN protocol is shared
/// (RFC 8446 `no_application_protocol`, as a QUIC crypto error).
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// Tells permanent failures from transient ones.
pub fn classify(error: &NetError) -> Failure {
    use quinn::ConnectionError;
    let permanent = match error {
        NetError::CertificateMismatch { .. } => Some(Permanent::WrongCertificate),
        NetError::Refused(w) => match w.code {
            // A clock that is off mends itself (a machine without a
            // real-time clock boots with a wrong one until NTP syncs).
            ErrorCode::Unauthenticated if w.message.contains("clock") => None,
            ErrorCode::Unauthenticated => Some(Permanent::Unauthenticated),
            ErrorCode::Banned => Some(Permanent::Banned),
            _ => None,
        },
        NetError::Connect(ConnectionError::ConnectionClosed(close))
            if close.error_code == quinn::TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL) =>
        {
            Some(Permanent::OtherVersion)
        }
        _ => None,
    };
    permanent.map_or(Failure::Transient, Failure::Permanent)
}

/// Connection attempts in a row that fail permanently before the worker
/// gives up. More than one, because a coordinator moving to a new machine
/// (or a new certificate) may answer with the old one for a moment while
/// its address changes over; few, because a volunteer staring at
/// "connecting" for hours learns nothing. With the backoff this is about a
/// second of retrying.
pub const PERMANENT_ATTEMPTS: u32 = 3;

/// Counts permanent failures in a row; any success or transient failure
/// starts the count again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GiveUp {
    in_a_row: u32,
}

impl GiveUp {
    /// A connection attempt failed with `failure`: whether to stop now.
    pub fn failed(&mut self, failure: Failure) -> bool {
        match failure {
            Failure::Transient => self.in_a_row = 0,
            Failure::Permanent(_) => self.in_a_row += 1,
        }
        self.in_a_row >= PERMANENT_ATTEMPTS
    }

    /// A connection succeeded.
    pub fn connected(&mut self) {
        self.in_a_row = 0;
    }
}

/// The worker stopped because of a permanent failure: `run` exits with
/// [`FatalStop::EXIT_CODE`] and this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {}", .cause.advice())]
pub struct FatalStop {
    pub cause: Permanent,
    /// What happened, as the error said it.
    pub what: String,
}

impl FatalStop {
    /// `EX_CONFIG` (sysexits.h): the service unit does not restart on it.
    pub const EXIT_CODE: i32 = 78;
}

#[cfg(test)]
mod tests;
