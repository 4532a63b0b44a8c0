//! Strings the agent did not choose — registry media types and annotations, error texts that
//! quote registry replies, verifier logs — are made safe before they reach the state file, the
//! audit log, status or metrics: control and bidirectional-override characters are escaped
//! (`\u{1b}`), and at most [`LIMIT`] bytes are kept, saying how much was cut. A registry that
//! answers with a megabyte-long media type then costs a kilobyte per line, not a megabyte.

/// Bytes kept of one untrusted string.
pub const LIMIT: usize = 1024;

/// [`clip_to`] at [`LIMIT`].
pub fn clip(s: &str) -> String {
    clip_to(s, LIMIT)
}

/// `s` with control characters escaped, cut to at most `max` bytes (plus the note saying so).
pub fn clip_to(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 32);
    for (i, c) in s.char_indices() {
        let escaped;
        let piece: &str = if needs_escape(c) {
            escaped = c.escape_unicode().to_string();
            &escaped
        } else {
            &s[i..i + c.len_utf8()]
        };
        if out.len() + piece.len() > max {
            out.push_str(&format!("… ({} more bytes)", s.len() - i));
            return out;
        }
        out.push_str(piece);
    }
    out
}

/// Control characters (C0, DEL, C1) and the bidirectional overrides that reorder what a
/// terminal shows.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi() {
        assert_eq!(clip("plain ünïcode"), "plain ünïcode");
        assert_eq!(clip("a\nb\x1b[31m"), "a\\u{a}b\\u{1b}[31m");
        assert_eq!(clip("x\u{202e}y\u{9b}"), "x\\u{202e}y\\u{9b}");
    }

    #[test]
    fn cuts_long_strings_on_a_character_boundary() {
        let long = "é".repeat(10_000);
        let c = clip(&long);
        assert!(c.len() <= LIMIT + 32, "{}", c.len());
        assert!(c.ends_with("… (18976 more bytes)"), "{c}");
        assert_eq!(clip_to("abcdef", 3), "abc… (3 more bytes)");
        // An escape is never split.
        assert_eq!(clip_to("ab\n", 4), "ab… (1 more bytes)");
    }
}
