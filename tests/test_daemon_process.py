"""`sandbox-exporter run` as a real process against the real Docker engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_IMAGE, Engine
from tests.helpers import wait_for
from tests.process import ROOT, ExporterProcess

pytestmark = pytest.mark.docker


@pytest.fixture
def exporter(tmp_path: Path, docker_base_url: str, docker_client: Any) -> Iterator[ExporterProcess]:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
instance: daemon-test
defaults:
  interval: 1s
  jitter: 0s
  image: {TEST_IMAGE}
  pull_policy: never
  command: ["sh", "-c", "sleep 1; echo hello"]
targets:
  - name: docker
    backend: docker
    docker: {{base_url: "{docker_base_url}"}}
"""
    )
    process = ExporterProcess(config)
    yield process
    process.kill()


def test_sigterm_mid_probe_exits_zero_and_leaves_nothing(
    exporter: ExporterProcess, docker_client: Any
) -> None:
    labels = {"target": "docker", "backend": "docker"}
    wait_for(
        lambda: exporter.sample("sandbox_probes_total", result="success", **labels),
        timeout=60,
        what="first successful lifecycle in /metrics",
    )
    assert exporter.sample("sandbox_phase_duration_seconds_count", phase="exec", **labels) >= 1  # type: ignore[operator]
    # wait for the next probe to be inside its exec (which takes a second), then stop the daemon
    wait_for(
        lambda: (
            exporter.sample("sandbox_probe_in_progress", **labels) == 1
            and docker_client.containers.list(
                filters={"label": "sandbox-exporter.io/instance=daemon-test"}
            )
        ),
        timeout=30,
        what="a probe in flight",
    )
    exporter.proc.send_signal(signal.SIGTERM)
    assert exporter.proc.wait(timeout=60) == 0
    left = docker_client.containers.list(
        all=True, filters={"label": "sandbox-exporter.io/instance=daemon-test"}
    )
    assert left == []
    stopped = exporter.event("stopped")
    assert stopped is not None
    assert stopped["clean"] is True
    arenas = exporter.event("malloc arenas")  # before its threads: see malloc_arenas.py
    assert arenas is not None
    assert arenas["arenas"] == "capped at 2"


def test_default_run_without_a_config_probes_what_it_finds(docker_engine: Engine) -> None:
    """Needs an engine to find: skipped (or, in CI, failed) without one."""
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_EXPORTER_CONFIG_FILE"}
    env["DOCKER_HOST"] = docker_engine.url
    done = subprocess.run(
        [sys.executable, "-m", "sandbox_exporter", "check-config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "docker: backend docker" in done.stdout
    assert "namespace: backend namespace" in done.stdout


def test_sigkill_mid_probe_then_restart_removes_the_orphan(
    exporter: ExporterProcess, docker_client: Any
) -> None:
    mine = {"label": "sandbox-exporter.io/instance=daemon-test"}
    wait_for(
        lambda: docker_client.containers.list(filters=mine), timeout=60, what="a probe in flight"
    )
    exporter.proc.kill()  # SIGKILL: no cleanup at all
    exporter.proc.wait(timeout=30)
    left = docker_client.containers.list(all=True, filters=mine)
    assert len(left) == 1, "the killed exporter left its sandbox"
    restarted = ExporterProcess(exporter.config)
    try:
        labels = {"target": "docker", "backend": "docker"}
        wait_for(
            lambda: restarted.sample("sandbox_orphans_removed_total", **labels) == 1,
            timeout=60,
            what="the orphan removed at start-up and counted",
        )
        assert left[0].name not in {c.name for c in docker_client.containers.list(all=True)}
        removed = restarted.event("orphan removed")
        assert removed is not None
        assert removed["sandbox"] == left[0].name
    finally:
        restarted.proc.send_signal(signal.SIGTERM)
        assert restarted.proc.wait(timeout=60) == 0
    assert docker_client.containers.list(all=True, filters=mine) == []
