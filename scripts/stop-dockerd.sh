#!/usr/bin/env bash
# Stops the dockerd that start-dockerd.sh started in DIR and removes DIR.
set -uo pipefail
DIR=${1:?usage: stop-dockerd.sh DIR}
[ -f "$DIR/docker.pid" ] && bash "$(dirname "$0")/wait-exit.sh" "$(cat "$DIR/docker.pid")" 30
# dockerd unmounts its layers on a clean stop; anything left must not block the removal
bash "$(dirname "$0")/remove-tree.sh" "$DIR"
