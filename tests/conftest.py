"""Fixtures for the real engines. scripts/test.sh starts them; elsewhere they are skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from exporter.backends.base import MANAGED_LABEL
from exporter.discovery import docker_url, unix_socket_answers_ping

TEST_IMAGE = os.environ.get("SANDBOX_EXPORTER_TEST_IMAGE", "sandbox-exporter/busybox:local")
REQUIRED = {e for e in os.environ.get("SANDBOX_EXPORTER_REQUIRE", "").split(",") if e}


def _unavailable(engine: str, reason: str) -> None:
    """Skip, unless the test script said this engine must be there (then fail)."""
    if engine in REQUIRED:
        pytest.fail(f"{engine} is required for this run but {reason}")
    pytest.skip(f"{reason} (scripts/test.sh starts one)")


@pytest.fixture(scope="session")
def docker_base_url() -> str:
    url = docker_url()
    if not url.startswith("unix://") or not unix_socket_answers_ping(url.removeprefix("unix://")):
        _unavailable("docker", f"no Docker engine answers at {url}")
    return url


@pytest.fixture(scope="session")
def docker_client(docker_base_url: str) -> Iterator[Any]:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=docker_base_url)
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable("docker", f"test image {TEST_IMAGE} is missing (scripts/build-test-image.sh)")
    yield client
    leftovers = client.containers.list(all=True, filters={"label": f"{MANAGED_LABEL}=true"})
    names = [c.name for c in leftovers]
    for container in leftovers:
        container.remove(force=True)
    client.close()
    assert not names, f"managed containers left behind by the suite: {names}"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """CLI tests configure structlog onto pytest's captured stderr; undo that after each test."""
    yield
    structlog.reset_defaults()
