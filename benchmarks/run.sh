#!/usr/bin/env bash
# Runs every benchmark, on purpose (they are not part of the test suite).
# Uses the engine in DOCKER_HOST if it answers; otherwise starts a private
# dockerd as scripts/test.sh does (run scripts/test.sh once first for the
# packages and .venv). Prints each benchmark's figures and the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if ! docker version >/dev/null 2>&1; then
  work=$(mktemp -d /tmp/sandbox-exporter-bench.XXXXXX)
  trap 'bash scripts/stop-dockerd.sh "$work"' EXIT
  DOCKER_HOST=$(bash scripts/start-dockerd.sh "$work")
  export DOCKER_HOST
fi
docker image inspect sandbox-exporter/busybox:local >/dev/null 2>&1 || .venv/bin/sandbox-exporter image build -b docker
echo "### bench (p50/p95 per backend)"; .venv/bin/sandbox-exporter bench -i 30 --image sandbox-exporter/busybox:local; echo
echo "### burst scaling (N launched together: namespace, Docker, gVisor)"; "$py" benchmarks/burst_scaling.py; echo
echo "### measurement overhead"; "$py" benchmarks/overhead.py -n 40; echo
"$py" benchmarks/overhead_kubernetes.py -n 40; echo
echo "### /metrics cost"; "$py" benchmarks/metrics_cost.py; echo
echo "### footprint"; "$py" benchmarks/footprint.py --idle 30; echo
echo "### scheduling accuracy"; "$py" benchmarks/scheduling.py --seconds 60; echo
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
echo "### /metrics under load"; "$py" benchmarks/load.py --seconds 15; echo
echo "### soak (benchmarks/soak.py --minutes 60 for the hour in BENCHMARKS.md)"
"$py" benchmarks/soak.py --minutes 5
echo "### chaos soak (benchmarks/soak.py --chaos --minutes 60 for the hour in BENCHMARKS.md 6b)"
"$py" benchmarks/soak.py --chaos --minutes 5
