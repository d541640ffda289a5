#!/usr/bin/env bash
# Rewrites the config file's JSON Schema and its reference page from the models that
# load the file (sandbox_exporter/config/schema.py and reference.py). Run it after
# changing a config model; tests/test_config_schema.py fails while either is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
exporter=.venv/bin/sandbox-exporter
[ -x "$exporter" ] || exporter=sandbox-exporter
"$exporter" config schema >sandbox_exporter/config/sandbox-exporter.schema.json
"$exporter" config reference >docs/reference/configuration.md
