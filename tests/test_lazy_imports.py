"""A backend's SDK costs nothing until a target uses that backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SDKS = (
    "docker",
    "requests",
    "urllib3",
    "kubernetes",
    "websocket",
    "nomad",
    "hyperlight_sandbox",
    "python_guest",
    "google.protobuf",  # only a scrape that asks for protobuf needs it
)
SCRIPT = """
import sys
from prometheus_client import CollectorRegistry
from sandbox_exporter.config import parse_config
from sandbox_exporter.daemon import Daemon
config = parse_config({"targets": [
    {"name": "ns", "backend": "namespace"},
    {"name": "d", "backend": "docker", "docker": {"base_url": "unix:///nowhere.sock"}},
    {"name": "k", "backend": "k8s", "kubernetes": {"namespace": "probes"}},
    {"name": "n", "backend": "nomad", "nomad": {"address": "http://127.0.0.1:1"}},
    {"name": "h", "backend": "hyperlight", "hyperlight": {"start_mode": "restore"}},
]})
imported_by_config = sorted(m for m in SDKS if m in sys.modules)
daemon = Daemon(parse_config({"targets": [{"name": "ns", "backend": "namespace"}]}),
                listen_address=None)
print(",".join(imported_by_config) + "|" + ",".join(sorted(m for m in SDKS if m in sys.modules)))
"""


def test_config_and_a_namespace_only_daemon_import_no_sdk() -> None:
    """Validating every backend's block imports no SDK (the declarations are light);
    a namespace-only daemon never imports the Docker or Kubernetes client."""
    done = subprocess.run(
        [sys.executable, "-c", f"SDKS = {SDKS!r}\n{SCRIPT}"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "|", f"imported (by the config | by the daemon): {done.stdout}"
