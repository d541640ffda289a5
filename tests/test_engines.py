"""The Docker and Podman backends against the real engines scripts/test.sh starts: what
is theirs alone (hardening, images, runtimes, the exec stream). What every backend
does (a lifecycle, a wrong answer, an engine out of reach, orphans, a deadline, the
output cap) is in test_backend_contract.py.

Every test here runs once per engine present (the `engine` fixture).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from sandbox_exporter.backends.base import Deadline, SandboxSpec
from sandbox_exporter.backends.docker import api_version, split_image
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.results import Phase, ProbeResult, Reason
from tests.conftest import TEST_IMAGE, Engine
from tests.engine_proxy import CoalescingProxy
from tests.helpers import make_config, scraped, wait_for
from tests.test_server import call


def engine_target(engine: Engine, name: str = "probe", **settings: Any) -> dict[str, Any]:
    block = settings.pop("options", {})
    return {
        "name": name,
        "backend": engine.backend,
        "image": TEST_IMAGE,
        "pull_policy": "never",
        engine.backend: {"base_url": engine.url, **block},
        **settings,
    }


def labels(engine: Engine, target: str = "probe") -> dict[str, str]:
    return {"target": target, "backend": engine.backend}


def run_once(engine: Engine, **settings: Any) -> tuple[Daemon, ProbeResult]:
    """One scheduled-style run of a one-target daemon (not started), then its shutdown."""
    d = Daemon(make_config(engine_target(engine, **settings)), listen_address=None)
    try:
        result = d.probers[0].run()
    finally:
        d.shutdown()
    assert result is not None
    return d, result


def test_the_container_is_hardened_and_labelled(engine: Engine) -> None:
    target = make_config(engine_target(engine)).targets[0]
    backend = target.kind.build(target.options, target.timeouts)
    name = "sandbox-exporter-probe-hardening"
    spec = SandboxSpec(
        name=name,
        labels={"sandbox-exporter.io/managed": "true", "sandbox-exporter.io/target": "probe"},
        image=TEST_IMAGE,
        pull_policy="never",
        cpus=0.5,
        memory_mb=128,
        pids_limit=32,
        stop_grace=1,
    )
    sandbox = backend.create(spec, Deadline.after(30))
    try:
        backend.start(sandbox, Deadline.after(30))
        answer = backend.exec(
            sandbox,
            [
                "sh",
                "-c",
                "id -u; grep -E '^Cap(Eff|Bnd)' /proc/self/status; "
                "grep -c NoNewPrivs:.1 /proc/self/status; touch /probe 2>&1; echo $?",
            ],
            Deadline.after(30),
        )
        info = engine.client.api.inspect_container(name)
    finally:
        backend.remove(sandbox, Deadline.after(30))
        backend.close()
    host = info["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["PidsLimit"] == 32
    assert host["Memory"] == 128 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert info["Config"]["Labels"]["sandbox-exporter.io/managed"] == "true"
    lines = answer.output.split()
    assert lines[0] == "65534", "runs as nobody"
    assert lines[1:5] == ["CapEff:", "0000000000000000", "CapBnd:", "0000000000000000"], (
        "no capabilities"
    )
    assert lines[5] == "1", "no new privileges"
    assert lines[-1] != "0", "the root filesystem is read-only"


def test_stop_is_prompt_thanks_to_the_keepalive(engine: Engine) -> None:
    _, result = run_once(engine, stop_grace="10s")
    assert result.success
    assert result.durations[Phase.STOP] < 3, "SIGTERM ends the keep-alive; no wait for the grace"


def test_missing_image_with_pull_policy_never(engine: Engine) -> None:
    with capture_logs() as logs:
        d, result = run_once(engine, image="sandbox-exporter/absent:nope")
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.PULL, Reason.ERROR)
    assert (
        d.registry.get_sample_value(
            "sandbox_probe_failures_total", {**labels(engine), "phase": "pull", "reason": "error"}
        )
        == 1
    )
    lines = [e for e in logs if e.get("outcome") == "failed"]
    assert len(lines) == 1
    assert "image 'sandbox-exporter/absent:nope' is not present" in lines[0]["error"]
    assert "pull_policy is never" in lines[0]["error"]
    assert "`sandbox-exporter image build` makes a probe image" in lines[0]["error"]


def test_image_build_makes_a_probe_image_with_no_registry(engine: Engine) -> None:
    """What a user with no registry does: build the image here, probe with it."""
    tag = f"sandbox-exporter/busybox:built-by-test-{engine.backend}"
    env = {"PATH": os.environ["PATH"], "DOCKER_HOST": engine.url, "CONTAINER_HOST": engine.url}
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox_exporter",
            "image",
            "build",
            "-b",
            engine.backend,
            "--tag",
            tag,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        assert built.returncode == 0, built.stderr
        assert f"{engine.backend}: built {tag}" in built.stdout
        _, result = run_once(engine, image=tag)
        assert result.success, result.failure
        assert result.output is not None
        assert result.output.strip() == "hello"
    finally:
        engine.client.images.remove(tag, force=True)


def test_the_api_version_is_the_one_the_engines_ping_names(engine: Engine) -> None:
    """As the Docker CLI negotiates it: `/_ping`'s `Api-Version`, not `GET /version`
    (half a second on Podman); anything but a Unix socket is left to the SDK."""
    assert api_version(engine.url, 5) == engine.client.version()["ApiVersion"]
    assert api_version("tcp://127.0.0.1:2375", 5) == "auto"


def test_image_references_split_into_repository_and_tag() -> None:
    assert split_image("busybox") == ("busybox", "latest")
    assert split_image("busybox:1.36") == ("busybox", "1.36")
    assert split_image("localhost:5000/team/img") == ("localhost:5000/team/img", "latest")
    assert split_image("localhost:5000/img:2") == ("localhost:5000/img", "2")
    assert split_image("img@sha256:abc") == ("img", "sha256:abc")


def test_an_unknown_runtime_fails_that_target_and_the_exporter_keeps_going(engine: Engine) -> None:
    config = make_config(
        engine_target(engine, name="good", interval="2s"),
        engine_target(engine, name="bad", interval="2s", options={"runtime": "no-such-runtime"}),
    )
    d = Daemon(config, listen_address=None)
    d.start()
    try:
        wait_for(lambda: all(p.last_result for p in d.probers), timeout=60, what="both first runs")
        good, bad = (p.last_result for p in d.probers)
        assert good is not None
        assert good.success
        assert bad is not None
        assert bad.failure is not None
        assert (bad.failure.phase, bad.failure.reason) == (Phase.CREATE, Reason.ERROR)
        assert "runtime" in bad.failure.message, "the engine's words"
        assert d.ready()
        text = call(d.app, "/metrics")[2].decode()
        failed = {"phase": "create", "reason": "error", **labels(engine, "bad")}
        assert (scraped(text, "sandbox_probe_failures_total", **failed) or 0) >= 1
        assert scraped(text, "sandbox_probe_success", **labels(engine, "good")) == 1
    finally:
        d.shutdown()
    assert not engine.managed(**{"sandbox-exporter.io/target": "bad"}), "nothing left"


def test_output_that_comes_with_the_exec_answers_headers_is_read(
    engine: Engine, tmp_path: Path
) -> None:
    """An engine that writes the exec start's answer and the output's first frame at
    once (a quick command on a loaded host) leaves that frame in the HTTP parser's
    buffer: it must be read from there, not lost (docker/docker-py#3332; the
    `exec_mismatch` with output '' a soak met once in 1,700 Podman runs)."""
    proxy = CoalescingProxy(tmp_path / "engine.sock", Path(engine.url.removeprefix("unix://")))
    try:
        _, result = run_once(Engine(engine.backend, proxy.url, engine.client))
    finally:
        proxy.close()
    assert proxy.coalesced == 1, "the output came in the same write as the headers"
    assert result.success, result.failure
    assert result.output is not None
    assert result.output.strip() == "hello"
