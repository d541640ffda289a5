"""gVisor (runsc) as the runtime of Docker and Podman targets, proven from inside the sandbox."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.prober import Prober
from tests.conftest import TEST_IMAGE, Engine, unavailable
from tests.helpers import make_config

# gVisor's kernel writes its own boot messages; the host kernel refuses dmesg here.
LOOK_INSIDE = ["sh", "-c", "dmesg 2>&1 | head -1; cat /proc/version"]


@pytest.fixture(scope="session")
def gvisor_docker(docker_engine: Engine) -> Engine:
    if "runsc" not in docker_engine.client.info().get("Runtimes", {}):
        unavailable("gvisor", "dockerd has no runtime named runsc")
    return docker_engine


@pytest.fixture(scope="session")
def gvisor_podman(podman_engine: Engine) -> Engine:
    url = os.environ.get("SANDBOX_EXPORTER_PODMAN_RUNSC_URL")
    if not url:
        unavailable("gvisor", "no Podman service started with --runtime runsc")
    assert url is not None
    return Engine("podman", url, podman_engine.client)


def probe(engine: Engine, runtime: str | None) -> tuple[Any, CollectorRegistry]:
    options: dict[str, Any] = {"base_url": engine.url}
    if runtime:
        options["runtime"] = runtime
    target = make_config(
        {
            "name": "gvisor",
            "backend": engine.backend,
            "image": TEST_IMAGE,
            "pull_policy": "never",
            "command": LOOK_INSIDE,
            "expect_output": None,
            engine.backend: options,
        }
    ).targets[0]
    registry = CollectorRegistry()
    prober = Prober(target, "test-instance", Metrics(registry), stopping=threading.Event())
    result = prober.run()
    prober.close()
    return result, registry


@pytest.mark.parametrize("which", ["gvisor_docker", "gvisor_podman"])
def test_a_runsc_target_runs_under_gvisor_and_says_so(
    which: str, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue(which)
    result, registry = probe(engine, "runsc")
    assert result is not None
    assert result.success, result.failure
    assert "Starting gVisor" in (result.output or ""), result.output
    info = {
        "target": "gvisor",
        "backend": engine.backend,
        "image": TEST_IMAGE,
        "runtime": "runsc",
        "pull_policy": "never",
        "interval_seconds": "60",
    }
    assert registry.get_sample_value("sandbox_target_info", info) == 1


def test_without_a_runtime_the_same_probe_is_not_under_gvisor(gvisor_docker: Engine) -> None:
    result, _ = probe(gvisor_docker, None)
    assert result is not None
    assert result.success, result.failure
    assert "gVisor" not in (result.output or "")
