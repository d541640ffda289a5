#!/usr/bin/env bash
# Builds the probe image `sandbox-exporter/busybox:local` with no registry:
# a rootfs holding Debian's static busybox, imported with `docker import`.
# Uses the engine in DOCKER_HOST (or the default socket). Needs busybox-static.
set -euo pipefail
IMAGE=${1:-sandbox-exporter/busybox:local}
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
tar -C "$rootfs" -c . | docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$IMAGE" >/dev/null
docker run --rm --network none "$IMAGE" echo hello | grep -qx hello
echo "built $IMAGE"
