#!/usr/bin/env bash
# Stops the dockerd that start-dockerd.sh started in DIR and removes DIR.
set -uo pipefail
DIR=${1:?usage: stop-dockerd.sh DIR}
if [ -f "$DIR/docker.pid" ]; then
  pid=$(cat "$DIR/docker.pid")
  kill "$pid" 2>/dev/null
  deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  kill -9 "$pid" 2>/dev/null
fi
# dockerd unmounts its layers on a clean stop; anything left must not block the removal
grep -o " $DIR[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
rm -rf "$DIR"
