#!/usr/bin/env bash
# Keyless verify of one bundle, offline, side by side in one run: bpfship (whole command, and
# in-process: keyless/examples/keyless_verify.rs) vs sigstore-python (`sigstore --trust-config
# C verify identity --offline`) and sigstore-js (@sigstore/verify, bench/keyless-js/verify.mjs).
# The bundle: the sigstore-conformance happy-path-v0.3 (keyless, production trusted root).
# Installs its references (npm in bench/keyless-js, pip `sigstore` in a venv under the cache).
source "$(dirname "$0")/lib.sh"
cd "$root"
n=${BENCH_RUNS:-10}
suite=testdata/sigstore-conformance/bundle-verify
bundle=$suite/happy-path-v0.3/bundle.sigstore.json
file=$suite/a.txt
trusted_root=testdata/sigstore/trusted_root.production.json
identity=https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main
issuer=https://token.actions.githubusercontent.com

[ -d bench/keyless-js/node_modules/@sigstore/verify ] ||
  npm install --prefix bench/keyless-js --no-audit --no-fund --loglevel=error >&2
venv=$cache/sigstore-python
[ -x "$venv/bin/sigstore" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q sigstore >&2; }
# sigstore-python's client trust config: the same trusted root, and its production signing config.
trust_config=$cache/keyless-trust-config.json
python3 - "$trusted_root" "$venv" "$trust_config" <<'PY'
import glob, json, sys
root, venv, out = sys.argv[1:]
signing = glob.glob(f"{venv}/lib/python*/site-packages/sigstore/_store/https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/signing_config.v0.2.json")[0]
json.dump({"mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
           "trustedRoot": json.load(open(root)), "signingConfig": json.load(open(signing))}, open(out, "w"))
PY

cargo build --release --locked -p bpfship >&2
cargo build --release --locked -p bpfship-keyless --example keyless_verify >&2
bin=$root/target/release/bpfship
bpfship_cmd() { "$bin" verify-blob --trusted-root "$trusted_root" --bundle "$bundle" \
  --certificate-identity "$identity" --certificate-oidc-issuer "$issuer" "$file"; }
python_cmd() { "$venv/bin/sigstore" --trust-config "$trust_config" verify identity --offline \
  --bundle "$bundle" --cert-identity "$identity" --cert-oidc-issuer "$issuer" "$file"; }
js_cmd() { node bench/keyless-js/verify.mjs "$trusted_root" "$bundle" "$file" "$identity" "$issuer"; }

t_bpfship=$(best_of "$n" bpfship_cmd)
t_python=$(best_of "$n" python_cmd)
t_js=$(best_of "$n" js_cmd)
faster=$(min "$t_python" "$t_js")
in_js=$(node bench/keyless-js/verify.mjs "$trusted_root" "$bundle" "$file" "$identity" "$issuer" 200)
in_bpfship=$("$root/target/release/examples/keyless_verify" "$trusted_root" "$bundle" "$file" "$identity" "$issuer" 200)
in_total=$(awk -F'\t' '/^total/{print $2}' <<<"$in_bpfship")
echo "whole command: bpfship $(fmt "$t_bpfship") s, sigstore-python $(fmt "$t_python") s, sigstore-js $(fmt "$t_js") s; ratio $(fmt "$(calc "$t_bpfship/$faster")")× the faster"
echo "in-process (best of 200, root + parse + verify): bpfship $(fmt "$in_total" 6) s, sigstore-js $(fmt "$in_js" 6) s; ratio $(fmt "$(calc "$in_total/$in_js")")×"
echo "$in_bpfship" | sed 's/^/  bpfship /'
