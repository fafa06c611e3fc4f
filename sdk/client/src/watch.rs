//! `peergrid job status ID [--wait]`: one look at a job, or a watch until
//! it finishes, with a bar, the rate and an estimate of the time left on
//! a terminal and a line per change elsewhere. The exit code says how the
//! job ended, so scripts can wait on it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use peergrid_client::{Client, printable, printable_json};
use peergrid_proto::api::{JobDetail, JobStatus};

/// `--wait` ended on a job with failed units.
pub const EXIT_FAILED_UNITS: i32 = 4;
/// `--wait` ended on a cancelled job.
pub const EXIT_CANCELLED: i32 = 3;

/// One line about a job, with why its units wait when the server says;
/// the server's text in it is escaped.
pub fn summary(s: &JobStatus, waiting: Option<&str>) -> String {
    let line = format!(
        "job {} \"{}\": {} units, {} validated, {} in progress, {} pending, {} failed{}{}{}",
        s.id,
        s.name,
        s.units_total,
        s.validated,
        s.in_progress,
        s.pending,
        s.failed,
        if s.cancelled > 0 || s.cancelled_ms.is_some() {
            format!(", {} cancelled", s.cancelled)
        } else {
            String::new()
        },
        match (s.finished, s.cancelled_ms.is_some()) {
            (_, true) => " (cancelled)",
            (true, false) => " (finished)",
            (false, false) => "",
        },
        match waiting {
            Some(why) => format!("; {why}"),
            None => String::new(),
        }
    );
    printable(&line).into_owned()
}

/// Prints the job's status once, or with `wait` until it is finished;
/// returns the process's exit code (0, or when waiting
/// [`EXIT_FAILED_UNITS`] / [`EXIT_CANCELLED`]).
pub fn status(client: &Client, id: u64, wait: bool, json: bool) -> Result<i32> {
    let bar = wait && !json && std::io::stderr().is_terminal();
    let mut rate = Rate::default();
    let mut last_line = String::new();
    loop {
        let detail = client.status(id)?;
        let s = &detail.status;
        if json {
            println!("{}", printable_json(&serde_json::to_value(&detail)?));
        } else if bar && !s.finished {
            rate.observe(Instant::now(), done(s));
            draw(s, &rate);
        } else {
            let line = summary(s, detail.waiting.as_deref());
            // Waiting without a terminal: a line when something changed.
            if !wait || line != last_line || s.finished {
                if bar {
                    eprint!("\r\x1b[2K");
                }
                println!("{line}");
                if s.finished || !wait {
                    print_failed(&detail);
                }
            }
            last_line = line;
        }
        if !wait {
            return Ok(0);
        }
        if s.finished {
            return Ok(ending(s));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn print_failed(detail: &JobDetail) {
    for f in detail.failed_units.iter().take(20) {
        let line = format!("  failed unit {} ({}): {}", f.unit, f.name, f.reason);
        println!("{}", printable(&line));
    }
    if detail.status.failed > 0 {
        println!("  see why: peergrid job logs {} [UNIT]", detail.status.id);
    }
}

/// The exit code of a finished job.
fn ending(s: &JobStatus) -> i32 {
    if s.cancelled_ms.is_some() {
        EXIT_CANCELLED
    } else if s.failed > 0 {
        EXIT_FAILED_UNITS
    } else {
        0
    }
}

/// Units that are decided (validated or failed).
fn done(s: &JobStatus) -> u64 {
    s.validated.saturating_add(s.failed)
}

/// Units decided per second over the watch, from its first look.
#[derive(Default)]
struct Rate {
    first: Option<(Instant, u64)>,
    last: Option<(Instant, u64)>,
}

impl Rate {
    fn observe(&mut self, at: Instant, done: u64) {
        self.first.get_or_insert((at, done));
        self.last = Some((at, done));
    }

    /// Units per second, once a unit was decided during the watch.
    fn per_second(&self) -> Option<f64> {
        let ((t0, n0), (t1, n1)) = (self.first?, self.last?);
        let secs = t1.saturating_duration_since(t0).as_secs_f64();
        (n1 > n0 && secs > 0.0).then(|| (n1 - n0) as f64 / secs)
    }
}

/// The bar on stderr, drawn over itself.
fn draw(s: &JobStatus, rate: &Rate) {
    let line = bar_line(s, rate.per_second());
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{}", printable(&line));
    let _ = err.flush();
}

/// `[#####.....] 12/50 · 0.8 units/s · about 47 s left`, 30 cells wide.
fn bar_line(s: &JobStatus, per_second: Option<f64>) -> String {
    const WIDTH: u64 = 30;
    let total = s.units_total.max(1);
    let done = done(s).min(total);
    let filled = (done * WIDTH / total) as usize;
    let mut line = format!(
        "job {} [{}{}] {}/{} units",
        s.id,
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        done,
        s.units_total
    );
    if s.failed > 0 {
        line.push_str(&format!(" ({} failed)", s.failed));
    }
    match per_second {
        Some(r) => {
            let left = s.units_total.saturating_sub(done) as f64 / r;
            line.push_str(&format!(
                " · {r:.1} units/s · about {} left",
                duration(left)
            ));
        }
        None => line.push_str(" · measuring the rate"),
    }
    line
}

/// Seconds as "47 s", "3 min", "2 h 5 min".
fn duration(secs: f64) -> String {
    let secs = secs.round() as u64;
    match secs {
        0..=99 => format!("{secs} s"),
        100..=5999 => format!("{} min", secs.div_ceil(60)),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_proto::Hash;
    use peergrid_proto::spec::JobSettings;

    fn status(validated: u64, failed: u64, total: u64) -> JobStatus {
        JobStatus {
            id: 4,
            name: "pi".into(),
            module: Hash([0; 32]),
            researcher: "Ada".into(),
            created_ms: 0,
            settings: JobSettings::default(),
            units_total: total,
            validated,
            failed,
            in_progress: 0,
            pending: total - validated - failed,
            cancelled: 0,
            cancelled_ms: None,
            finished: validated + failed == total,
            terms: Default::default(),
        }
    }

    #[test]
    fn the_bar_shows_progress_rate_and_time_left() {
        let line = bar_line(&status(15, 0, 30), Some(1.5));
        assert_eq!(
            line,
            "job 4 [###############...............] 15/30 units · 1.5 units/s · about 10 s left"
        );
        let line = bar_line(&status(3, 1, 40), None);
        assert!(
            line.contains("4/40 units (1 failed) · measuring the rate"),
            "{line}"
        );
    }

    #[test]
    fn the_rate_counts_units_decided_during_the_watch() {
        let mut rate = Rate::default();
        let t0 = Instant::now();
        rate.observe(t0, 10);
        assert_eq!(rate.per_second(), None);
        rate.observe(t0 + Duration::from_secs(4), 18);
        assert_eq!(rate.per_second(), Some(2.0));
    }

    #[test]
    fn the_exit_code_says_how_the_job_ended() {
        assert_eq!(ending(&status(30, 0, 30)), 0);
        assert_eq!(ending(&status(29, 1, 30)), EXIT_FAILED_UNITS);
        let mut cancelled = status(10, 0, 30);
        cancelled.cancelled = 20;
        cancelled.cancelled_ms = Some(5);
        assert_eq!(ending(&cancelled), EXIT_CANCELLED);
        assert!(summary(&cancelled, None).ends_with("20 cancelled (cancelled)"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(47.2), "47 s");
        assert_eq!(duration(170.0), "3 min");
        assert_eq!(duration(7500.0), "2 h 5 min");
    }
}
