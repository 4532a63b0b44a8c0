#!/usr/bin/env bash
# WASM validation speed: bpfship vs wabt's wasm-validate on two large real modules from npm
# (@duckdb/duckdb-wasm dist/duckdb-mvp.wasm, @swc/wasm wasm_bg.wasm). Both tools run side by side
# (bpfship with its default text output; --output json, which adds the SHA-256, is shown too)
# in this one run; best of N wall times. bpfship is the release binary as distributed (PGO build,
# scripts/build-release.sh); the plain `cargo build --release` binary is timed beside it.
# Prints one line per file and a summary table (markdown) on the last lines.
# Targets: bpfship <= 0.05x wasm-validate and >= 400 MB/s.
# Env: BENCH_RUNS (bpfship runs, default 7), BENCH_REF_RUNS (wasm-validate runs, default 2).
source "$(dirname "$0")/lib.sh"
runs=${BENCH_RUNS:-7}
ref_runs=${BENCH_REF_RUNS:-2}
command -v wasm-validate >/dev/null || { echo "wasm.sh: wasm-validate not found: run scripts/setup.sh" >&2; exit 2; }

# shellcheck source=scripts/npm-file.sh
. "$(dirname "$0")/../scripts/npm-file.sh"
npm_file @duckdb/duckdb-wasm dist/duckdb-mvp.wasm "$cache/duckdb-mvp.wasm"
npm_file @swc/wasm wasm_bg.wasm "$cache/swc-wasm_bg.wasm"
build_release

rows=()
for f in duckdb-mvp.wasm swc-wasm_bg.wasm; do
  path=$cache/$f
  size=$(stat -c %s "$path")
  mb=$(calc "$size/1e6")
  # Both must agree that the module is valid (exit 0), else the comparison is meaningless.
  wasm-validate "$path" || { echo "wasm.sh: wasm-validate rejects $f" >&2; exit 1; }
  "$bin" validate "$path" >/dev/null || { echo "wasm.sh: bpfship rejects $f" >&2; exit 1; }
  # Rounds alternate the tools, so load from elsewhere hits both alike: each round runs
  # wasm-validate once and bpfship ceil(runs/ref_runs) times; the best of all rounds counts.
  per=$(((runs + ref_runs - 1) / ref_runs))
  t_ref="" t_bs="" t_json="" t_plain=""
  for ((round = 0; round < ref_runs; round++)); do
    r=$(best_of 1 wasm-validate "$path")
    b=$(best_of "$per" "$bin" validate "$path")
    # --output json also carries the file's SHA-256, which the text report does not show.
    j=$(best_of "$per" "$bin" validate --output json "$path")
    p=$(best_of "$per" "$plain_bin" validate "$path")
    t_ref=$(min "$t_ref" "$r") t_bs=$(min "$t_bs" "$b") t_json=$(min "$t_json" "$j") t_plain=$(min "$t_plain" "$p")
  done
  ratio=$(calc "$t_bs/$t_ref")
  mbs=$(calc "$mb/$t_bs")
  ref_mbs=$(calc "$mb/$t_ref")
  plain_mbs=$(calc "$mb/$t_plain")
  v_ratio=ok; awk -v r="$ratio" 'BEGIN{exit !(r<=0.05)}' || v_ratio=MISS
  v_mbs=ok; awk -v m="$mbs" 'BEGIN{exit !(m>=400)}' || v_mbs=MISS
  verdict="ratio $v_ratio, MB/s $v_mbs"
  echo "wasm $f: $(fmt "$mb" 1) MB  wasm-validate $(fmt "$t_ref") s ($(fmt "$ref_mbs" 1) MB/s)  bpfship validate $(fmt "$t_bs") s ($(fmt "$mbs" 0) MB/s; --output json $(fmt "$t_json") s; plain cargo build $(fmt "$t_plain") s, $(fmt "$plain_mbs" 0) MB/s)  ratio $(fmt "$ratio")  [$verdict]"
  rows+=("| WASM validate \`$f\` ($(fmt "$mb" 1) MB) | \`wasm-validate\` $(fmt "$t_ref" 2) s | $(fmt "$t_bs" 3) s, $(fmt "$mbs" 0) MB/s (\`--output json\`, with SHA-256: $(fmt "$t_json" 3) s; plain \`cargo build --release\`: $(fmt "$t_plain" 3) s, $(fmt "$plain_mbs" 0) MB/s) | $(fmt "$ratio" 3)× | ≤ 0.05×, ≥ 400 MB/s | $verdict |")
done
printf '%s\n' "${rows[@]}" > "$cache/wasm.rows"
