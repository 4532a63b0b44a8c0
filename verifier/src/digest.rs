//! OCI-style content digests (`sha256:<hex>`), the identity everything in bpfship acts on.

use sha2::{Digest as _, Sha256};

/// Whether an inspection computes the SHA-256 its report carries (`sha256`, `elf_sha256`). A
/// caller that never shows or stores it (`bpfship validate --output text`) skips the work: on a
/// 40 MB module it is a fifth of the CPU time of a validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportDigest {
    #[default]
    Compute,
    /// The report's digest field is left empty.
    Skip,
}

/// The `sha256:<64 hex>` digest of `bytes`, as OCI and cosign write it.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// True when `digest` is a well-formed `sha256:<64 lowercase hex>` string.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_value() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_sha256_digest(&sha256_digest(b"x")));
        assert!(!is_sha256_digest("sha256:E3B0"));
        assert!(!is_sha256_digest("sha512:00"));
    }
}
