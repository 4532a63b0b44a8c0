# Sourced by scripts/demo.sh and bench/transfer.sh: start_registry DIR starts Debian's
# docker-registry on a free loopback port with its storage in DIR, waits until it answers, and
# sets REGISTRY_PID and REGISTRY_ADDR (127.0.0.1:PORT). The caller stops it (kill $REGISTRY_PID).
start_registry() {
  local dir=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$dir/data"
  cat > "$dir/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
log:
  level: error
YML
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  REGISTRY_PID=$!
  REGISTRY_ADDR=127.0.0.1:$port
  for _ in $(seq 100); do
    curl -fs "http://$REGISTRY_ADDR/v2/" >/dev/null && return 0
    sleep 0.05
  done
  echo "docker-registry did not answer on $REGISTRY_ADDR (see $dir/registry.log)" >&2
  return 1
}
