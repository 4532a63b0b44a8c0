#!/usr/bin/env bash
# eBPF validation throughput: the testdata corpus (testdata/ebpf/*.c built with clang) replicated
# to >= 1000 objects, all validated by one `bpfship validate --output json` invocation (best of N
# wall times), with and without the default policy; then the in-process split of the time
# between parsing, hashing and checks (verifier/examples/ebpf_phases.rs). Target: >= 10,000 objects/s.
# Env: BENCH_RUNS (default 7), BENCH_OBJECTS (default 1000).
source "$(dirname "$0")/lib.sh"
runs=${BENCH_RUNS:-7}
want=${BENCH_OBJECTS:-1000}
src=$cache/ebpf-src
corpus=$cache/ebpf-corpus
bash "$root/testdata/build-ebpf.sh" "$src" >&2
objs=("$src"/*.o)
rm -rf "$corpus"; mkdir -p "$corpus"
n=0
while [ "$n" -lt "$want" ]; do
  for o in "${objs[@]}"; do
    cp "$o" "$corpus/$(printf '%05d' "$n")-$(basename "$o")"
    n=$((n + 1))
  done
done
files=("$corpus"/*.o)
build_release
(cd "$root" && cargo build --release --locked -p bpfship-verifier --example ebpf_phases >&2)

# The corpus holds deliberately invalid objects (no license, big-endian, …): exit 1/2 is expected;
# the JSON must list every file.
validate() { "$bin" validate --output json "$@" "${files[@]}" || [ $? -le 2 ]; }
count=$("$bin" validate --output json "${files[@]}" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["files"]))' || true)
[ "$count" = "${#files[@]}" ] || { echo "ebpf.sh: validate listed $count of ${#files[@]} files" >&2; exit 1; }
t_plain=$(best_of "$runs" validate)
t_policy=$(best_of "$runs" validate --policy "$root/policies/default.toml")
ops_plain=$(calc "${#files[@]}/$t_plain")
ops_policy=$(calc "${#files[@]}/$t_policy")
phases=$("$root/target/release/examples/ebpf_phases" "$corpus" "$root/policies/default.toml")
echo "$phases" >&2
parse_share=$(awk '/^parse share/{print $3}' <<<"$phases")
digest_share=$(awk '/^digest share/{print $3}' <<<"$phases")
check_share=$(awk '/^check share/{print $3}' <<<"$phases")
verdict() { awk -v v="$1" 'BEGIN{exit !(v>=10000)}' && echo ok || echo MISS; }
echo "ebpf ${#files[@]} objects (${#objs[@]} distinct): validate $(fmt "$t_plain") s = $(fmt "$ops_plain" 0) objects/s [$(verdict "$ops_plain")]; with policy $(fmt "$t_policy") s = $(fmt "$ops_policy" 0) objects/s [$(verdict "$ops_policy")]; in-process (one core): ELF parsing ${parse_share}%, SHA-256 ${digest_share}%, checks ${check_share}%"
{
  echo "| eBPF validate ${#files[@]} objects, one invocation, \`--output json\` | — | $(fmt "$t_plain" 3) s, $(fmt "$ops_plain" 0) objects/s | — | ≥ 10,000 objects/s | $(verdict "$ops_plain") |"
  echo "| eBPF validate ${#files[@]} objects with \`--policy policies/default.toml\` (in-process, one core: ELF parsing ${parse_share} %, SHA-256 ${digest_share} %, checks ${check_share} %) | — | $(fmt "$t_policy" 3) s, $(fmt "$ops_policy" 0) objects/s | — | ≥ 10,000 objects/s | $(verdict "$ops_policy") |"
} > "$cache/ebpf.rows"
