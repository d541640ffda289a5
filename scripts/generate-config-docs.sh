#!/usr/bin/env bash
# Rewrites the config file's JSON Schema, its reference page and the `config` value of
# the Helm chart's values schema from the models that load the file
# (sandbox_exporter/config/schema.py and reference.py). Run it after changing a config
# model; tests/test_config_schema.py fails while any of them is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
exporter=.venv/bin/sandbox-exporter
[ -x "$exporter" ] || exporter=sandbox-exporter
"$exporter" config schema >sandbox_exporter/config/sandbox-exporter.schema.json
"$exporter" config reference >docs/reference/configuration.md
python=.venv/bin/python
[ -x "$python" ] || python=python3
"$python" -m sandbox_exporter.config.schema helm/sandbox-exporter/values.schema.json
