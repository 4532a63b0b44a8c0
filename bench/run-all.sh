#!/usr/bin/env bash
# Runs every benchmark (bench/wasm.sh, bench/ebpf.sh, bench/transfer.sh) and prints one markdown
# table of the figures, each measured side by side with its reference in this one run.
# `bash bench/run-all.sh --readme` also writes the table into README.md's Performance section
# (between the bench:begin/bench:end markers).
source "$(dirname "$0")/lib.sh"
cd "$root"
build_release
rm -f "$cache"/{wasm,ebpf,transfer}.rows
bash bench/wasm.sh
bash bench/ebpf.sh
bash bench/transfer.sh
table=$(mktemp)
trap 'rm -f "$table"' EXIT
{
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), load average at the start $(cut -d' ' -f1 /proc/loadavg); best of N wall times, bpfship $(git rev-parse --short HEAD)."
  echo
  echo "| Benchmark | Reference (same run) | bpfship | Ratio | Target | Verdict |"
  echo "|---|---|---|---|---|---|"
  cat "$cache/wasm.rows" "$cache/ebpf.rows" "$cache/transfer.rows"
} > "$table"
echo
cat "$table"
if [ "${1:-}" = "--readme" ]; then
  python3 - "$root/README.md" "$table" <<'PY'
import re, sys
readme, table = sys.argv[1], open(sys.argv[2]).read().strip()
text = open(readme).read()
new, n = re.subn(r"(<!-- bench:begin -->\n).*?(\n<!-- bench:end -->)",
                 lambda m: m.group(1) + table + m.group(2), text, flags=re.S)
if n != 1:
    sys.exit("run-all.sh: README.md has no bench:begin/bench:end markers")
open(readme, "w").write(new)
PY
  echo "README.md updated"
fi
