#!/usr/bin/env bash
# Removes DIR after unmounting anything an engine left mounted below it.
set -uo pipefail
DIR=${1:?usage: remove-tree.sh DIR}
grep -o " $DIR[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
rm -rf "$DIR"
