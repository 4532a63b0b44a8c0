#!/usr/bin/env bash
# Sets up the machine and runs bpfship's whole test suite (unit, fixtures, real registry, kernel).
# Run as root: the kernel and network-namespace tests need it. A test that cannot run prints SKIP
# and is listed at the end; under CI (CI=true) a skip of anything the setup provides fails the
# test, and only what the running kernel lacks may skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
# The fuzz targets (their own lock file; running them needs nightly cargo-fuzz: fuzz/README.md).
cargo check --manifest-path fuzz/Cargo.toml --locked

skips="$PWD/target/test-skips.log"
: >"$skips"
status=0
BPFSHIP_SKIP_LOG="$skips" cargo test --workspace --locked --no-fail-fast -- --test-threads=2 || status=$?

# The kernel matrix: the kernel tests again inside Debian's 6.1 and 6.12 kernels under qemu.
bash vm-tests/run || status=1

echo
if [ -s "$skips" ]; then
  echo "skipped tests ($(wc -l <"$skips")), kind: setup = the machine lacks it, kernel = the kernel lacks it:"
  sort "$skips" | awk -F'\t' '{ printf "  %-7s %s: %s\n", $1, $2, $3 }'
else
  echo "skipped tests: none"
fi
exit "$status"
