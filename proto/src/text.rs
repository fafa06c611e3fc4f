//! Text from strangers, made safe to store and print: one definition of
//! what is kept, shared by the coordinator (worker-supplied errors and
//! engine ids, Hello facts) and the worker (what it prints).

/// Whether `c` may stand in a Hello's `os`, `arch` or `worker_version`:
/// printable ASCII (they are stored and shown on the host pages). The
/// coordinator refuses anything else; the worker cleans its facts with
/// [`host_fact`] before it sends them.
pub fn is_host_fact_char(c: char) -> bool {
    c.is_ascii_graphic() || c == ' '
}

/// `text` as a Hello fact: characters [`is_host_fact_char`] refuses become
/// `?`, and it is cut to [`crate::limits::MAX_HOST_FACT`] characters.
pub fn host_fact(text: &str) -> String {
    text.chars()
        .map(|c| if is_host_fact_char(c) { c } else { '?' })
        .take(crate::limits::MAX_HOST_FACT)
        .collect()
}

/// A name a volunteer chose (host, account or team name), as it is stored
/// and shown: surrounding whitespace trimmed, at most `max` bytes, and
/// no control characters nor the invisible format characters that
/// reorder or hide text (bidirectional overrides, zero-width marks), so
/// a name cannot rewrite the leaderboard row it stands in. `what` names
/// the field in the error, which says what to change.
pub fn volunteer_name(what: &str, name: &str, max: usize) -> Result<String, String> {
    let name = name.trim();
    if name.len() > max {
        return Err(format!(
            "the {what} is {} bytes long; choose one of at most {max} bytes",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|&c| c.is_control() || is_invisible(c)) {
        return Err(format!(
            "the {what} contains the invisible or control character U+{:04X}; choose one without it",
            c as u32
        ));
    }
    Ok(name.to_string())
}

/// Unicode format characters (category Cf) that change how text around
/// them is ordered or shown without showing themselves.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Drops control characters (a terminal escape in an error message must
/// not reach an operator's or researcher's terminal); line breaks and tabs
/// stay when `keep_lines` is set.
pub fn strip_controls(s: &mut String, keep_lines: bool) {
    s.retain(|c| !c.is_control() || (keep_lines && (c == '\n' || c == '\t')));
}

/// Cuts `s` to at most `max` bytes, on a char boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Keeps the last `max` bytes of `s` at most, starting on a char boundary.
pub fn keep_end(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = s.len() - max;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.drain(..cut);
    }
}

/// The end of a task's stderr as text to report and show: invalid UTF-8
/// replaced, control characters dropped (line breaks and tabs kept), at
/// most `max` bytes taken from the end (where a panic message is), and
/// surrounding blank lines trimmed.
pub fn stderr_tail(stderr: &[u8], max: usize) -> String {
    // Only the end is kept: convert no more than can survive (a UTF-8
    // character is at most 4 bytes, and dropped controls make room).
    let from = stderr.len().saturating_sub(max.saturating_mul(4));
    let mut s = String::from_utf8_lossy(&stderr[from..]).into_owned();
    strip_controls(&mut s, true);
    keep_end(&mut s, max);
    s.trim_matches(|c: char| c.is_whitespace()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_text_is_cleaned() {
        let mut s = "a\u{1b}[2J\nb\tc\u{9b}".to_string();
        strip_controls(&mut s, true);
        assert_eq!(s, "a[2J\nb\tc");
        strip_controls(&mut s, false);
        assert_eq!(s, "a[2Jbc");
        let mut s = "ünï".to_string();
        truncate(&mut s, 2);
        assert_eq!(s, "ü");
        assert_eq!(host_fact("Linux\u{1b} é"), "Linux? ?");
        assert_eq!(
            host_fact(&"x".repeat(500)).len(),
            crate::limits::MAX_HOST_FACT
        );
    }

    #[test]
    fn volunteer_names_are_trimmed_bounded_and_visible() {
        assert_eq!(
            volunteer_name("host name", "  Ada's laptop ", 64).unwrap(),
            "Ada's laptop"
        );
        assert_eq!(
            volunteer_name("team", "Équipe 日本", 64).unwrap(),
            "Équipe 日本"
        );
        assert_eq!(volunteer_name("team", "", 64).unwrap(), "");
        // The bound is in bytes, after trimming.
        assert!(volunteer_name("team", &"é".repeat(32), 64).is_ok());
        let e = volunteer_name("team", &"é".repeat(33), 64).unwrap_err();
        assert!(e.contains("66 bytes") && e.contains("at most 64"), "{e}");
        for bad in [
            "a\u{1b}[2Jb",
            "a\nb",
            "x\u{202E}gnp.exe",
            "a\u{200B}b",
            "\u{FEFF}a",
        ] {
            let e = volunteer_name("host name", bad, 64).unwrap_err();
            assert!(e.starts_with("the host name contains"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn stderr_tail_keeps_the_clean_end_within_bounds() {
        // The end survives, the start goes, on a char boundary.
        let mut long = "é".repeat(3000).into_bytes();
        long.extend_from_slice(b"\npanicked at src/main.rs:3:5:\nbad input\n");
        let tail = stderr_tail(&long, 64);
        assert!(tail.len() <= 64, "{}", tail.len());
        assert!(
            tail.ends_with("panicked at src/main.rs:3:5:\nbad input"),
            "{tail}"
        );
        assert!(tail.starts_with('é'));
        // Escapes and other controls are dropped, lines and tabs kept,
        // invalid UTF-8 replaced.
        assert_eq!(
            stderr_tail(b"\x1b[31mred\x1b[0m\tx\r\n\xffend", 100),
            "[31mred[0m\tx\n\u{fffd}end"
        );
        assert_eq!(stderr_tail(b"", 100), "");
        assert_eq!(stderr_tail(b"\n \n", 100), "");
        // The bound holds whatever the bytes.
        let noise: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(stderr_tail(&noise, 4096).len() <= 4096);
        let mut s = "aé".to_string();
        keep_end(&mut s, 2);
        assert_eq!(s, "é");
        keep_end(&mut s, 1);
        assert_eq!(s, "");
    }
}
