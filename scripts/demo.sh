#!/usr/bin/env bash
# The main job on a built-in default: a local registry on a loopback port, a sample XDP program
# built from testdata/, and the whole story: validate → sign → push → verify → pull, then (as
# root) bpfship-agent on a veth pair into a network namespace: v1 installed, v2 canaried and
# promoted, v3 (aborts every packet) rolled back by itself, an unsigned v4 refused.
# Safe to run again; everything it creates lives under target/demo and is cleaned up at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p bpfship -p bpfship-agent
bin=$PWD/target/release
demo=$PWD/target/demo
rm -rf "$demo"; mkdir -p "$demo"

registry_pid=
agent_pid=
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
  ip link del bsdemo 2>/dev/null || true
  ip netns del bpfship-demo 2>/dev/null || true
  rm -rf /sys/fs/bpf/bpfship-demo 2>/dev/null || true
}
trap cleanup EXIT
# shellcheck source=scripts/registry.sh
. scripts/registry.sh
start_registry "$demo/registry"
registry_pid=$REGISTRY_PID
repo=$REGISTRY_ADDR/demo/xdp-counter

digest_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])'; }
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

if [ "$(id -u)" != 0 ]; then
  echo; echo "demo: the agent part needs root (BPF, network namespaces): run again as root"; exit 0
fi

step "agent: a veth pair into network namespace bpfship-demo, XDP on bsdemo"
ip link del bsdemo 2>/dev/null || true; ip netns del bpfship-demo 2>/dev/null || true
ip netns add bpfship-demo
ip link add bsdemo type veth peer name bsdemop
ip link set bsdemop netns bpfship-demo
ip addr add 10.233.0.1/24 dev bsdemo && ip link set bsdemo up
ip -n bpfship-demo addr add 10.233.0.2/24 dev bsdemop
ip -n bpfship-demo link set bsdemop up
traffic() { # $1 packets: UDP from the namespace to the host side, many flows
  ip netns exec bpfship-demo python3 -c "
import socket,time
s=[socket.socket(socket.AF_INET,socket.SOCK_DGRAM) for _ in range(64)]
for i in range($1):
    s[i%64].sendto(b'x'*64,('10.233.0.1',9))
    if i%100==99: time.sleep(0.001)"
}
app=$repo-agent
cat > "$demo/agent.toml" <<TOML
host_id = "demo-host"
state_dir = "$demo/agent-state"
pin_root = "/sys/fs/bpf/bpfship-demo"
control_socket = "$demo/agent.sock"
metrics_address = ""
policy = "$demo/policy.toml"
poll_interval_seconds = 0.5

[[deployment]]
name = "edge"
artifact = "$app:stable"
program = "filter"
hook = { type = "xdp", interface = "bsdemo", mode = "generic" }
[deployment.rollout]
steps = [{ percent = 10, bake_seconds = 2 }, { percent = 50, bake_seconds = 2 }, { percent = 100, bake_seconds = 1 }]
rollback_window_seconds = 60
[deployment.analysis]
interval_seconds = 0.5
[[deployment.checks]]
type = "aborts"
max = 0.0
[[deployment.checks]]
type = "bad_events"
max = 0.01
TOML
"$bin/bpfship-agent" --config "$demo/agent.toml" --check
agent_status() { "$bin/bpfship" agent --socket "$demo/agent.sock" "$@"; }
wait_for() { # $1 description, $2 jq filter over the status JSON
  for _ in $(seq 300); do
    traffic 200
    if agent_status --output json status 2>/dev/null | python3 -c "
import json,sys; d=json.load(sys.stdin)['deployments'][0]; sys.exit(0 if ($2) else 1)"; then
      echo "-> $1"; return 0; fi
  done
  echo "demo: timed out waiting for: $1" >&2; agent_status status >&2; exit 1
}
a=$demo/ebpf/agent
step "v1: signed, pushed; the agent installs it"
"$bin/bpfship" push "$a/v1.o" "$app:stable" --key "$demo/release.key" --policy "$demo/policy.toml"
"$bin/bpfship-agent" --config "$demo/agent.toml" >"$demo/agent.log" 2>&1 &
agent_pid=$!
wait_for "v1 is stable" "d['phase']=='stable' and d['stable']"
agent_status status

step "v2: canary 10% → 50% → 100% under analysis, then promoted"
d2=$("$bin/bpfship" --output json push "$a/v2.o" "$app:stable" --key "$demo/release.key" | digest_of)
wait_for "v2 canary running" "d['canary']=='$d2'"
agent_status status
wait_for "v2 promoted" "d['stable']=='$d2' and d['phase']=='stable'"

step "v3 aborts every packet: the agent rolls it back by itself"
d3=$("$bin/bpfship" --output json push "$a/v3_abort.o" "$app:stable" --key "$demo/release.key" | digest_of)
wait_for "v3 rolled back" "any(r['digest']=='$d3' for r in d['rejected'])"

step "v4 unsigned: refused, never loaded"
d4=$("$bin/bpfship" --output json push "$a/v4.o" "$app:stable" | digest_of)
wait_for "v4 refused" "(d['last_verification'] or {}).get('digest')=='$d4' and not d['last_verification']['ok']"
agent_status status

step "audit log ($demo/agent-state/audit.jsonl)"
cat "$demo/agent-state/audit.jsonl"
echo; echo "demo: done — v2 serves, v3 rolled back, v4 refused"
