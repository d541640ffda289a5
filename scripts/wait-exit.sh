#!/usr/bin/env bash
# wait-exit.sh PID SECONDS: SIGTERM, wait (a zombie counts as gone: nothing may reap
# it here), then SIGKILL.
set -uo pipefail
pid=$1
alive() { kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; }
kill "$pid" 2>/dev/null
deadline=$((SECONDS + ${2:-30}))
while alive && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
alive && kill -9 "$pid" 2>/dev/null
exit 0
