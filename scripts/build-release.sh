#!/usr/bin/env bash
# Builds the release `bpfship` with profile-guided optimization (PGO), as release binaries are
# built for distribution, and prints the binary's path on stdout (target/pgo/release/bpfship).
#
# 1. an instrumented build (target/pgo-gen);
# 2. a training run of the instrumented binary on typical work: `validate` (text and JSON) of three
#    real WASM modules from npm (esbuild-wasm: Go, @biomejs/wasm-nodejs: Rust, sql.js: C via
#    emscripten) and of the testdata eBPF objects, with and without a policy; key generation,
#    sign-blob and verify-blob; push, sign, verify and pull against Debian's docker-registry on a
#    loopback port. The modules bench/wasm.sh measures (duckdb, swc) are deliberately not in it;
# 3. the optimized build from the merged profile (target/pgo). The training is redone only when
#    the instrumented binary changed.
#
# Needs llvm-profdata from rustup's llvm-tools component (installed here when missing). Without
# it, this falls back to a plain `cargo build --release`, says so on stderr, and prints
# target/release/bpfship. The training uses npm, clang and docker-registry (scripts/setup.sh
# installs them); a part whose tool is missing is skipped, saying so.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
gen=$root/target/pgo-gen
out=$root/target/pgo
train=$root/target/pgo-train
work="" reg_pid=""
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; fi
  if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

find_profdata() { find "$(rustc --print sysroot)" -name llvm-profdata -type f 2>/dev/null | head -1; }
profdata=$(find_profdata)
if [ -z "$profdata" ]; then
  rustup component add llvm-tools >&2 || true
  profdata=$(find_profdata)
fi
if [ -z "$profdata" ]; then
  echo "build-release.sh: llvm-profdata unavailable (rustup component add llvm-tools failed): plain release build, without PGO" >&2
  cargo build --release --locked -p bpfship >&2
  echo "$root/target/release/bpfship"
  exit 0
fi

RUSTFLAGS="-Cprofile-generate=$gen/profiles" CARGO_TARGET_DIR=$gen \
  cargo build --release --locked -p bpfship >&2
instrumented=$gen/release/bpfship

# Runs the instrumented binary on the training work (its profiles land in $gen/profiles).
run_training() {
  local b=$instrumented
  mkdir -p "$train"
  work=$(mktemp -d "$train/run.XXXXXX")
  local wasm=()
  if command -v npm >/dev/null; then
    # shellcheck source=scripts/npm-file.sh
    . "$root/scripts/npm-file.sh"
    npm_file esbuild-wasm@0.28.2 esbuild.wasm "$train/esbuild.wasm"
    npm_file @biomejs/wasm-nodejs@2.5.14 biome_wasm_bg.wasm "$train/biome_wasm_bg.wasm"
    npm_file sql.js@1.16.0 dist/sql-wasm.wasm "$train/sql-wasm.wasm"
    wasm=("$train"/*.wasm)
  else
    echo "build-release.sh: no npm: training without the WASM modules" >&2
  fi
  for f in "${wasm[@]}"; do
    "$b" validate "$f" >/dev/null
    "$b" validate --output json "$f" >/dev/null
  done
  local ebpf=()
  if command -v clang >/dev/null; then
    bash testdata/build-ebpf.sh "$root/target/testdata-ebpf" >&2
    ebpf=(target/testdata-ebpf/*.o)
    # Some testdata objects are invalid on purpose (exit 1 or 2): the work is what counts.
    "$b" validate "${ebpf[@]}" >/dev/null || true
    "$b" validate --output json --policy policies/default.toml "${ebpf[@]}" >/dev/null || true
  else
    echo "build-release.sh: no clang: training without the eBPF objects" >&2
  fi
  export COSIGN_PASSWORD=pgo-training DOCKER_CONFIG=$work/docker
  mkdir -p "$DOCKER_CONFIG"
  "$b" generate-key-pair --output-key-prefix "$work/cosign" >/dev/null
  "$b" sign-blob --key "$work/cosign.key" --bundle "$work/blob.bundle" README.md >/dev/null
  "$b" verify-blob --key "$work/cosign.pub" --bundle "$work/blob.bundle" README.md >/dev/null
  if ! command -v docker-registry >/dev/null || [ ${#wasm[@]} -eq 0 ] || [ ${#ebpf[@]} -eq 0 ]; then
    echo "build-release.sh: no docker-registry, WASM or eBPF sample: training without a registry" >&2
    return 0
  fi
  # shellcheck source=scripts/registry.sh
  . "$root/scripts/registry.sh"
  start_registry "$work/registry"
  reg_pid=$REGISTRY_PID
  local ref=$REGISTRY_ADDR/training:v1
  "$b" push "$train/sql-wasm.wasm" "$ref" --key "$work/cosign.key" >/dev/null
  "$b" push target/testdata-ebpf/xdp_pass.o "$REGISTRY_ADDR/xdp:v1" >/dev/null
  "$b" sign --key "$work/cosign.key" "$REGISTRY_ADDR/xdp:v1" >/dev/null
  "$b" verify --key "$work/cosign.pub" "$ref" >/dev/null
  "$b" pull "$ref" --key "$work/cosign.pub" -o "$work/pulled" >/dev/null
  "$b" inspect "$REGISTRY_ADDR/xdp:v1" >/dev/null
}

if [ ! -s "$gen/merged.profdata" ] || [ "$instrumented" -nt "$gen/merged.profdata" ]; then
  rm -rf "$gen/profiles"
  run_training
  "$profdata" merge -o "$gen/merged.profdata.tmp" "$gen/profiles"
  mv "$gen/merged.profdata.tmp" "$gen/merged.profdata"
fi
RUSTFLAGS="-Cprofile-use=$gen/merged.profdata" CARGO_TARGET_DIR=$out \
  cargo build --release --locked -p bpfship >&2
echo "$out/release/bpfship"
