//! Digests whose signatures did not verify *yet*: signature metadata (the `.sig` tag, bundle
//! referrers) can be written by anyone with push access, before or beside the real signer, so a
//! missing or bad signature never rejects a digest for good. It is checked again with back-off
//! (doubling from the poll interval up to [`MAX_BACKOFF`]), and shown in status meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The longest wait between two checks of one digest's signatures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How many digests are remembered (the tag can be re-pointed at many unsigned digests; the
/// oldest is forgotten first — forgetting only means it is checked again sooner).
const MAX_ENTRIES: usize = 16;

#[derive(Debug, Clone)]
struct Entry {
    reason: String,
    attempts: u32,
    next_try: Instant,
    first_seen: Instant,
}

/// What status shows for one digest awaiting a valid signature.
pub use bpfship_control::AwaitingStatus;

/// The digests of one deployment awaiting a valid signature.
#[derive(Debug, Default)]
pub struct Awaiting {
    entries: BTreeMap<String, Entry>,
}

impl Awaiting {
    /// Whether `digest` may be checked now (never seen, or its back-off has passed).
    pub fn due(&self, digest: &str, now: Instant) -> bool {
        self.entries.get(digest).is_none_or(|e| now >= e.next_try)
    }

    /// Records a failed check of `digest`; returns `true` the first time (so it is audited once).
    pub fn failed(&mut self, digest: &str, reason: &str, base: Duration, now: Instant) -> bool {
        let first = !self.entries.contains_key(digest);
        if first && self.entries.len() >= MAX_ENTRIES {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.first_seen)
                .map(|(d, _)| d.clone());
            if let Some(d) = oldest {
                self.entries.remove(&d);
            }
        }
        let e = self.entries.entry(digest.to_owned()).or_insert(Entry {
            reason: String::new(),
            attempts: 0,
            next_try: now,
            first_seen: now,
        });
        e.attempts = e.attempts.saturating_add(1);
        e.reason = reason.to_owned();
        let factor = 1u32 << (e.attempts - 1).min(16);
        e.next_try = now + base.saturating_mul(factor).min(MAX_BACKOFF);
        first
    }

    /// The digest verified (or was decided otherwise): stop tracking it.
    pub fn settled(&mut self, digest: &str) {
        self.entries.remove(digest);
    }

    /// Everything may be checked at once again (the policy changed: a key may now verify).
    pub fn retry_all_now(&mut self, now: Instant) {
        for e in self.entries.values_mut() {
            e.next_try = now;
        }
    }

    /// For status, oldest first.
    pub fn status(&self, now: Instant) -> Vec<AwaitingStatus> {
        let mut v: Vec<(&String, &Entry)> = self.entries.iter().collect();
        v.sort_by_key(|(_, e)| e.first_seen);
        v.into_iter()
            .map(|(d, e)| AwaitingStatus {
                digest: d.clone(),
                reason: e.reason.clone(),
                attempts: e.attempts,
                retry_in_seconds: e.next_try.saturating_duration_since(now).as_secs_f64(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);

    #[test]
    fn backs_off_doubling_to_a_cap_and_is_never_final() {
        let t0 = Instant::now();
        let mut a = Awaiting::default();
        assert!(a.due("d", t0));
        assert!(a.failed("d", "bad signature", BASE, t0), "first failure");
        assert!(!a.due("d", t0));
        assert!(a.due("d", t0 + BASE));
        assert!(!a.failed("d", "bad signature", BASE, t0), "audited once");
        assert!(!a.due("d", t0 + BASE));
        assert!(a.due("d", t0 + 2 * BASE));
        for _ in 0..40 {
            a.failed("d", "still bad", BASE, t0);
        }
        assert!(a.due("d", t0 + MAX_BACKOFF), "capped");
        let s = a.status(t0);
        assert_eq!(s[0].attempts, 42);
        assert_eq!(s[0].reason, "still bad");
        assert_eq!(s[0].retry_in_seconds, MAX_BACKOFF.as_secs_f64());
        a.retry_all_now(t0);
        assert!(a.due("d", t0));
        a.settled("d");
        assert!(a.status(t0).is_empty());
    }

    #[test]
    fn remembers_a_bounded_number_of_digests() {
        let t0 = Instant::now();
        let mut a = Awaiting::default();
        for i in 0..(MAX_ENTRIES + 5) {
            a.failed(
                &format!("d{i:02}"),
                "x",
                BASE,
                t0 + Duration::from_millis(i as u64),
            );
        }
        let s = a.status(t0);
        assert_eq!(s.len(), MAX_ENTRIES);
        assert_eq!(s[0].digest, "d05", "the oldest were forgotten");
    }
}
