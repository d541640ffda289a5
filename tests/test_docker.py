"""The Docker backend against the real engine started by scripts/test.sh."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from exporter.backends.base import SandboxSpec
from exporter.backends.docker import DockerBackend, _split_image
from exporter.daemon import Daemon
from exporter.lifecycle import Phase, Reason
from exporter.metrics import Metrics
from exporter.prober import Prober
from tests.conftest import TEST_IMAGE
from tests.helpers import make_config, scraped
from tests.test_server import call

pytestmark = pytest.mark.docker


def docker_target(url: str, name: str = "docker", **settings: Any) -> dict[str, Any]:
    docker_block = settings.pop("docker", {})
    return {
        "name": name,
        "backend": "docker",
        "image": TEST_IMAGE,
        "pull_policy": "never",
        "docker": {"base_url": url, **docker_block},
        **settings,
    }


def labels(target: str, backend: str = "docker") -> dict[str, str]:
    return {"target": target, "backend": backend}


def test_a_full_lifecycle_lands_in_metrics(docker_base_url: str, docker_client: Any) -> None:
    config = make_config(docker_target(docker_base_url))
    d = Daemon(config, listen_address=None)
    try:
        result = d.probers[0].run()
    finally:
        d.shutdown()
    assert result is not None
    assert result.success, result.failure
    assert result.output is not None
    assert result.output.strip() == "hello"
    text = call(d.app, "/metrics")[2].decode()
    for phase in ("create", "start", "exec", "stop", "remove"):
        count = scraped(
            text, "sandbox_phase_duration_seconds_count", phase=phase, **labels("docker")
        )
        assert count == 1, phase
    assert scraped(text, "sandbox_probes_total", result="success", **labels("docker")) == 1
    assert scraped(text, "sandbox_backend_up", **labels("docker")) == 1
    assert (
        d.registry.get_sample_value("sandbox_lifecycle_duration_seconds_count", labels("docker"))
        == 1
    )
    assert not docker_client.containers.list(all=True, filters={"name": result.sandbox})


def test_the_container_is_hardened_and_labelled(docker_base_url: str, docker_client: Any) -> None:
    target = make_config(docker_target(docker_base_url)).targets[0]
    backend = DockerBackend(target)
    name = "sandbox-exporter-docker-hardening"
    spec = SandboxSpec(
        name=name,
        image=TEST_IMAGE,
        labels={"sandbox-exporter.io/managed": "true", "sandbox-exporter.io/target": "docker"},
        cpus=0.5,
        memory_mb=128,
        pids_limit=32,
    )
    backend.create(spec)
    try:
        backend.start(name)
        answer = backend.exec(name, ["sh", "-c", "id -u; touch /probe 2>&1; echo $?"])
        info = docker_client.api.inspect_container(name)
    finally:
        backend.remove(name)
        backend.close()
    host = info["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 32
    assert host["Memory"] == 128 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert info["Config"]["Labels"]["sandbox-exporter.io/managed"] == "true"
    lines = answer.output.split()
    assert lines[0] == "65534", "runs as nobody"
    assert lines[-1] != "0", "the root filesystem is read-only"


def test_stop_is_prompt_thanks_to_the_keepalive(docker_base_url: str, docker_client: Any) -> None:
    config = make_config(docker_target(docker_base_url, stop_grace="10s"))
    d = Daemon(config, listen_address=None)
    try:
        result = d.probers[0].run()
    finally:
        d.shutdown()
    assert result is not None
    assert result.success
    assert result.durations[Phase.STOP] < 3, "SIGTERM ends the keep-alive; no wait for the grace"


def test_missing_image_with_pull_policy_never(docker_base_url: str, docker_client: Any) -> None:
    config = make_config(docker_target(docker_base_url, image="sandbox-exporter/absent:nope"))
    with capture_logs() as logs:
        d = Daemon(config, listen_address=None)
        result = d.probers[0].run()
        d.shutdown()
    assert result is not None
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.PULL, Reason.ERROR)
    assert (
        d.registry.get_sample_value(
            "sandbox_probe_failures_total", {**labels("docker"), "phase": "pull", "reason": "error"}
        )
        == 1
    )
    lines = [e for e in logs if e.get("outcome") == "failed"]
    assert len(lines) == 1
    assert "image 'sandbox-exporter/absent:nope' is not present" in lines[0]["error"]
    assert "pull_policy is never" in lines[0]["error"]


def test_unknown_runtime_is_a_failure_with_the_engine_message(
    docker_base_url: str, docker_client: Any
) -> None:
    config = make_config(docker_target(docker_base_url, docker={"runtime": "no-such-runtime"}))
    d = Daemon(config, listen_address=None)
    result = d.probers[0].run()
    d.shutdown()
    assert result is not None
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.CREATE, Reason.ERROR)
    assert "runtime" in result.failure.message
    assert not docker_client.containers.list(all=True, filters={"name": result.sandbox})


def test_unreachable_engine_sets_backend_down(tmp_path: Any) -> None:
    config = make_config(docker_target(f"unix://{tmp_path}/no.sock", timeouts={"create": "5s"}))
    d = Daemon(config, listen_address=None)
    result = d.probers[0].run()
    d.shutdown()
    assert result is not None
    assert result.failure is not None
    assert result.failure.reason == Reason.UNAVAILABLE
    assert d.registry.get_sample_value("sandbox_backend_up", labels("docker")) == 0


def test_orphans_of_this_instance_and_target_only_are_removed(
    docker_base_url: str, docker_client: Any
) -> None:
    def leave(name: str, **extra: str) -> None:
        docker_client.containers.create(
            TEST_IMAGE,
            ["true"],
            name=name,
            labels={
                "sandbox-exporter.io/managed": "true",
                "sandbox-exporter.io/target": "docker",
                "sandbox-exporter.io/instance": "test-instance",
                "sandbox-exporter.io/created-at": str(int(time.time()) - 3600),
                **extra,
            },
        )

    leave("sandbox-exporter-docker-orphan1")
    leave("sandbox-exporter-docker-orphan2")
    leave("sandbox-exporter-other-instance", **{"sandbox-exporter.io/instance": "someone-else"})
    leave("sandbox-exporter-other-target", **{"sandbox-exporter.io/target": "other"})
    docker_client.containers.create(TEST_IMAGE, ["true"], name="not-ours-at-all")
    try:
        target = make_config(docker_target(docker_base_url)).targets[0]
        registry = CollectorRegistry()
        prober = Prober(target, "test-instance", Metrics(registry), stopping=threading.Event())
        result = prober.run()
        prober.close()
        assert result is not None
        assert result.success
        names = {c.name for c in docker_client.containers.list(all=True)}
        assert "sandbox-exporter-docker-orphan1" not in names
        assert "sandbox-exporter-docker-orphan2" not in names
        assert {
            "sandbox-exporter-other-instance",
            "sandbox-exporter-other-target",
            "not-ours-at-all",
        } <= names
        assert registry.get_sample_value("sandbox_orphans_removed_total", labels("docker")) == 2
    finally:
        for name in (
            "sandbox-exporter-other-instance",
            "sandbox-exporter-other-target",
            "not-ours-at-all",
        ):
            docker_client.containers.get(name).remove(force=True)


def test_image_references_split_into_repository_and_tag() -> None:
    assert _split_image("busybox") == ("busybox", "latest")
    assert _split_image("busybox:1.36") == ("busybox", "1.36")
    assert _split_image("localhost:5000/team/img") == ("localhost:5000/team/img", "latest")
    assert _split_image("localhost:5000/img:2") == ("localhost:5000/img", "2")
    assert _split_image("img@sha256:abc") == ("img", "sha256:abc")
