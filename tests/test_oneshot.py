"""`sandbox-exporter probe` and health: one lifecycle from a shell; a wedged exporter says so."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sandbox_exporter.cli import main
from sandbox_exporter.daemon import Daemon
from tests.fakes import FakeBackend, by_name
from tests.helpers import make_config
from tests.test_server import call


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    state = f"namespace: {{state_dir: '{tmp_path}/state'}}"
    path.write_text(
        "targets:\n"
        f"  - {{name: floor, backend: namespace, {state}}}\n"
        f"  - {{name: wrong, backend: namespace, command: [echo, bye], {state}}}\n"
    )
    return path


@pytest.mark.namespace
def test_probe_prints_a_table_and_exits_zero_on_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", "--config.file", str(config_file(tmp_path)), "--target", "floor"]) == 0
    out, err = capsys.readouterr()
    assert err == "", "quiet by default: the table is the output"
    assert "target floor (namespace)" in out
    for phase in ("create", "start", "exec", "stop", "remove"):
        assert f"  {phase}" in out
    assert "success: total" in out


@pytest.mark.namespace
def test_probe_json_and_a_failing_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(config_file(tmp_path))
    assert main(["probe", "--config.file", path, "--target", "wrong", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["success"] is False
    assert result["failures"][0]["reason"] == "exec_mismatch"
    assert main(["probe", "--config.file", path, "--target", "ghost"]) == 2
    assert "--target: unknown target 'ghost'; configured: floor, wrong" in capsys.readouterr().err


def test_health_turns_bad_when_a_target_is_not_run_or_the_scheduler_dies() -> None:
    config = make_config({"name": "fake", "backend": "namespace", "interval": "1h"})
    d = Daemon(config, listen_address=None, backends=by_name({"fake": FakeBackend()}))
    d.start()
    try:
        assert call(d.app, "/-/healthy")[0].startswith("200")
        d.probers[0].last_attempt = time.monotonic() - 4 * 3600
        status, _, body = call(d.app, "/-/healthy")
        assert status.startswith("503")
        assert b"target fake has not been run for" in body
        d.probers[0].last_attempt = time.monotonic()
        d.scheduler.shutdown()
        status, _, body = call(d.app, "/-/healthy")
        assert status.startswith("503")
        assert b"the scheduler is not running" in body
    finally:
        d.shutdown()


def test_probe_beside_a_running_daemon_leaves_its_sandbox_alone() -> None:
    """`probe` must not take a sandbox of the same instance for an orphan."""
    import threading

    from prometheus_client import CollectorRegistry

    from sandbox_exporter.backends.base import ManagedSandbox
    from sandbox_exporter.metrics.families import Metrics
    from sandbox_exporter.probing.prober import Prober

    in_flight = ManagedSandbox(
        "sandbox-exporter-fake-daemons", "fake", "test-instance", time.time()
    )
    backend = FakeBackend(orphans=[in_flight])
    target = make_config({"name": "fake", "backend": "namespace"}).targets[0]
    oneshot = Prober(
        target,
        "test-instance",
        Metrics(CollectorRegistry()),
        stopping=threading.Event(),
        backend=backend,
        sweep_at_start=False,
    )
    assert oneshot.run_now() is not None
    assert "sandbox-exporter-fake-daemons" not in backend.called("remove")
    assert not backend.called("list_managed")
