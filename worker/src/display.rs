//! Live progress bars for `run` in the foreground on a terminal: one line
//! for the worker (connection, suspension, counts) and one bar per running
//! task, refreshed twice a second from the same [`Status`] the control
//! socket serves. Log lines print above the bars ([`LogAboveBars`]).
//! Without a terminal the worker logs plain lines instead.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
pub use indicatif::MultiProgress;
use indicatif::{ProgressBar, ProgressStyle};

use crate::control::Status;

/// A `tracing` writer that prints each log line above the progress bars
/// (hiding them while it writes), so lines and bars do not garble.
#[derive(Clone)]
pub struct LogAboveBars(pub MultiProgress);

impl Write for LogAboveBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogAboveBars {
    type Writer = LogAboveBars;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Draws the bars on `multi` until the returned task is aborted.
pub fn spawn(
    multi: MultiProgress,
    status: Arc<dyn Fn() -> Result<Status> + Send + Sync>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let bar_style = ProgressStyle::with_template(
            "  unit {prefix:>8} [{bar:30}] {percent:>3}% {elapsed_precise} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let mut bars: BTreeMap<u64, ProgressBar> = BTreeMap::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            ticker.tick().await;
            let Ok(s) = status() else { continue };
            let state = match &s.suspended {
                Some(why) => format!("suspended: {why}"),
                None => "computing".to_string(),
            };
            header.set_message(format!(
                "{} ({}) | {state} | {} queued, {} to upload, {} today, {} fuel claimed",
                s.coordinator,
                s.connection,
                s.queued,
                s.pending_uploads,
                s.results_today,
                s.claimed_credit_fuel
            ));
            header.tick();
            bars.retain(|unit, bar| {
                let alive = s.running.iter().any(|t| t.unit == *unit);
                if !alive {
                    bar.finish_and_clear();
                    multi.remove(bar);
                }
                alive
            });
            for t in &s.running {
                let bar = bars.entry(t.unit).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(1000));
                    bar.set_style(bar_style.clone());
                    bar.set_prefix(t.unit.to_string());
                    bar
                });
                match (t.progress, t.eta_secs) {
                    (Some(p), eta) => {
                        bar.set_position((p * 1000.0) as u64);
                        if let Some(eta) = eta {
                            bar.set_message(format!("~{eta} s left"));
                        }
                    }
                    (None, _) => bar.set_message("(no progress reported)"),
                }
                if t.resumed {
                    bar.set_message("resumed");
                }
            }
        }
    })
}
