#!/usr/bin/env bash
# Starts private Podman API services for a test run, storage and state under DIR:
#   DIR/podman.sock        the default OCI runtime (runc or crun)
#   DIR/podman-runsc.sock  the same storage, runtime gVisor (runsc), if installed
# Podman picks the OCI runtime per process, not per container, hence two services.
# Its default ulimits exceed what these machines allow: containers.conf lowers them.
# Prints the URL of the first socket. Stop them with scripts/stop-podman.sh DIR.
set -euo pipefail
DIR=${1:?usage: start-podman.sh DIR}
mkdir -p "$DIR"
{
  printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n\n'
  printf '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
  if command -v runsc >/dev/null; then
    printf '#!/bin/sh\nexec %s --network=none --ignore-cgroups "$@"\n' "$(command -v runsc)" >"$DIR/runsc"
    chmod +x "$DIR/runsc"
    printf '\n[engine.runtimes]\nrunsc = ["%s"]\n' "$DIR/runsc"
  fi
} >"$DIR/containers.conf"
export CONTAINERS_CONF=$DIR/containers.conf
podman_cmd=(podman --root "$DIR/storage" --runroot "$DIR/run" --tmpdir "$DIR/tmp")
printf '%q ' "${podman_cmd[@]}" >"$DIR/podman-cmd"
start() {  # NAME, extra global flags...
  local name=$1
  shift
  "${podman_cmd[@]}" "$@" system service --time=0 "unix://$DIR/$name.sock" >>"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
  local deadline=$((SECONDS + 60))
  until curl -sf --unix-socket "$DIR/$name.sock" http://podman/_ping >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$(cat "$DIR/$name.pid")" 2>/dev/null; then
      tail -30 "$DIR/$name.log" >&2
      return 1
    fi
    sleep 0.2
  done
}
start podman
if [ -x "$DIR/runsc" ]; then
  start podman-runsc --runtime runsc
fi
echo "unix://$DIR/podman.sock"
