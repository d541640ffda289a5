"""`targets: auto` finds the engines that answer, each once."""

from __future__ import annotations

import pytest

from sandbox_exporter.backends.podman import podman_url
from sandbox_exporter.config.discovery import discover, discover_targets
from tests.conftest import Engine


def backends(found: list[dict[str, object]]) -> list[str]:
    return [str(t["backend"]) for t in found]


def test_podman_socket_is_found(podman_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_HOST", podman_engine.url)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    found = discover_targets()
    assert backends(found) == ["podman", "namespace"]
    assert found[0]["podman"] == {"base_url": podman_engine.url}


def test_docker_and_podman_are_both_found(
    docker_engine: Engine, podman_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_HOST", podman_engine.url)
    monkeypatch.setenv("DOCKER_HOST", docker_engine.url)
    assert backends(discover_targets()) == ["docker", "podman", "namespace"]


def test_podman_behind_docker_host_is_probed_once(
    podman_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_HOST", podman_engine.url)
    monkeypatch.setenv("DOCKER_HOST", podman_engine.url)
    found, missing = discover()
    assert backends(found) == ["docker", "namespace"]
    assert missing["podman"] == f"{podman_engine.url} is already probed as docker"


def test_what_is_not_found_says_where_it_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    found, missing = discover()
    assert backends(found) == ["namespace"]
    assert missing == {
        "docker": "nothing answers GET /_ping at unix:///nonexistent/docker.sock",
        "podman": "nothing answers GET /_ping at unix:///nonexistent/podman.sock",
    }, "remote backends (kubernetes) are never looked for"


def test_podman_default_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    assert podman_url({"CONTAINER_HOST": "unix:///x/p.sock"}) == "unix:///x/p.sock"
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert podman_url({}) == "unix:///run/podman/podman.sock"
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert (
        podman_url({"XDG_RUNTIME_DIR": "/run/user/1000"})
        == "unix:///run/user/1000/podman/podman.sock"
    )
