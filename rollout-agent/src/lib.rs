//! bpfship-agent: pulls verified eBPF artifacts by digest, canaries them beside the running
//! version on this host, and promotes or rolls back on health.

pub mod agent;
pub mod analysis;
pub mod audit;
pub mod awaiting;
pub mod config;
pub mod control;
pub mod deployment;
pub mod external;
pub mod history;
pub mod metrics;
pub mod policy_watch;
pub mod reverify;
pub mod state;
pub mod store;
pub mod supervise;
pub mod text;

/// The kernel side lives in its own crate; these paths keep the agent's modules unchanged.
pub use bpfship_kernel as kernel;
pub use bpfship_kernel::hook;
