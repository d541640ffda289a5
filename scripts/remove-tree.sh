#!/usr/bin/env bash
# Removes DIR after unmounting anything an engine left mounted below it.
# Retries for a few seconds: an engine's helper may still be letting go.
set -uo pipefail
DIR=${1:?usage: remove-tree.sh DIR}
deadline=$((SECONDS + 10))
while :; do
  grep -o " $DIR/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$DIR" 2>/dev/null && exit 0
  if [ $SECONDS -ge $deadline ]; then
    rm -rf "$DIR"  # once more, with its error shown
    exit 1
  fi
  sleep 0.2
done
