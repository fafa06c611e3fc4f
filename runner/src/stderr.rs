//! A runner's stderr, passed on to the worker's. The runner's own messages
//! (a confinement layer the kernel lacks, a panic) are a few lines; wasm
//! code never writes there (the sandbox keeps a task's stderr). So what
//! arrives is either those lines or the work of code that escaped the
//! sandbox, which must not reach the volunteer's terminal or journal as
//! escapes, nor fill them: every line is cleaned of control characters,
//! cut to [`MAX_LINE`] bytes and prefixed with the runner's pid, and after
//! [`MAX_PASSED`] bytes the pipe is closed (the runner's next write fails).

use std::io::{self, BufRead, BufReader, Read, Write};

/// Most bytes of one runner's stderr passed on, prefixes excluded.
pub const MAX_PASSED: usize = 64 * 1024;
/// Longest line passed on; the rest of a longer one starts a new line.
pub const MAX_LINE: usize = 1024;

/// Starts a thread that passes `from` on to this process's stderr until
/// it closes or [`MAX_PASSED`] is reached.
pub(crate) fn spawn(pid: u32, from: impl Read + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("peergrid-runner-stderr".into())
        .spawn(move || pass_on(pid, from, io::stderr()))
        .map(drop)
}

/// Passes `from` on to `to` line by line, cleaned and bounded (see the
/// module doc); returns when `from` ends, fails or has said too much.
pub(crate) fn pass_on(pid: u32, from: impl Read, mut to: impl Write) {
    let mut from = BufReader::with_capacity(8 * 1024, from);
    let mut line = Vec::with_capacity(256);
    let mut passed = 0usize;
    loop {
        let buf = match from.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let n = buf.len();
        for &b in buf {
            if b == b'\n' || line.len() >= MAX_LINE {
                if !emit(pid, &mut line, &mut passed, &mut to) {
                    return;
                }
                if b == b'\n' {
                    continue;
                }
            }
            line.push(b);
        }
        from.consume(n);
    }
    if !line.is_empty() {
        emit(pid, &mut line, &mut passed, &mut to);
    }
}

/// Writes one cleaned line; false once the budget is spent (after saying
/// so), when the caller stops reading.
fn emit(pid: u32, line: &mut Vec<u8>, passed: &mut usize, to: &mut impl Write) -> bool {
    *passed = passed.saturating_add(line.len());
    if *passed > MAX_PASSED {
        let said = format!(
            "peergrid-runner {pid}: more than {} KiB on stderr; the rest is dropped\n",
            MAX_PASSED / 1024
        );
        let _ = to.write_all(said.as_bytes());
        return false;
    }
    let mut text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    peergrid_proto::text::strip_controls(&mut text, false);
    // The runner names itself; the prefix says so with its pid.
    let text = text.strip_prefix("peergrid-runner: ").unwrap_or(&text);
    // One write per line, so lines of the worker's own log stay whole.
    let _ = to.write_all(format!("peergrid-runner {pid}: {text}\n").as_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(input: &[u8]) -> String {
        let mut out = Vec::new();
        pass_on(7, input, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_are_cleaned_of_escapes_and_prefixed() {
        let out = passed(
            b"peergrid-runner: landlock: not offered\n\x1b[2J\x1b]0;owned\x07red\r\n\x9b31m last",
        );
        assert_eq!(
            out,
            "peergrid-runner 7: landlock: not offered\n\
             peergrid-runner 7: [2J]0;ownedred\n\
             peergrid-runner 7: \u{fffd}31m last\n"
        );
    }

    #[test]
    fn long_lines_are_cut_and_a_flood_is_dropped() {
        let out = passed(&[b'a'; MAX_LINE + 10]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0].len(), "peergrid-runner 7: ".len() + MAX_LINE);
        assert!(lines[1].ends_with(&"a".repeat(10)));

        let flood = vec![b'x'; 10 * MAX_PASSED];
        let out = passed(&flood);
        assert!(
            out.len() < MAX_PASSED + MAX_PASSED / 4,
            "{} bytes",
            out.len()
        );
        assert!(
            out.ends_with("more than 64 KiB on stderr; the rest is dropped\n"),
            "{}",
            &out[out.len() - 100..]
        );
    }
}
