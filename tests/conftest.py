"""Fixtures for the real engines. scripts/test.sh starts them; elsewhere they are skipped.

Engines are found where an operator's would be (DOCKER_HOST, Podman's
socket), or where scripts/test.sh put them:
  SANDBOX_EXPORTER_PODMAN_URL        Podman service, default OCI runtime
  SANDBOX_EXPORTER_PODMAN_RUNSC_URL  Podman service started with --runtime runsc
SANDBOX_EXPORTER_REQUIRE=docker,podman,gvisor makes a missing one a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox_exporter.backends.base import MANAGED_LABEL
from sandbox_exporter.backends.docker import docker_url, ping_unix_socket
from sandbox_exporter.backends.podman import podman_url
from sandbox_exporter.logs import reset_logging
from tests.firecracker_guest_fixture import firecracker_guest_image as firecracker_guest_image

TEST_IMAGE = os.environ.get("SANDBOX_EXPORTER_TEST_IMAGE", "sandbox-exporter/busybox:local")
REQUIRED = {e for e in os.environ.get("SANDBOX_EXPORTER_REQUIRE", "").split(",") if e}


def unavailable(what: str, reason: str) -> None:
    """Skip, unless the test script said this must be there (then fail)."""
    if what in REQUIRED:
        pytest.fail(f"{what} is required for this run but {reason}")
    pytest.skip(f"{reason} (scripts/test.sh starts one)")


@dataclass
class Engine:
    """A Docker-API engine under test: its backend name, URL and a docker SDK client."""

    backend: str
    url: str
    client: Any

    def managed(self, **labels: str) -> list[Any]:
        """The managed containers (with `labels`), as listed: sparse, so that one removed
        between the listing and its inspection (a run cleaning up) is no error."""
        wanted = [f"{MANAGED_LABEL}=true", *(f"{k}={v}" for k, v in labels.items())]
        return list(self.client.containers.list(all=True, filters={"label": wanted}, sparse=True))


def _connect(backend: str, url: str) -> Iterator[Engine]:
    if not url.startswith("unix://") or ping_unix_socket(url.removeprefix("unix://")) is not None:
        unavailable(backend, f"no {backend} engine answers at {url}")
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=url)
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(backend, f"test image {TEST_IMAGE} is missing (sandbox-exporter image build)")
    engine = Engine(backend, url, client)
    yield engine
    leftovers = engine.managed()
    names = [c.attrs["Names"] for c in leftovers]
    for container in leftovers:
        container.remove(force=True)
    client.close()
    assert not names, f"managed containers left behind on {backend}: {names}"


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    yield from _connect("docker", docker_url())


@pytest.fixture(scope="session")
def podman_engine() -> Iterator[Engine]:
    yield from _connect("podman", os.environ.get("SANDBOX_EXPORTER_PODMAN_URL") or podman_url())


@pytest.fixture(scope="session", params=["docker", "podman"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each Docker-API engine present, in turn."""
    found: Engine = request.getfixturevalue(f"{request.param}_engine")
    return found


@pytest.fixture(scope="session")
def docker_base_url(docker_engine: Engine) -> str:
    return docker_engine.url


@pytest.fixture(scope="session")
def docker_client(docker_engine: Engine) -> Any:
    return docker_engine.client


ROOT = Path(__file__).resolve().parent.parent
FIRECRACKER_DIR = ROOT / os.environ.get("SANDBOX_EXPORTER_FIRECRACKER_DIR", ".cache/firecracker")


@dataclass(frozen=True)
class FirecrackerBinaries:
    """The real Firecracker v1.12.1 VMM and jailer (scripts/fetch-firecracker.sh)."""

    firecracker: Path
    jailer: Path


@pytest.fixture(scope="session")
def firecracker_binaries() -> FirecrackerBinaries:
    found = FirecrackerBinaries(
        (FIRECRACKER_DIR / "firecracker").absolute(), (FIRECRACKER_DIR / "jailer").absolute()
    )
    if not (os.access(found.firecracker, os.X_OK) and os.access(found.jailer, os.X_OK)):
        unavailable(
            "firecracker",
            f"the real Firecracker binaries are not in {FIRECRACKER_DIR}"
            " (bash scripts/fetch-firecracker.sh fetches them)",
        )
    return found


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """CLI tests configure structlog onto pytest's captured stderr; undo that after each test."""
    yield
    reset_logging()
