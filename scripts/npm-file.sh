# Sourced by bench/wasm.sh and scripts/build-release.sh: npm_file PKG FILE_IN_PACKAGE OUT fetches
# one file of an npm package (`npm pack`, then extract) to OUT, once: an existing OUT is kept.
npm_file() {
  local pkg=$1 inner=$2 out=$3 d
  [ -s "$out" ] && return 0
  d=$(mktemp -d "$(dirname "$out")/pack.XXXXXX")
  (cd "$d" && npm pack --silent "$pkg" >/dev/null)
  tar -xzf "$d"/*.tgz -C "$d" "package/$inner"
  mv "$d/package/$inner" "$out"
  rm -rf "$d"
}
