#!/usr/bin/env bash
# Starts a private dockerd for a test run: its own socket, data and exec roots
# under DIR, no iptables or bridge (probe sandboxes have no network). When
# gVisor's runsc is installed it is registered as the runtime `runsc`, through
# a wrapper that adds the flags it needs here (no network, no cgroups).
# Prints the DOCKER_HOST to use. Stop it with scripts/stop-dockerd.sh DIR.
set -euo pipefail
DIR=${1:?usage: start-dockerd.sh DIR}
mkdir -p "$DIR"
runtimes=()
if command -v runsc >/dev/null; then
  printf '#!/bin/sh\nexec %s --network=none --ignore-cgroups "$@"\n' "$(command -v runsc)" >"$DIR/runsc"
  chmod +x "$DIR/runsc"
  runtimes=(--add-runtime "runsc=$DIR/runsc")
fi
start() {
  # A dockerd (and its containerd) killed earlier may linger as zombies where
  # nothing reaps them; dockerd trusts a pid file whose process still exists.
  for pidfile in "$DIR/docker.pid" "$DIR/exec/containerd/containerd.pid"; do
    [ -f "$pidfile" ] || continue
    old=$(cat "$pidfile")
    if ! kill -0 "$old" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$old/stat" 2>/dev/null)" = Z ]; then
      rm -f "$pidfile"
    fi
  done
  dockerd --host "unix://$DIR/docker.sock" --data-root "$DIR/data" --exec-root "$DIR/exec" \
    --pidfile "$DIR/docker.pid" --iptables=false --ip6tables=false --ip-masq=false \
    --bridge=none "${runtimes[@]}" "$@" >>"$DIR/dockerd.log" 2>&1 &
  local deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    if docker -H "unix://$DIR/docker.sock" version >/dev/null 2>&1; then return 0; fi
    kill -0 $! 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}
if ! start; then
  echo "dockerd did not come up with its default storage driver; trying vfs" >&2
  [ -f "$DIR/docker.pid" ] && kill "$(cat "$DIR/docker.pid")" 2>/dev/null || true
  start --storage-driver=vfs || { tail -30 "$DIR/dockerd.log" >&2; exit 1; }
fi
echo "unix://$DIR/docker.sock"
