"""The Apple `container` backend, against a double of its CLI first on PATH (and the
real CLI on macOS): what is its alone (the CLI's arguments and words, discovery, list
shapes). What every backend does is in test_backend_contract.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sandbox_exporter.backends.apple import AppleBackend, AppleOptions, find_here, parse_list
from sandbox_exporter.backends.base import (
    BackendError,
    BackendUnavailable,
    Deadline,
    Found,
    NotFound,
    SandboxRef,
)
from sandbox_exporter.config import Target
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.lifecycle import LifecycleRunner
from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.results import ProbeResult
from tests.fakes import thread_calls
from tests.helpers import install_container_double, make_config

LABELS = {"target": "mac", "backend": "apple"}


class Double:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state.json"

    def containers(self) -> dict[str, dict[str, object]]:
        return json.loads(self.state.read_text()) if self.state.exists() else {}

    def invocations(self) -> list[list[str]]:
        log = self.root / "calls.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Double]:
    install_container_double(tmp_path, monkeypatch)
    made = Double(tmp_path)
    yield made
    assert made.containers() == {}, "every test leaves nothing in the double's state"


def _target(**settings: object) -> Target:
    return make_config({"name": "mac", "backend": "apple", **settings}).targets[0]


def probe(**settings: object) -> tuple[ProbeResult, CollectorRegistry]:
    registry = CollectorRegistry()
    prober = Prober(
        _target(**settings), "test-instance", Metrics(registry), stopping=threading.Event()
    )
    try:
        result = prober.run()
    finally:
        prober.close()
    assert result is not None
    return result, registry


def test_the_cli_is_called_as_documented(double: Double) -> None:
    """Each phase's `container` command, with the sandbox's size, hardening and labels
    (the lifecycle itself, its metrics and what it leaves: test_backend_contract.py)."""
    result, _ = probe(resources={"cpus": 1.5, "memory_mb": 256}, stop_grace="9s")
    assert result.success, result.failure
    create = next(c for c in double.invocations() if c[0] == "create")
    name = create[create.index("--name") + 1]
    assert name.startswith("sandbox-exporter-")
    assert create[create.index("-c") + 1] == "2"
    assert create[create.index("-m") + 1] == "256M"
    assert "--read-only" in create
    assert create[create.index("--cap-drop") + 1] == "ALL"
    assert "sandbox-exporter.io/managed=true" in create
    assert "sandbox-exporter.io/target=mac" in create
    verbs = [c[0] for c in double.invocations() if c[0] not in ("--version", "system", "list")]
    assert verbs == ["create", "start", "exec", "stop", "delete"]
    assert next(c for c in double.invocations() if c[0] == "stop") == ["stop", "-t", "9", name]


def test_image_not_found_fails_create_in_the_clis_words(
    double: Double, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_DOUBLE_FAIL", "image")
    result, registry = probe(image="nosuch:latest")
    failure = result.failure
    assert failure is not None
    assert (failure.phase, failure.reason) == ("create", "error")
    assert 'notFound: "image nosuch:latest not found in registry"' in failure.message
    assert (
        registry.get_sample_value(
            "sandbox_probe_failures_total", {**LABELS, "phase": "create", "reason": "error"}
        )
        == 1
    )
    assert double.containers() == {}


def test_api_server_down_is_not_found_here_and_unavailable(
    double: Double, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discovery says why; listing is unavailable (a probe's failure, with the CLI's
    hint: test_backend_contract.py)."""
    monkeypatch.setenv("CONTAINER_DOUBLE_FAIL", "apiserver")
    found = find_here()
    assert isinstance(found, NotFound)
    assert "apiserver is not running and not registered with launchd" in found.reason
    backend = AppleBackend(AppleOptions(), _target().timeouts)
    with pytest.raises(BackendUnavailable, match="XPC connection error"):
        backend.list_managed("mac", Deadline.after(5))


