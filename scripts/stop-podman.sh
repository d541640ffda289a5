#!/usr/bin/env bash
# Stops the Podman services start-podman.sh started in DIR and removes DIR.
set -uo pipefail
DIR=${1:?usage: stop-podman.sh DIR}
for pidfile in "$DIR"/*.pid; do
  [ -f "$pidfile" ] && bash "$(dirname "$0")/wait-exit.sh" "$(cat "$pidfile")" 30
done
# conmon lingers up to 5 minutes after each exec (--exit-delay 300), and when it
# exits it runs `podman container cleanup`, which mounts the storage again:
# kill it outright, so no cleanup starts behind our back.
pkill -9 -f "conmon .*$DIR/" 2>/dev/null
if [ -f "$DIR/podman-cmd" ]; then
  CONTAINERS_CONF=$DIR/containers.conf eval "$(cat "$DIR/podman-cmd") rm -af -t 0" >/dev/null 2>&1
fi
deadline=$((SECONDS + 15))
while pgrep -f "podman .*$DIR/" >/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
pkill -9 -f "podman .*$DIR/" 2>/dev/null
bash "$(dirname "$0")/remove-tree.sh" "$DIR"
