//! bpfship-trust: the decisions bpfship makes over a registry, shared by the CLI and the agent.
//! Inspect and package an artifact ([`content`]), sign what a registry holds by digest
//! ([`sign`]), and verify signatures and policy by digest before any content is used
//! ([`verify`]), and verify stored signature material again without the registry
//! ([`offline`]).

pub mod bpfman;
pub mod content;
pub mod offline;
pub mod publish;
pub mod sign;
pub mod verify;
