//! Strings the agent did not choose — registry media types and annotations, error texts that
//! quote registry replies, verifier logs — are made safe before they reach the state file, the
//! audit log, status or metrics, with the registry crate's one escaping helper
//! ([`bpfship_registry::untrusted`]): control and bidirectional-override characters escaped,
//! at most [`LIMIT`] bytes kept, saying how much was cut. A registry that answers with a
//! megabyte-long media type then costs a kilobyte per line, not a megabyte.

use bpfship_registry::untrusted::shown_max;

/// Bytes kept of one untrusted string.
pub const LIMIT: usize = 1024;

/// [`clip_to`] at [`LIMIT`].
pub fn clip(s: &str) -> String {
    clip_to(s, LIMIT)
}

/// `s` with control characters escaped, cut to at most `max` bytes of the original.
pub fn clip_to(s: &str, max: usize) -> String {
    shown_max(s, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_megabyte_costs_a_kilobyte() {
        let long = format!("\u{1b}]0;x\u{7}{}", "é".repeat(500_000));
        let c = clip(&long);
        assert!(c.len() < 2 * LIMIT, "{}", c.len());
        assert!(!c.contains('\u{1b}') && c.contains("\\u{1b}"), "{c}");
        assert!(c.ends_with("more bytes)"), "{c}");
    }
}
