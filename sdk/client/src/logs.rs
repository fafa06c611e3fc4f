//! `peergrid job logs ID [UNIT]`: why units failed, from
//! `GET /api/v1/jobs/{id}/logs` (every failed unit, page by page, with its
//! last error and the end of its stderr) and `.../logs/{unit}` (every error
//! result of one unit). A worker's and a module's words are escaped line by
//! line, so they cannot drive the terminal but stay readable.

use anyhow::Result;
use peergrid_client::{Client, printable, printable_json};
use peergrid_proto::api::{ErrorLog, FailedUnitLog, UnitLogs};

/// Prints a job's failed units, or with `unit` that unit's error results;
/// `json` prints the server's JSON instead (one failed unit per line).
pub fn print(client: &Client, job: u64, unit: Option<u64>, json: bool) -> Result<()> {
    if let Some(unit) = unit {
        let logs = client.unit_logs(job, unit)?;
        if json {
            println!("{}", printable_json(&serde_json::to_value(&logs)?));
        } else {
            print!("{}", unit_text(&logs));
        }
        return Ok(());
    }
    let mut after = 0;
    let mut shown = 0u64;
    loop {
        let page = client.job_logs(job, after)?;
        for u in &page.failed_units {
            if json {
                println!("{}", printable_json(&serde_json::to_value(u)?));
            } else {
                print!("{}", failed_text(u));
            }
            shown += 1;
        }
        match page.next_after {
            // A server that does not move forward would loop forever.
            Some(next) if next > after => after = next,
            _ => break,
        }
    }
    if shown == 0 && !json {
        println!("job {job} has no failed units");
    }
    Ok(())
}

/// `text` indented by `indent`, one escaped line at a time.
fn indented(text: &str, indent: &str) -> String {
    text.lines()
        .map(|line| format!("{indent}{}\n", printable(line)))
        .collect()
}

/// One error result: its host, its message, the end of its stderr.
fn error_text(e: &ErrorLog) -> String {
    let key = e.host_key.get(..12).unwrap_or(&e.host_key);
    let mut out = format!("  error from host {} ({}):\n", e.host, printable(key));
    out.push_str(&indented(&e.error, "    "));
    match &e.stderr {
        Some(stderr) => {
            out.push_str("  end of stderr:\n");
            out.push_str(&indented(stderr, "    | "));
        }
        None => out.push_str("  (no stderr reported)\n"),
    }
    out
}

/// A failed unit as `peergrid job logs ID` prints it.
pub fn failed_text(u: &FailedUnitLog) -> String {
    let mut out = format!(
        "failed unit {} ({}): {}\n",
        u.unit,
        printable(&u.name),
        printable(&u.reason)
    );
    match &u.last_error {
        Some(e) => out.push_str(&error_text(e)),
        None => out.push_str("  (no error result: its hosts' outputs disagreed)\n"),
    }
    out
}

/// A unit's error results as `peergrid job logs ID UNIT` prints them.
pub fn unit_text(u: &UnitLogs) -> String {
    let mut out = format!(
        "unit {} ({}) of job {}: {}",
        u.unit,
        printable(&u.name),
        u.job,
        printable(&u.state)
    );
    if let Some(reason) = &u.reason {
        out.push_str(&format!(": {}", printable(reason)));
    }
    out.push_str(&format!("\n{} error results\n", u.errors.len()));
    for e in &u.errors {
        out.push_str(&error_text(e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_prints_line_by_line_with_controls_escaped() {
        let u = FailedUnitLog {
            unit: 4,
            name: "line 4".into(),
            reason: "1 error results".into(),
            last_error: Some(ErrorLog {
                host: 2,
                host_key: "ab".repeat(32),
                received_ms: 1,
                error: "module trapped".into(),
                stderr: Some("panicked at main.rs:\nbad \u{1b}[2Jinput\tx".into()),
            }),
        };
        assert_eq!(
            failed_text(&u),
            "failed unit 4 (line 4): 1 error results\n  \
             error from host 2 (abababababab):\n    module trapped\n  end of stderr:\n    \
             | panicked at main.rs:\n    | bad \\u{1b}[2Jinput\\tx\n"
        );
    }
}
