#!/usr/bin/env bash
# The agent's speed figures (root): dispatcher cost vs direct attach, rollback latency,
# new digest → canary attached for a ~100 KB object, idle footprint with 3 deployments.
# Usage: bash bench/agent.sh [IDLE_SECONDS]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/agent.sh: needs root (BPF)" >&2; exit 2; }
bash scripts/setup.sh >/dev/null
cargo build --release --locked -p bpfship-agent --bin bpfship-agent --example agent_bench
bash testdata/build-ebpf.sh target/testdata-ebpf
target/release/examples/agent_bench target/testdata-ebpf/agent target/release/bpfship-agent "${1:-60}"
