# Shared helpers for the bench scripts (sourced). Timing: best (minimum) wall time of N runs, in
# seconds, measured with bash's EPOCHREALTIME; hyperfine is not needed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=$root/target/bench-cache
mkdir -p "$cache"
# The binary the figures are about: the release build as distributed (PGO, scripts/build-release.sh;
# set by build_release), and the plain `cargo build --release` one beside it.
bin=""
plain_bin=$root/target/release/bpfship

build_release() {
  (cd "$root" && cargo build --release --locked -p bpfship >&2)
  bin=$(bash "$root/scripts/build-release.sh")
}

# now: seconds since the epoch with microseconds.
now() { echo "$EPOCHREALTIME"; }

# best_of N CMD...: runs CMD N times (stdout/stderr discarded), prints the minimum wall time in
# seconds. Fails when CMD fails.
best_of() {
  local n=$1; shift
  local best="" t0 t1 dt
  for ((i = 0; i < n; i++)); do
    t0=$EPOCHREALTIME
    "$@" >/dev/null 2>&1 || { echo "bench: command failed: $*" >&2; "$@" >&2 || true; return 1; }
    t1=$EPOCHREALTIME
    dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.6f", b-a}')
    if [ -z "$best" ] || awk -v a="$dt" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$dt; fi
  done
  echo "$best"
}

# best_of_pair N CMD_A CMD_B: alternates the two commands (single words: functions or programs
# without arguments) N times each, so load from elsewhere hits both alike; prints "BEST_A BEST_B".
best_of_pair() {
  local n=$1 a=$2 b=$3 ta tb
  local best_a="" best_b=""
  for ((j = 0; j < n; j++)); do
    ta=$(best_of 1 "$a") || return 1
    tb=$(best_of 1 "$b") || return 1
    if [ -z "$best_a" ] || awk -v x="$ta" -v y="$best_a" 'BEGIN{exit !(x<y)}'; then best_a=$ta; fi
    if [ -z "$best_b" ] || awk -v x="$tb" -v y="$best_b" 'BEGIN{exit !(x<y)}'; then best_b=$tb; fi
  done
  echo "$best_a $best_b"
}

# min A B: the smaller number; an empty A counts as none.
min() { if [ -z "$1" ] || awk -v x="$2" -v y="$1" 'BEGIN{exit !(x<y)}'; then echo "$2"; else echo "$1"; fi; }

# calc EXPR: floating-point arithmetic with awk.
calc() { awk "BEGIN{printf \"%s\", $1}"; }
fmt() { awk -v v="$1" -v p="${2:-3}" 'BEGIN{printf "%.*f", p, v}'; }
