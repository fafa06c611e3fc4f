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
}
