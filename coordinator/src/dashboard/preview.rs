//! What the dataset browser shows of an output: its first bytes as text,
//! bounded and cleaned, so people see values and not only hashes. Outputs
//! are whatever a module printed: the page escapes them (maud), and this
//! keeps them short and free of control characters.

use serde::Serialize;

/// Output bytes read for a preview.
pub const PREVIEW_BYTES: usize = 240;

/// The start of one output, as the dataset page shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutputPreview {
    /// The output's first bytes as text (UTF-8, control characters but
    /// line breaks and tabs shown as `�`, a trailing newline dropped), or,
    /// for bytes that are not text, their hex.
    pub text: String,
    /// Whether `text` is hex of binary bytes.
    pub binary: bool,
    /// Whether the output goes on past the preview.
    pub truncated: bool,
    /// The whole output's length in bytes.
    pub bytes: u64,
}

/// A preview of an output of `len` bytes whose first bytes are `prefix`
/// (at most [`PREVIEW_BYTES`] of them are used).
pub fn preview(prefix: &[u8], len: u64) -> OutputPreview {
    let prefix = &prefix[..prefix.len().min(PREVIEW_BYTES)];
    let truncated = (prefix.len() as u64) < len;
    let text = match std::str::from_utf8(prefix) {
        Ok(t) => Some(t),
        // A cut in the middle of a character at the end is still text.
        Err(e) if truncated && e.error_len().is_none() => {
            std::str::from_utf8(&prefix[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    match text {
        Some(t) => {
            let t = if truncated {
                t
            } else {
                t.strip_suffix("\r\n")
                    .or_else(|| t.strip_suffix('\n'))
                    .unwrap_or(t)
            };
            OutputPreview {
                text: t
                    .chars()
                    .map(|c| {
                        if c.is_control() && c != '\n' && c != '\t' {
                            '\u{fffd}'
                        } else {
                            c
                        }
                    })
                    .collect(),
                binary: false,
                truncated,
                bytes: len,
            }
        }
        None => {
            let shown = &prefix[..prefix.len().min(PREVIEW_BYTES / 4)];
            OutputPreview {
                text: hex::encode(shown),
                binary: true,
                truncated: (shown.len() as u64) < len,
                bytes: len,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_shown_cleaned_and_cut() {
        let p = preview(b"{\"pi\": 3.14}\n", 13);
        assert_eq!(
            (p.text.as_str(), p.binary, p.truncated),
            ("{\"pi\": 3.14}", false, false)
        );
        let p = preview(b"a\x1b[31mb\r\nc\n", 11);
        assert_eq!(p.text, "a\u{fffd}[31mb\u{fffd}\nc");
        let long = "é".repeat(200);
        let p = preview(long.as_bytes(), long.len() as u64);
        assert!(p.truncated && !p.binary);
        assert_eq!(p.text, "é".repeat(PREVIEW_BYTES / 2));
        // A character cut by the preview's end is left out, not hex.
        let p = preview(&long.as_bytes()[..PREVIEW_BYTES - 1], long.len() as u64);
        assert!(!p.binary, "{p:?}");
    }

    #[test]
    fn binary_is_shown_as_hex() {
        let p = preview(&[0xff, 0xfe, 0, 1], 4);
        assert_eq!(
            (p.text.as_str(), p.binary, p.truncated),
            ("fffe0001", true, false)
        );
        let p = preview(&[0xff; 300], 1000);
        assert_eq!(p.text.len(), PREVIEW_BYTES / 4 * 2);
        assert!(p.truncated);
    }
}
