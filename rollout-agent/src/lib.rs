//! bpfship-agent: pulls verified eBPF artifacts by digest, canaries them beside the running
//! version on this host, and promotes or rolls back on health.

pub mod kernel;
