#!/usr/bin/env bash
# Runs the exporter on this machine with what is here: Docker if an engine
# answers (with the busybox probe image built locally, no registry needed),
# the namespace backend always. Sets up a virtualenv on first use.
# Extra arguments go to `sandbox-exporter run` (e.g. --web.listen-address :9100).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/sandbox-exporter ]; then
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q -e '.[docker]'
fi
image=sandbox-exporter/busybox:local
if docker version >/dev/null 2>&1 && ! docker image inspect "$image" >/dev/null 2>&1; then
  command -v busybox >/dev/null || { [ "$(id -u)" -eq 0 ] && apt-get install -y -q busybox-static; }
  .venv/bin/sandbox-exporter image build -b docker --tag "$image"
fi
exec .venv/bin/sandbox-exporter run --config.file config/examples/local.yaml "$@"
