"""Shutdown within a bound (a pod's termination grace period), a second SIGTERM that
cuts it short, and a stable instance name: as a real process, on namespaces."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox_exporter.cli import main
from tests.helpers import wait_for
from tests.process import ExporterProcess

pytestmark = pytest.mark.namespace

# an exec that takes 30 s, within its 60 s timeout: a shutdown that waits for the
# call in flight waits that long
SLOW = (
    '{{name: slow, backend: namespace, interval: 1h, command: [sh, -c, "touch /tmp/began; '
    'sleep 30; echo hello"], timeouts: {{exec: 60s, remove: 5s}}, max_age: 2h, '
    "namespace: {{state_dir: '{state}'}}}}"
)


@pytest.fixture
def slow_exporter(tmp_path: Path) -> Iterator[Callable[..., ExporterProcess]]:
    started: list[ExporterProcess] = []

    def start(*flags: str) -> ExporterProcess:
        config = tmp_path / "config.yaml"
        config.write_text(f"targets:\n  - {SLOW.format(state=tmp_path / 'state')}\n")
        process = ExporterProcess(config, *flags)
        started.append(process)
        wait_for(
            lambda: list((tmp_path / "state").glob("*/tmp/began")),
            timeout=30,
            what="the run inside its exec",
        )
        return process

    yield start
    for process in started:
        process.kill()


def nothing_left(tmp_path: Path) -> None:
    assert list((tmp_path / "state").iterdir()) == [], "the sandbox was removed"


def test_shutdown_fits_its_bound_and_still_removes_the_sandbox(
    slow_exporter: Callable[..., ExporterProcess], tmp_path: Path
) -> None:
    process = slow_exporter("--shutdown.timeout", "4s")
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(timeout=20) == 0, "not the 30 s the exec would take"
    cut = process.event("cutting short the calls in flight; removing their sandboxes")
    assert cut is not None
    assert 0 < cut["seconds_left"] <= 2, "half the bound kept to remove the sandbox"
    lifecycle = process.event("lifecycle")
    assert lifecycle is not None
    assert lifecycle["cancelled"] is True
    stopped = process.event("stopped")
    assert stopped is not None
    assert stopped["clean"] is True
    nothing_left(tmp_path)


def test_a_second_sigterm_cuts_the_wait_short_and_the_sandbox_still_goes(
    slow_exporter: Callable[..., ExporterProcess], tmp_path: Path
) -> None:
    process = slow_exporter()
    process.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: process.event("signal received"), what="the first SIGTERM taken")
    assert process.proc.poll() is None, "it waits for the exec in flight"
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(timeout=20) == 0
    assert process.event("signal received again") is not None
    assert process.event("cutting short the calls in flight; removing their sandboxes")
    nothing_left(tmp_path)


def test_the_instance_name_comes_from_the_flag_or_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("instance: from-file\ntargets:\n  - {name: floor, backend: namespace}\n")
    assert main(["check-config", "--config.file", str(config)]) == 0
    assert "instance from-file" in capsys.readouterr().out
    assert main(["check-config", "--config.file", str(config), "--instance", "pod-0"]) == 0
    assert "instance pod-0" in capsys.readouterr().out
    monkeypatch.setenv("SANDBOX_EXPORTER_INSTANCE", "release-node-a")
    assert main(["check-config", "--config.file", str(config)]) == 0
    assert "instance release-node-a" in capsys.readouterr().out
    assert main(["check-config", "--config.file", str(config), "--instance", "no spaces"]) == 1
    assert "--instance: must be 1-63 letters" in capsys.readouterr().err


def test_sandboxes_carry_the_instance_from_the_flag(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"targets:\n  - {SLOW.format(state=tmp_path / 'state')}\n")
    process = ExporterProcess(config, "--instance", "pod-7")
    try:
        began = wait_for(
            lambda: list((tmp_path / "state").glob("*/tmp/began")), timeout=30, what="a sandbox"
        )
        meta = json.loads((began[0].parent.parent / "meta.json").read_text())
        assert meta["labels"]["sandbox-exporter.io/instance"] == "pod-7"
    finally:
        process.proc.send_signal(signal.SIGTERM)
        # a second one once the first is taken (two at once are one: the kernel merges them)
        wait_for(lambda: process.event("signal received"), what="the first SIGTERM taken")
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(timeout=20) == 0
    nothing_left(tmp_path)
