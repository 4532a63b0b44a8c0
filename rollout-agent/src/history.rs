//! Every digest a deployment ever promoted, in promotion order, so that re-pointing the followed
//! tag at an older signed digest — a downgrade anyone with push access can do without the signing
//! key — is refused unless an operator pins that digest.
//!
//! Each entry keeps room for the signed monotonic version of the release: when a signature
//! carries one, a version below the highest ever promoted is refused as well (a digest never
//! seen, signed long ago, is still an older release).

use serde::{Deserialize, Serialize};

/// One promotion: the digest that became stable, and when.
pub use bpfship_control::Promotion;

/// Why going to a digest would be a downgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Downgrade {
    #[error(
        "downgrade refused: {digest} was promoted before (at unix {promoted_unix}) and superseded by {superseded_by}"
    )]
    Superseded {
        digest: String,
        promoted_unix: u64,
        superseded_by: String,
    },
    #[error(
        "downgrade refused: signed version {version} is below version {highest} ({highest_digest}), promoted before"
    )]
    LowerVersion {
        version: u64,
        highest: u64,
        highest_digest: String,
    },
}

/// The promotions of one deployment, oldest first; persisted in its state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History {
    promotions: Vec<Promotion>,
}

impl History {
    /// Records that `digest` became stable now. A digest promoted again (an operator pin going
    /// back) moves to the end: what it replaced is now the superseded one.
    pub fn record(&mut self, digest: &str, version: Option<u64>, now_unix: u64) {
        self.promotions.retain(|p| p.digest != digest);
        self.promotions.push(Promotion {
            digest: digest.to_owned(),
            version,
            promoted_unix: now_unix,
        });
    }

    /// Whether taking `digest` (signed with `version`, if any) would go back: it was promoted
    /// and then superseded, or its version is below the highest promoted one. The latest
    /// promotion is not a downgrade (it is what runs, or what ran before it was withdrawn).
    pub fn check(&self, digest: &str, version: Option<u64>) -> Result<(), Downgrade> {
        let latest = self.promotions.last().map(|p| p.digest.as_str());
        if let Some(i) = self.promotions.iter().position(|p| p.digest == digest)
            && Some(digest) != latest
        {
            return Err(Downgrade::Superseded {
                digest: digest.to_owned(),
                promoted_unix: self.promotions[i].promoted_unix,
                superseded_by: self.promotions[i + 1].digest.clone(),
            });
        }
        if let Some(version) = version
            && let Some(highest) = self
                .promotions
                .iter()
                .filter(|p| p.digest != digest)
                .filter_map(|p| p.version.map(|v| (v, &p.digest)))
                .max_by_key(|(v, _)| *v)
            && version < highest.0
        {
            return Err(Downgrade::LowerVersion {
                version,
                highest: highest.0,
                highest_digest: highest.1.clone(),
            });
        }
        Ok(())
    }

    /// The promotions, oldest first.
    pub fn promotions(&self) -> &[Promotion] {
        &self.promotions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn superseded_digests_are_refused_the_latest_is_not() {
        let mut h = History::default();
        assert_eq!(h.check(&d('a'), None), Ok(()));
        h.record(&d('a'), None, 10);
        h.record(&d('b'), None, 20);
        assert_eq!(h.check(&d('b'), None), Ok(()), "what runs is no downgrade");
        assert_eq!(
            h.check(&d('c'), None),
            Ok(()),
            "a new digest is no downgrade"
        );
        let e = h.check(&d('a'), None).unwrap_err();
        assert_eq!(
            e,
            Downgrade::Superseded {
                digest: d('a'),
                promoted_unix: 10,
                superseded_by: d('b'),
            }
        );
        assert!(e.to_string().contains("superseded by sha256:bbbb"), "{e}");
    }

    #[test]
    fn promoting_an_old_digest_again_supersedes_what_it_replaced() {
        let mut h = History::default();
        h.record(&d('a'), None, 10);
        h.record(&d('b'), None, 20);
        // An operator pinned a: it is promoted again and b is now the superseded one.
        h.record(&d('a'), None, 30);
        assert_eq!(h.check(&d('a'), None), Ok(()));
        assert!(matches!(
            h.check(&d('b'), None),
            Err(Downgrade::Superseded { superseded_by, .. }) if superseded_by == d('a')
        ));
        assert_eq!(h.promotions().len(), 2, "one entry per digest");
    }

    #[test]
    fn a_lower_signed_version_is_refused_even_for_a_new_digest() {
        let mut h = History::default();
        h.record(&d('a'), Some(3), 10);
        h.record(&d('b'), None, 20);
        assert_eq!(h.check(&d('c'), Some(3)), Ok(()), "equal is not lower");
        assert_eq!(h.check(&d('c'), Some(4)), Ok(()));
        assert_eq!(h.check(&d('c'), None), Ok(()), "no version: digests decide");
        assert_eq!(
            h.check(&d('c'), Some(2)),
            Err(Downgrade::LowerVersion {
                version: 2,
                highest: 3,
                highest_digest: d('a'),
            })
        );
    }

    #[test]
    fn persists_as_a_list() {
        let mut h = History::default();
        h.record(&d('a'), Some(7), 10);
        h.record(&d('b'), None, 20);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json[0]["version"], 7);
        assert!(json[1].get("version").is_none());
        let back: History = serde_json::from_value(json).unwrap();
        assert_eq!(back, h);
    }
}
