//! bpfship-registry: OCI transport. Resolves a tag once and then acts on digests only; every
//! manifest and blob fetched is checked against its digest. Packages eBPF objects as
//! bpfman-compatible images and WASM as TAG Runtime Wasm artifacts, and writes and reads cosign's
//! two signature layouts (legacy `.sig` tags and sigstore-bundle referrers with the tag fallback).
//!
//! No signature logic lives here: payloads, signatures and bundles are bytes made and checked by
//! `bpfship-verifier`.

pub mod artifact;
pub mod auth;
pub mod client;
pub mod index;
pub mod manifest;
pub mod reference;
pub mod signatures;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod untrusted;

pub use client::{BlobKind, Client, ClientOptions, ErrorClass, Progress, RegistryError};
pub use index::Platform;
pub use manifest::{Descriptor, ImageIndex, ImageManifest};
pub use reference::Reference;
