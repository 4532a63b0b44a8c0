#!/usr/bin/env bash
# The main job on a built-in default: a local registry on a loopback port, a sample XDP program
# built from testdata/, and the whole story: validate → sign → push → verify → pull.
# Safe to run again; everything it creates lives under target/demo and is cleaned up at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p bpfship -p bpfship-agent
bin=$PWD/target/release
demo=$PWD/target/demo
rm -rf "$demo"; mkdir -p "$demo/registry"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$demo/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $demo/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
log:
  level: error
YML
docker-registry serve "$demo/registry.yml" >"$demo/registry.log" 2>&1 &
registry_pid=$!
cleanup() { kill "$registry_pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
repo=127.0.0.1:$port/demo/xdp-counter

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build the sample eBPF programs from testdata/ebpf with clang"
bash testdata/build-ebpf.sh "$demo/ebpf"
ls "$demo/ebpf"

step "generate a cosign-compatible key pair"
export COSIGN_PASSWORD=demo-password
"$bin/bpfship" generate-key-pair --output-key-prefix "$demo/release"
cat > "$demo/policy.toml" <<TOML
version = 1
[[trust]]
repositories = ["127.0.0.1:*/demo/**"]
keys = ["release.pub"]
[ebpf]
allowed_program_types = ["xdp", "sched_cls", "tracepoint", "socket_filter"]
forbidden_helpers = ["bpf_probe_write_user", "bpf_override_return", "bpf_send_signal"]
max_instructions = 100000
require_btf = true
TOML

step "validate against the policy"
"$bin/bpfship" validate --policy "$demo/policy.toml" "$demo/ebpf/xdp_pass.o"
if "$bin/bpfship" validate --policy "$demo/policy.toml" "$demo/ebpf/forbidden_helper.o"; then
  echo "demo: the forbidden helper was not refused" >&2; exit 1
else
  echo "(refused, as the policy says)"
fi

step "push, signed (legacy .sig + sigstore bundle referrer)"
"$bin/bpfship" push "$demo/ebpf/xdp_pass.o" "$repo:v1" --key "$demo/release.key" --policy "$demo/policy.toml"

step "verify"
"$bin/bpfship" verify --policy "$demo/policy.toml" "$repo:v1"

step "pull (verified first) into $demo/pulled"
"$bin/bpfship" pull "$repo:v1" --policy "$demo/policy.toml" -o "$demo/pulled"
cmp "$demo/pulled/xdp_pass.o" "$demo/ebpf/xdp_pass.o" && echo "pulled object is byte-identical"

step "inspect"
"$bin/bpfship" inspect "$repo:v1"
