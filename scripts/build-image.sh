#!/usr/bin/env bash
# Builds the exporter's image from the Dockerfile, where no registry is reachable:
# the base image is made here (debootstrap --variant=minbase of Debian bookworm with
# python3, then `docker import`), and pip in the build gets this machine's CA bundle
# as a build secret (for a TLS-inspecting proxy; it is in no layer of the image).
#
#   bash scripts/build-image.sh [TAG]      default TAG: sandbox-exporter:local
#
# Uses the engine in DOCKER_HOST (or the default socket); needs root and debootstrap
# for the base, which is made once per engine (sandbox-exporter/base:bookworm).
# BASE_IMAGE=python:3.11.10-slim-bookworm skips that where Docker Hub is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-sandbox-exporter:local}
base=${BASE_IMAGE:-sandbox-exporter/base:bookworm}
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

# BuildKit (for the secret): the CLI's buildx plugin, or a client with BuildKit built in
# (Debian's docker.io 20.10, in /usr/bin), whichever this machine has
if docker buildx version >/dev/null 2>&1; then
  build=(docker buildx build --load)
else
  build=()
  for cli in docker /usr/bin/docker; do
    if DOCKER_BUILDKIT=1 "$cli" build --help >/dev/null 2>&1; then
      build=(env DOCKER_BUILDKIT=1 "$cli" build)
      break
    fi
  done
  [ ${#build[@]} -gt 0 ] || { echo "no docker client with BuildKit (docker buildx, or docker.io 20.10+)" >&2; exit 1; }
fi

if [ "$base" = sandbox-exporter/base:bookworm ] && ! docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "debootstrap not found: apt-get install debootstrap" >&2; exit 1; }
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "== debootstrap of the base image in $rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" \
    "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  # what a runtime image never reads: package caches and lists, docs, manuals, locales
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/locale "$rootfs"/usr/share/info
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
fi

secret=()
[ -s "$ca" ] && secret=(--secret "id=ca,src=$ca")
echo "== building $tag on $base"
"${build[@]}" --network host "${secret[@]}" --build-arg "BASE_IMAGE=$base" -t "$tag" .
docker image inspect "$tag" --format "built $tag: {{.Size}} bytes"
