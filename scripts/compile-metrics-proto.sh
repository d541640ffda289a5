#!/usr/bin/env bash
# Regenerates sandbox_exporter/metrics/proto/metrics_pb2.py{,i} from prometheus/client_model's
# official metrics.proto, as Debian packages both (protobuf-compiler 3.21, and
# golang-github-prometheus-client-model-dev 0.3.0: the client_model Prometheus 2.42 is built
# with). tests/test_protobuf_exposition.py runs this into a temporary folder and fails when
# the checked-in module differs.
#   apt-get install protobuf-compiler golang-github-prometheus-client-model-dev
#   bash scripts/compile-metrics-proto.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=/usr/share/gocode/src/github.com/prometheus/client_model
OUT=${1:-sandbox_exporter/metrics/proto}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
protoc -I"$MODEL" -I/usr/include --python_out="$WORK" --pyi_out="$WORK" \
  "$MODEL/io/prometheus/client/metrics.proto"
mkdir -p "$OUT"
cp "$WORK/io/prometheus/client/metrics_pb2.py" "$WORK/io/prometheus/client/metrics_pb2.pyi" "$OUT/"
