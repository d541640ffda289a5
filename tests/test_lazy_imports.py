"""A backend's SDK costs nothing until a target uses that backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from prometheus_client import CollectorRegistry
from exporter.config import parse_config
from exporter.daemon import Daemon
from exporter.probing.lifecycle import LifecycleRunner
config = parse_config({"targets": [{"name": "ns", "backend": "namespace"}]})
daemon = Daemon(config, listen_address=None)
print(",".join(sorted(m for m in ("docker", "requests", "urllib3", "kubernetes") if m in sys.modules)))
"""


def test_a_namespace_only_daemon_never_imports_the_docker_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=Path(__file__).parent.parent, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "", f"imported: {done.stdout.strip()}"
