#!/usr/bin/env bash
# Builds every testdata/ebpf/*.c into OUTDIR/<name>.o with clang (-target bpf, -O2, -g; files
# named nobtf_* without -g). Also builds big-endian xdp_pass as OUTDIR/bigendian_xdp.o.
set -euo pipefail
out=${1:?usage: build-ebpf.sh OUTDIR}
src=$(cd "$(dirname "$0")/ebpf" && pwd)
mkdir -p "$out"
command -v clang >/dev/null || { echo "build-ebpf.sh: clang not found: run scripts/setup.sh" >&2; exit 2; }
inc=(-I"/usr/include/$(uname -m)-linux-gnu")
for c in "$src"/*.c; do
  name=$(basename "$c" .c)
  flags=(-O2 -g)
  [[ $name == nobtf_* ]] && flags=(-O2)
  if [ ! -e "$out/$name.o" ] || [ "$c" -nt "$out/$name.o" ]; then
    clang "${flags[@]}" -target bpf "${inc[@]}" -c "$c" -o "$out/$name.o.tmp"
    mv "$out/$name.o.tmp" "$out/$name.o"
  fi
done
if [ ! -e "$out/bigendian_xdp.o" ]; then
  clang -O2 -g -target bpfeb "${inc[@]}" -c "$src/xdp_pass.c" -o "$out/bigendian_xdp.o.tmp"
  mv "$out/bigendian_xdp.o.tmp" "$out/bigendian_xdp.o"
fi
