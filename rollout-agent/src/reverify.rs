//! The signature material each version was admitted with, kept in the content store beside its
//! content (content-addressed, checked by digest when read), and judged again by the policy in
//! force — at start-up, at restore after a reboot, and whenever the policy changes — so that
//! removing a key from the policy also removes what only that key signed. What to do with a
//! version that no longer verifies is the deployment's decision (docs/agent.md).

use bpfship_registry::Reference;
use bpfship_trust::offline::{SignatureMaterial, reverify};
use bpfship_trust::verify::VerifiedSignature;
use bpfship_verifier::policy::Policy;

use crate::state::VersionRecord;
use crate::store::ContentStore;

/// Stores the material of `signatures` for `holder`; returns its digest in the store.
pub fn store_material(
    store: &ContentStore,
    signatures: &[VerifiedSignature],
    holder: &str,
) -> std::io::Result<String> {
    let material: Vec<&SignatureMaterial> = signatures.iter().map(|s| &s.material).collect();
    let json = serde_json::to_vec(&material).map_err(std::io::Error::other)?;
    store.put(&json, holder)
}

/// Judges `record` (a version of `repository`) again by `policy`: the key hints that still
/// verify it, or why it no longer verifies.
pub fn check(
    store: &ContentStore,
    record: &VersionRecord,
    repository: &Reference,
    policy: &Policy,
) -> Result<Vec<String>, String> {
    let Some(stored) = &record.signatures else {
        return Err("no signature material is stored with it (recorded by an older agent)".into());
    };
    let bytes = store
        .get(stored)
        .map_err(|e| format!("its signature material: {e}"))?;
    let material: Vec<SignatureMaterial> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("its signature material does not parse: {e}"))?;
    let by_digest = repository.with_digest(&record.digest);
    reverify(&by_digest, &record.digest, &material, policy)
        .map(|sigs| sigs.into_iter().map(|s| s.key_hint).collect())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use bpfship_verifier::keys::PrivateKey;
    use bpfship_verifier::signature::simple_signing_payload;

    fn policy(keys: &[&PrivateKey]) -> Policy {
        let pems: Vec<String> = keys
            .iter()
            .map(|k| format!("\"\"\"\n{}\"\"\"", k.public_key().to_pem()))
            .collect();
        let text = format!(
            "version = 1\n[[trust]]\nrepositories = [\"example.org/**\"]\nkeys = [{}]\n",
            pems.join(", ")
        );
        Policy::from_toml(&text, std::path::Path::new("policy.toml")).unwrap()
    }

    #[test]
    fn a_removed_key_no_longer_verifies_what_it_alone_signed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path());
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let digest = format!("sha256:{}", "3".repeat(64));
        let repo = Reference::parse("example.org/team/prog:stable").unwrap();
        let payload = simple_signing_payload("example.org/team/prog", &digest, None);
        let signature = base64::engine::general_purpose::STANDARD.encode(a.sign(&payload));
        let verified = VerifiedSignature {
            layout: "legacy",
            key_hint: a.public_key().hint(),
            identity: None,
            docker_reference: Some("example.org/team/prog".into()),
            version: None,
            material: SignatureMaterial::Legacy {
                payload,
                signature,
                certificate: None,
                rekor_bundle: None,
            },
        };
        let stored = store_material(&store, &[verified], "edge").unwrap();
        let mut record = VersionRecord {
            digest: digest.clone(),
            content_digest: String::new(),
            policy_digest: None,
            signers: vec![],
            signatures: Some(stored.clone()),
            version: None,
        };
        assert_eq!(
            check(&store, &record, &repo, &policy(&[&a, &b])).unwrap(),
            vec![a.public_key().hint()]
        );
        let e = check(&store, &record, &repo, &policy(&[&b])).unwrap_err();
        assert!(e.contains("no valid signature"), "{e}");
        // Material edited on disk is caught by its digest.
        let path = dir.path().join("store/sha256").join(&stored[7..]);
        std::fs::write(&path, b"[]").unwrap();
        let e = check(&store, &record, &repo, &policy(&[&a])).unwrap_err();
        assert!(e.contains("content changed"), "{e}");
        record.signatures = None;
        assert!(check(&store, &record, &repo, &policy(&[&a])).is_err());
    }
}
