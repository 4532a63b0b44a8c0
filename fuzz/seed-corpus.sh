#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from testdata: the built eBPF objects, the WAT modules (with
# wat2wasm from Debian's wabt), cosign's keys (first byte picks the parser) and bundles/signature
# files (first byte picks the reader). The corpus directory is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
c=fuzz/corpus
mkdir -p $c/ebpf_elf $c/wasm_module $c/cosign_key $c/signature_bundle
bash testdata/build-ebpf.sh target/testdata-ebpf
cp target/testdata-ebpf/*.o $c/ebpf_elf/
if command -v wat2wasm >/dev/null; then
  for f in testdata/wasm/*.wat; do
    wat2wasm --enable-all "$f" -o "$c/wasm_module/$(basename "$f" .wat).wasm" 2>/dev/null || true
  done
fi
for f in testdata/cosign/keys/*; do
  n=$(basename "$f")
  { printf '\x00'; cat "$f"; } >"$c/cosign_key/pub-$n"
  { printf '\x02'; cat "$f"; } >"$c/cosign_key/plain-$n"
  { printf '\x03'; cat "$f"; } >"$c/cosign_key/enc-$n"
done
i=0
for f in $(find testdata/cosign/conformance -name '*.json'); do
  i=$((i + 1)); { printf '\x00'; cat "$f"; } >"$c/signature_bundle/bundle-$i"
done
for f in $(find testdata/cosign/containers-image -name 'signature-*'); do
  i=$((i + 1)); { printf '\x01'; cat "$f"; } >"$c/signature_bundle/sigfile-$i"
done
echo "seeded $c"
