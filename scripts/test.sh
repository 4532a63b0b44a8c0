#!/usr/bin/env bash
# Sets up the machine and runs bpfship's whole test suite (unit, fixtures, real registry, kernel).
# Run as root for the kernel and network-namespace tests; without root they print SKIP.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast -- --test-threads=2
