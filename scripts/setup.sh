#!/usr/bin/env bash
# Installs what bpfship's build, demo and tests need on a Debian machine with Rust, then builds.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(clang llvm libbpf-dev linux-libc-dev bpftool docker-registry skopeo wabt iproute2
          openssl apache2-utils curl python3 python3-venv nodejs npm procps
          umoci oci-image-tool golang-github-opencontainers-image-spec-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from outside Debian (e.g. /usr/bin/node already on the machine): keep it.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]:-}"
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=(); [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packaged docker-registry service is not wanted: tests start their own on loopback ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

# npm's @sigstore/verify: the independent reader of bpfship's bundles in the tests.
if [ -f testdata/js/package-lock.json ] && [ ! -d testdata/js/node_modules/@sigstore/verify ]; then
  npm ci --prefix testdata/js --no-audit --no-fund --loglevel=error
fi

# PyPI oras and jsonschema: independent readers of what bpfship pushes (cli/tests/ecosystem.rs).
venv=target/readers-venv
if ! "$venv/bin/python" -c "import oras, jsonschema" 2>/dev/null; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q oras jsonschema
fi

# bpffs and tracefs, for the agent and its tests (root only; harmless when already mounted).
if [ "$(id -u)" = 0 ]; then
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || echo "setup: cannot mount bpffs" >&2
  mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi
echo "setup: ok"
