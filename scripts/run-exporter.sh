#!/usr/bin/env bash
# Runs the exporter on this machine with every backend found here
# (config/examples/local.yaml is `targets: auto`): Docker or Podman if an engine
# answers, with the busybox probe image built locally (no registry needed), the
# namespace backend where util-linux can make namespaces (as root, or with user
# namespaces). Sets up a virtualenv on first use.
# Extra arguments go to `sandbox-exporter run` (e.g. --web.listen-address :9100).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/sandbox-exporter ]; then
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q -e '.[docker]'
fi
image=sandbox-exporter/busybox:local
config=config/examples/local.yaml
# the probe image in every engine the config finds that takes images from the exporter
# (Docker, Podman: local.yaml uses it with pull_policy: never), from the host's static
# busybox; an engine that already has it is given it again, which takes a moment
exporter=.venv/bin/sandbox-exporter
if "$exporter" check-config --config.file "$config" 2>/dev/null | grep -qE ': backend (docker|podman),'; then
  command -v busybox >/dev/null || { [ "$(id -u)" -eq 0 ] && apt-get install -y -q busybox-static; } || true
  "$exporter" image build --config.file "$config" --tag "$image" ||
    echo "run-exporter.sh: the probe image is missing from an engine (above); its targets will fail until it is there" >&2
fi
exec "$exporter" run --config.file "$config" "$@"
