#!/usr/bin/env bash
# Verdict counting's cost (root): ns per packet added by the instrumentation over the same
# program loaded unmodified, BPF_PROG_TEST_RUN side by side in one run, XDP and TC.
# Usage: bash bench/verdicts.sh [REPEAT]   (default 2000000)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/verdicts.sh: needs root (BPF)" >&2; exit 2; }
bash scripts/setup.sh >/dev/null
# What is timed runs in the kernel: the example's own build profile does not enter the figure.
cargo build --locked -p bpfship-agent --example verdict_bench
bash testdata/build-ebpf.sh target/testdata-ebpf
target/debug/examples/verdict_bench target/testdata-ebpf/agent "${1:-2000000}"