def test_orphans_are_found_in_the_pre_1_0_list_shape_too(
    double: Double, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By their labels, in the shape of `list` before 1.0 (the 1.x shape:
    test_backend_contract.py)."""
    monkeypatch.setenv("CONTAINER_DOUBLE_SHAPE", "pre1")
    labels = ["sandbox-exporter.io/managed=true", "sandbox-exporter.io/target=mac"]
    for name, extra in (("sandbox-exporter-mac-orphan", labels), ("someone-elses", ["app=x"])):
        flags = [arg for label in extra for arg in ("-l", label)]
        subprocess.run(
            ["container", "create", "--name", name, *flags, "-c", "1", "-m", "64M", "img"],
            check=True,
            capture_output=True,
        )
    backend = AppleBackend(AppleOptions(), _target().timeouts)
    found = backend.list_managed("mac", Deadline.after(5))
    assert [s.name for s in found] == ["sandbox-exporter-mac-orphan"]
    for name in ("sandbox-exporter-mac-orphan", "someone-elses"):
        backend.remove(SandboxRef(name), Deadline.after(5))


def test_cli_errors_in_their_words(double: Double, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = AppleBackend(AppleOptions(), _target().timeouts)
    missing = SandboxRef("sandbox-exporter-mac-missing")
    backend.remove(missing, Deadline.after(5))  # not there: not an error
    with pytest.raises(BackendError, match='container start: Error: notFound: "container with ID'):
        backend.start(missing, Deadline.after(5))
    monkeypatch.setenv("CONTAINER_DOUBLE_FAIL", "apiserver")
    with pytest.raises(BackendUnavailable, match="container system start"):
        backend.exec(missing, ["true"], Deadline.after(5))
    with pytest.raises(BackendUnavailable, match="not registered with launchd"):
        backend.ping(Deadline.after(5))


def test_pull_policy_always_pulls_first(double: Double) -> None:
    target = _target(pull_policy="always", image="busybox:1.36")
    backend = AppleBackend(AppleOptions(), target.timeouts)
    runner = LifecycleRunner(thread_calls(backend, target), target, "test-instance")
    sandbox = backend.create(runner.spec("sandbox-exporter-mac-pull"), Deadline.after(5))
    backend.remove(sandbox, Deadline.after(5))
    verbs = [c[:2] for c in double.invocations() if c[0] in ("image", "create")]
    assert verbs[0] == ["image", "pull"]
    assert verbs[1][0] == "create"


def test_both_list_shapes_parse() -> None:
    new = [
        {
            "configuration": {"id": "a", "labels": {"k": "v"}},
            "id": "a",
            "status": {"state": "running"},
        }
    ]
    old = [{"configuration": {"id": "b", "labels": {}}, "status": "stopped"}]
    assert parse_list(json.dumps(new)) == [("a", {"k": "v"}, "running")]
    assert parse_list(json.dumps(old)) == [("b", {}, "stopped")]


def test_discovery_looks_at_the_cli_not_the_os(
    double: Double, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = find_here()
    assert isinstance(found, Found), found
    monkeypatch.setenv("PATH", "/nonexistent")
    missing = find_here()
    assert isinstance(missing, NotFound)
    assert "not found on PATH" in missing.reason


def test_bench_reports_apple_skipped_here_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if shutil.which("container"):
        pytest.skip("a `container` CLI is on PATH here")
    from sandbox_exporter.cli import main

    main(["bench", "-b", "apple", "-i", "1"])
    assert (
        "apple                     skipped: Apple's `container` CLI not found on PATH "
        "(it runs only on macOS)" in capsys.readouterr().out
    )


@pytest.mark.skipif(sys.platform != "darwin", reason="Apple `container` runs only on macOS")
def test_the_real_cli_runs_a_lifecycle() -> None:
    why = find_here()
    if isinstance(why, NotFound):
        pytest.skip(why.reason)
    result, _ = probe()
    assert result.success, result.failure


def test_bench_reports_the_clis_version(double: Double) -> None:
    from sandbox_exporter.probing.prober import calls_for

    calls = calls_for(_target())
    try:
        assert calls.describe(None, timeout=10) == {
            "container_version": "container CLI version 1.2.2 (build: release, commit: 1a2b3c4)"
        }
    finally:
        calls.close()
