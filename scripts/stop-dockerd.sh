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
bash "$(dirname "$0")/remove-tree.sh" "$DIR"
