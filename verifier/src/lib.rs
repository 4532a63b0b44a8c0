//! bpfship-verifier: everything bpfship decides about an artifact without touching the network or
//! the kernel. eBPF ELF and WASM inspection and validation, cosign-compatible keys and signatures
//! (legacy simple-signing and sigstore bundles), and policy evaluation. Deterministic and fuzzable.

pub mod bundle;
pub mod certificate_identity;
pub mod digest;
pub mod ebpf;
pub mod identity;
pub mod keys;
pub mod policy;
pub mod signature;
pub mod wasm;
