#!/usr/bin/env bash
# Builds every testdata/ebpf/*.c into OUTDIR/<name>.o with clang (-target bpf, -O2, -g; files
# named nobtf_* without -g). Also builds big-endian xdp_pass as OUTDIR/bigendian_xdp.o, and the
# agent's test versions from testdata/agent into OUTDIR/agent/<name>.o.
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

# The agent's versions: name:source:flags.
agent=(v1:version:"-DVERSION=1" v2:version:"-DVERSION=2" v3_abort:version:"-DVERSION=3 -DBEHAVIOUR=1"
       v3_drop:version:"-DVERSION=3 -DBEHAVIOUR=2" v3_counter:version:"-DVERSION=3 -DBEHAVIOUR=3"
       v4:version:"-DVERSION=4" v5_reject:version:"-DVERSION=5 -DBEHAVIOUR=4" v6:version:"-DVERSION=6"
       v7:version:"-DVERSION=7" v8_frags:version:"-DVERSION=8 -DFRAGS" big1:big:"-DVERSION=1" big2:big:"-DVERSION=2" pin16:pinned:"-DENTRIES=16" pin16b:pinned:"-DENTRIES=16 -DVERSION=2" pin32:pinned:"-DENTRIES=32" up1:uprobe:"-DVERSION=1" up2:uprobe:"-DVERSION=2" tp1:events:"-DVERSION=1" tp2:events:"-DVERSION=2"
       percpu_health:percpu_health:""
       vd_pass1:verdicts:"-DVERSION=1" vd_pass2:verdicts:"-DVERSION=2" vd_drop:verdicts:"-DVERSION=3 -DBEHAVIOUR=1"
       vd_tx:verdicts:"-DVERSION=4 -DBEHAVIOUR=2" vd_mixed:verdicts:"-DVERSION=5 -DBEHAVIOUR=3"
       tcv_ok1:tc_verdicts:"-DVERSION=1" tcv_ok2:tc_verdicts:"-DVERSION=2"
       tcv_shot:tc_verdicts:"-DVERSION=3 -DBEHAVIOUR=1" tcv_redirect:tc_verdicts:"-DVERSION=4 -DBEHAVIOUR=2")
asrc=$(cd "$(dirname "$0")/agent" && pwd)
mkdir -p "$out/agent"
for spec in "${agent[@]}"; do
  IFS=: read -r name source defs <<<"$spec"
  if [ ! -e "$out/agent/$name.o" ] || [ "$asrc/$source.c" -nt "$out/agent/$name.o" ] ||
     [ "$asrc/bpfship_health.h" -nt "$out/agent/$name.o" ]; then
    # shellcheck disable=SC2086
    clang -O2 -g -target bpf "${inc[@]}" $defs -c "$asrc/$source.c" -o "$out/agent/$name.o.tmp"
    mv "$out/agent/$name.o.tmp" "$out/agent/$name.o"
  fi
done
