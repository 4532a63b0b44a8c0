//! Strings chosen by someone else (a registry, a pusher, a signer): what may reach an error
//! message, the agent's state and audit log, or a terminal is escaped and capped here, in one
//! place. Control characters (terminal escapes, newlines that forge log lines, NUL) are shown as
//! `\u{…}`/`\n`-style escapes; anything longer than the cap is cut at a character boundary and
//! marked with how much was left out.

use std::fmt::Write as _;

/// Default cap, in bytes of the original string, for one attacker-chosen string.
pub const MAX_SHOWN: usize = 256;

/// `s` escaped and cut to at most `MAX_SHOWN` bytes of the original: safe to print or store.
pub fn shown(s: &str) -> String {
    shown_max(s, MAX_SHOWN)
}

/// [`shown`] with an explicit cap (bytes of the original string kept).
pub fn shown_max(s: &str, max: usize) -> String {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = escape(&s[..cut]);
    if cut < s.len() {
        let _ = write!(out, "…({} more bytes)", s.len() - cut);
    }
    out
}

/// Control characters (C0, DEL, C1) and Unicode bidi/line separators escaped; nothing cut.
/// For text that is already bounded but may carry a registry's bytes (a whole error line).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// True for characters a terminal or a line-oriented log interprets: C0/C1 controls, DEL, and
/// the bidirectional overrides and line separators that reorder or split displayed text.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_strings_capped() {
        assert_eq!(
            shown("a\x1b[31mred\x07\nforged"),
            "a\\u{1b}[31mred\\u{7}\\nforged"
        );
        assert_eq!(shown("\u{202e}txt"), "\\u{202e}txt");
        let long = "é".repeat(1_000_000);
        let s = shown(&long);
        assert!(s.len() < MAX_SHOWN + 40, "{}", s.len());
        assert!(s.ends_with("…(1999744 more bytes)"), "{s}");
        assert_eq!(shown("plain text"), "plain text");
    }
}
