#!/usr/bin/env bash
# Builds the probe image `sandbox-exporter/busybox:local` with no registry:
# a rootfs holding Debian's static busybox, imported with `docker import`.
# Uses the engine in DOCKER_HOST (or the default socket). Needs busybox-static.
# CONTAINER_CLI picks another client, e.g. "podman --root DIR/storage ..."
# (scripts/start-podman.sh writes the right one to DIR/podman-cmd).
set -euo pipefail
IMAGE=${1:-sandbox-exporter/busybox:local}
eval "cli=(${CONTAINER_CLI:-docker})"
BUSYBOX=$(command -v busybox) || { echo "busybox not found: apt-get install busybox-static" >&2; exit 1; }
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "$BUSYBOX is dynamically linked; install busybox-static" >&2
  exit 1
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
cp "$BUSYBOX" "$rootfs/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
tar -C "$rootfs" -cf "$rootfs.tar" .
"${cli[@]}" import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' "$rootfs.tar" "$IMAGE" >/dev/null
rm -f "$rootfs.tar"
"${cli[@]}" run --rm --network none "$IMAGE" echo hello | grep -qx hello
echo "built $IMAGE with ${cli[0]}"
