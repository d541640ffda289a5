"""`targets: auto` finds the engines that answer, each once."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sandbox_exporter.backends.base import Found
from sandbox_exporter.backends.firecracker import find_here as find_firecracker
from sandbox_exporter.backends.hyperlight import find_here as find_hyperlight
from sandbox_exporter.backends.podman import podman_url
from sandbox_exporter.cli import main
from sandbox_exporter.config import parse_config
from sandbox_exporter.config.discovery import discover, discover_targets
from sandbox_exporter.daemon import Daemon
from tests.conftest import Engine
from tests.helpers import unreachable_message


def backends(found: list[dict[str, object]]) -> list[str]:
    return [str(t["backend"]) for t in found]


# Hyperlight is found where its packages and a hypervisor device are (it is found on a
# kvm-pvm machine too, and its target is then unavailable), else missing with why
_FIRECRACKER = find_firecracker()  # found where a guest is built in its default place
FIRECRACKER = ["firecracker"] if isinstance(_FIRECRACKER, Found) else []
FIRECRACKER_MISSING = (
    {} if isinstance(_FIRECRACKER, Found) else {"firecracker": _FIRECRACKER.reason}
)
_HYPERLIGHT = find_hyperlight()
HYPERLIGHT = ["hyperlight"] if isinstance(_HYPERLIGHT, Found) else []
HYPERLIGHT_MISSING = {} if isinstance(_HYPERLIGHT, Found) else {"hyperlight": _HYPERLIGHT.reason}


def test_podman_socket_is_found(podman_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_HOST", podman_engine.url)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    found = discover_targets()
    assert backends(found) == ["podman", "namespace", *FIRECRACKER, *HYPERLIGHT]
    assert found[0]["podman"] == {"base_url": podman_engine.url}


def test_docker_and_podman_are_both_found(
    docker_engine: Engine, podman_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_HOST", podman_engine.url)
    monkeypatch.setenv("DOCKER_HOST", docker_engine.url)
    assert backends(discover_targets()) == [
        "docker",
        "podman",
        "namespace",
        *FIRECRACKER,
        *HYPERLIGHT,
    ]


def test_podman_behind_docker_host_is_probed_once(
    podman_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_HOST", podman_engine.url)
    monkeypatch.setenv("DOCKER_HOST", podman_engine.url)
    found, missing = discover()
    assert backends(found) == ["docker", "namespace", *FIRECRACKER, *HYPERLIGHT]
    assert missing["podman"] == f"{podman_engine.url} is already probed as docker"


def test_what_is_not_found_says_which_engine_where_and_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    refusing = tmp_path / "podman.sock"  # a socket file nobody listens on
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(str(refusing))
        monkeypatch.setenv("CONTAINER_HOST", f"unix://{refusing}")
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        found, missing = discover()
    assert backends(found) == ["namespace", *FIRECRACKER, *HYPERLIGHT]
    assert missing == {
        "docker": "the Docker engine does not answer at unix:///nonexistent/docker.sock: "
        "no such socket (is the service running?)",
        "podman": f"Podman does not answer at unix://{refusing}: "
        "connection refused (nothing listens there)",
        "kubernetes": "not looked for (it is reached over the network): name it in a config",
        **FIRECRACKER_MISSING,
        "nomad": "not looked for (it is reached over the network): name it in a config",
        **HYPERLIGHT_MISSING,
        "apple": "Apple's `container` CLI not found on PATH (it runs only on macOS)",
    }


@pytest.mark.parametrize(
    ("kind", "engine"), [("docker", "the Docker engine"), ("podman", "Podman")]
)
def test_cannot_reach_names_the_engine_its_address_and_why(kind: str, engine: str) -> None:
    pytest.importorskip("docker")
    message = unreachable_message(
        {"name": "t", "backend": kind, kind: {"base_url": "unix:///nonexistent/engine.sock"}}
    )
    assert message == (
        f"cannot reach {engine} at unix:///nonexistent/engine.sock: "
        "no such socket (is the service running?)"
    )


def test_a_backend_auto_did_not_find_is_named_as_such(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.delenv("SANDBOX_EXPORTER_CONFIG_FILE", raising=False)
    assert main(["probe", "--target", "docker"]) == 2
    assert capsys.readouterr().err == (
        "--target: no target 'docker': `targets: auto` did not find the docker backend: the "
        "Docker engine does not answer at unix:///nonexistent/docker.sock: no such socket "
        f"(is the service running?); found: {', '.join(t['name'] for t in discover()[0])}\n"
    )
    assert main(["probe", "--target", "nosuch"]) == 2
    assert "unknown target 'nosuch'" in capsys.readouterr().err


def test_the_daemon_logs_each_backend_auto_did_not_find() -> None:
    config = parse_config(
        {"targets": "auto"},
        discover=lambda: [{"name": "namespace", "backend": "namespace"}],
    ).model_copy(update={"not_found": {"docker": "the Docker engine does not answer at X"}})
    daemon = Daemon(config, listen_address=None)
    with capture_logs() as logs:
        daemon.start()
        daemon.shutdown()
    assert {
        "event": "backend not found",
        "backend": "docker",
        "reason": "the Docker engine does not answer at X",
        "log_level": "info",
    } in logs


def test_podman_default_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    assert podman_url({"CONTAINER_HOST": "unix:///x/p.sock"}) == "unix:///x/p.sock"
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert podman_url({}) == "unix:///run/podman/podman.sock"
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert (
        podman_url({"XDG_RUNTIME_DIR": "/run/user/1000"})
        == "unix:///run/user/1000/podman/podman.sock"
    )
