"""The Apple `container` backend, against a double of its CLI first on PATH (and the
real CLI on macOS)."""

from __future__ import annotations

import json
import os
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
from sandbox_exporter.results import LIFECYCLE, ProbeResult
from tests.fakes import thread_calls
from tests.helpers import alive, make_config, wait_for

DOUBLE = Path(__file__).parent / "container_double.py"
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
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "container"
    exe.write_text(f"#!{sys.executable}\n" + DOUBLE.read_text())
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CONTAINER_DOUBLE_STATE", str(tmp_path / "state.json"))
    for switch in ("CONTAINER_DOUBLE_FAIL", "CONTAINER_DOUBLE_SHAPE", "CONTAINER_DOUBLE_HANG"):
        monkeypatch.delenv(switch, raising=False)
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


def test_a_full_lifecycle_through_the_cli(double: Double) -> None:
    result, registry = probe(resources={"cpus": 1.5, "memory_mb": 256}, stop_grace="9s")
    assert result.success, result.failure
    assert set(result.durations) == set(LIFECYCLE)
    assert registry.get_sample_value("sandbox_probes_total", {**LABELS, "result": "success"}) == 1
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
    assert double.containers() == {}, "nothing left"


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


def test_api_server_down_is_unavailable_with_the_hint(
    double: Double, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_DOUBLE_FAIL", "apiserver")
    result, registry = probe()
    failure = result.failure
    assert failure is not None
    assert failure.reason == "unavailable"
    assert "container system start" in failure.message
    assert registry.get_sample_value("sandbox_backend_up", LABELS) == 0
    found = find_here()
    assert isinstance(found, NotFound)
    assert "apiserver is not running and not registered with launchd" in found.reason
    backend = AppleBackend(AppleOptions(), _target().timeouts)
    with pytest.raises(BackendUnavailable, match="XPC connection error"):
        backend.list_managed("mac", Deadline.after(5))


def test_exec_non_zero_fails_exec(double: Double, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_DOUBLE_FAIL", "exec")
    t = _target()
    result = LifecycleRunner(
        thread_calls(AppleBackend(AppleOptions(), t.timeouts), t), t, "test-instance"
    ).run()
    assert result.failure is not None
    assert result.failure.phase == "exec"
    assert result.failure.message.endswith("exit code 7, expected 0; output 'boom\\n'"), (
        result.failure.message
    )
    assert double.containers() == {}


def test_a_hanging_call_is_killed_at_the_deadline_with_its_children(
    double: Double, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_DOUBLE_HANG", "start")
    result, _ = probe(timeouts={"start": "1s"})
    failure = result.failure
    assert failure is not None
    assert (failure.phase, failure.reason) == ("start", "timeout")
    pids = [int(p) for p in (double.root / "hang.pids").read_text().split()]
    wait_for(lambda: not any(alive(p) for p in pids), timeout=5, what="the hung CLI and its child")
    assert double.containers() == {}, "created, then removed in cleanup"


def test_orphans_are_found_by_label_and_removed_at_start_up(
    double: Double, monkeypatch: pytest.MonkeyPatch
) -> None:
    for shape in ("", "pre1"):
        monkeypatch.setenv("CONTAINER_DOUBLE_SHAPE", shape)
        labels = [
            "-l",
            "sandbox-exporter.io/managed=true",
            "-l",
            "sandbox-exporter.io/target=mac",
            "-l",
            "sandbox-exporter.io/instance=test-instance",
            "-l",
            "sandbox-exporter.io/created-at=1",
        ]
        for name, extra in (
            ("sandbox-exporter-mac-orphan", labels),
            ("someone-elses", ["-l", "app=x"]),
        ):
            subprocess.run(
                ["container", "create", "--name", name, *extra, "-c", "1", "-m", "64M", "img"],
                check=True,
                capture_output=True,
            )
        subprocess.run(
            ["container", "start", "sandbox-exporter-mac-orphan"], check=True, capture_output=True
        )
        result, registry = probe()
        assert result.success, result.failure
        assert registry.get_sample_value("sandbox_orphans_removed_total", LABELS) == 1
        assert list(double.containers()) == ["someone-elses"]
        subprocess.run(["container", "delete", "someone-elses"], check=True, capture_output=True)


def test_the_periodic_collection_removes_old_orphans(double: Double) -> None:
    labels = [
        "-l",
        "sandbox-exporter.io/managed=true",
        "-l",
        "sandbox-exporter.io/target=mac",
        "-l",
        "sandbox-exporter.io/instance=test-instance",
        "-l",
        "sandbox-exporter.io/created-at=1",
    ]
    subprocess.run(
        [
            "container",
            "create",
            "--name",
            "sandbox-exporter-mac-old",
            *labels,
            "-c",
            "1",
            "-m",
            "64M",
            "img",
        ],
        check=True,
        capture_output=True,
    )
    registry = CollectorRegistry()
    prober = Prober(_target(), "test-instance", Metrics(registry), stopping=threading.Event())
    try:
        removed = prober.collect_garbage(60)
    finally:
        prober.close()
    assert [s.name for s in removed] == ["sandbox-exporter-mac-old"]
    assert registry.get_sample_value("sandbox_orphans_removed_total", LABELS) == 1


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
    result, _ = probe(pull_policy="always", image="busybox:1.36")
    assert result.success, result.failure
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
