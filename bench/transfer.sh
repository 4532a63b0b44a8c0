#!/usr/bin/env bash
# Registry transfer: bpfship push/pull vs skopeo copy moving the same content the same way, side
# by side in one run, against Debian's docker-registry on a free loopback port (plain HTTP).
# * artifact: a valid 1 MiB WASM module (one memory, one 1 MiB active data segment of random
#   bytes), generated here;
# * push: `bpfship push FILE REG/bpfship-N:v1` (unsigned, fresh repository each run) vs
#   `skopeo copy oci:LAYOUT REG/skopeo-N:v1` of the very same manifest, config and layer;
# * pull: `bpfship pull REF --key cosign.pub -o DIR` (signatures found and checked, blob digests
#   checked, file written) vs `skopeo copy docker://REF dir:DIR` of the same artifact;
# * signing: `push --key` minus unsigned push, and `bpfship public-key --key cosign.key` (the
#   scrypt decryption of the encrypted key, which cosign pays too) as its share.
# Best of N wall times. Target: bpfship <= 1x skopeo.
# Env: BENCH_RUNS (default 7).
source "$(dirname "$0")/lib.sh"
runs=${BENCH_RUNS:-7}
for t in docker-registry skopeo curl python3; do
  command -v "$t" >/dev/null || { echo "transfer.sh: $t not found: run scripts/setup.sh" >&2; exit 2; }
done
build_release

work=$(mktemp -d "$cache/transfer.XXXXXX")
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=scripts/registry.sh
. "$(dirname "$0")/../scripts/registry.sh"
start_registry "$work/registry"
reg_pid=$REGISTRY_PID
reg=$REGISTRY_ADDR

# A valid WASM module of 1 MiB + a few bytes: memory of 17 pages, one active data segment at 0.
python3 - "$work/artifact.wasm" <<'PY'
import os, sys
def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7f; n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)
def section(i, body): return bytes([i]) + leb(len(body)) + body
payload = os.urandom(1 << 20)
mem = section(5, leb(1) + b"\x00" + leb(17))
seg = leb(0) + b"\x41\x00\x0b" + leb(len(payload)) + payload
data = section(11, leb(1) + seg)
open(sys.argv[1], "wb").write(b"\0asm\1\0\0\0" + mem + data)
PY
wasm-validate "$work/artifact.wasm" 2>/dev/null || "$bin" validate "$work/artifact.wasm" >/dev/null
size=$(stat -c %s "$work/artifact.wasm")

export COSIGN_PASSWORD=bench-password
"$bin" generate-key-pair --output-key-prefix "$work/cosign" >/dev/null 2>&1

# The skopeo source: an OCI layout holding exactly what bpfship pushed.
"$bin" push "$work/artifact.wasm" "$reg/seed:v1" >/dev/null
skopeo copy --quiet --insecure-policy --src-tls-verify=false "docker://$reg/seed:v1" "oci:$work/layout:v1"
# The pulled artifact: signed, so pull verifies a signature.
"$bin" push "$work/artifact.wasm" "$reg/signed:v1" --key "$work/cosign.key" >/dev/null 2>&1

# A fresh repository each run (timings run in subshells: the name comes from the clock).
fresh() { echo "$1-${EPOCHREALTIME/./}"; }
bpfship_push() { "$bin" push "$work/artifact.wasm" "$reg/$(fresh bpfship):v1"; }
bpfship_push_signed() { "$bin" push "$work/artifact.wasm" "$reg/$(fresh signed):v1" --key "$work/cosign.key"; }
skopeo_push() {
  skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$work/layout:v1" "docker://$reg/$(fresh skopeo):v1"
}
bpfship_pull() { rm -rf "$work/pull-b"; "$bin" pull "$reg/signed:v1" --key "$work/cosign.pub" -o "$work/pull-b"; }
skopeo_pull() { rm -rf "$work/pull-s"; skopeo copy --quiet --insecure-policy --src-tls-verify=false "docker://$reg/signed:v1" "dir:$work/pull-s"; }
bpfship_scrypt() { "$bin" public-key --key "$work/cosign.key"; }

# Sanity: what bpfship pulled is the artifact, byte for byte.
bpfship_pull >/dev/null && cmp -s "$work/pull-b/"*.wasm "$work/artifact.wasm" || { echo "transfer.sh: pulled file differs" >&2; exit 1; }

# The two tools alternate run by run so load from elsewhere hits both alike.
read -r t_bpush t_spush < <(best_of_pair "$runs" bpfship_push skopeo_push)
read -r t_bpull t_spull < <(best_of_pair "$runs" bpfship_pull skopeo_pull)
read -r t_sign t_plain < <(best_of_pair "$runs" bpfship_push_signed bpfship_push)
t_scrypt=$(best_of "$runs" bpfship_scrypt)
r_push=$(calc "$t_bpush/$t_spush")
r_pull=$(calc "$t_bpull/$t_spull")
overhead=$(calc "$t_sign-$t_plain")
scrypt_share=$(calc "100*$t_scrypt/($overhead > 0 ? $overhead : 1e-9)")
v() { awk -v r="$1" 'BEGIN{exit !(r<=1)}' && echo ok || echo MISS; }
mib=$(fmt "$(calc "$size/1048576")" 2)
echo "transfer ${mib} MiB: push bpfship $(fmt "$t_bpush") s vs skopeo copy $(fmt "$t_spush") s, ratio $(fmt "$r_push" 2) [$(v "$r_push")]"
echo "transfer ${mib} MiB: pull+verify bpfship $(fmt "$t_bpull") s vs skopeo copy $(fmt "$t_spull") s, ratio $(fmt "$r_pull" 2) [$(v "$r_pull")]"
echo "transfer signing: push --key $(fmt "$t_sign") s, overhead $(fmt "$overhead") s, of which scrypt key decryption (public-key --key) $(fmt "$t_scrypt") s = $(fmt "$scrypt_share" 0)%"
{
  echo "| \`push\` ${mib} MiB WASM, unsigned, fresh repository | \`skopeo copy oci:… docker://…\` $(fmt "$t_spush" 3) s | $(fmt "$t_bpush" 3) s | $(fmt "$r_push" 2)× | ≤ 1× | $(v "$r_push") |"
  echo "| \`pull --key cosign.pub -o DIR\` (verify + fetch + write) | \`skopeo copy docker://… dir:…\` $(fmt "$t_spull" 3) s | $(fmt "$t_bpull" 3) s | $(fmt "$r_pull" 2)× | ≤ 1× | $(v "$r_pull") |"
  echo "| \`push --key\` signing overhead (legacy \`.sig\` + bundle referrer) | — | +$(fmt "$overhead" 3) s, of which scrypt key decryption $(fmt "$t_scrypt" 3) s ($(fmt "$scrypt_share" 0) %) | — | report | — |"
} > "$cache/transfer.rows"
