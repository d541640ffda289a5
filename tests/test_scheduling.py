"""Scheduler and prober: first runs at start-up, skips counted, nothing escapes a job."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from exporter.backends.base import ManagedSandbox
from exporter.daemon import Daemon
from exporter.metrics.families import Metrics
from exporter.probing.prober import Prober
from exporter.probing.scheduler import first_run_offsets
from tests.fakes import FakeBackend, by_name
from tests.helpers import make_config, make_target, wait_for


def sample(registry: CollectorRegistry, name: str, target: str = "fake") -> float:
    value = registry.get_sample_value(name, {"target": target, "backend": "namespace"})
    assert value is not None, name
    return value


def test_first_runs_are_staggered_within_the_shortest_interval() -> None:
    config = make_config(
        *({"name": f"t{i}", "backend": "namespace", "interval": "4s"} for i in range(4))
    )
    probers = [
        Prober(t, "i", Metrics(CollectorRegistry()), stopping=threading.Event())
        for t in config.targets
    ]
    assert first_run_offsets(probers) == [0.0, 1.0, 2.0, 3.0]


def test_every_target_runs_at_start_up_not_one_interval_later() -> None:
    config = make_config(
        {"name": "a", "backend": "namespace", "interval": "1h"},
        {"name": "b", "backend": "namespace", "interval": "1h", "jitter": "0s"},
    )
    backends = {"a": FakeBackend(), "b": FakeBackend()}
    d = Daemon(config, listen_address=None, backends=by_name(backends))
    started = datetime.now(UTC)
    d.start()
    try:
        # b's first run is staggered a few seconds after a's, within the 10 s window
        next_b = d.scheduler.next_run_time("b")
        assert next_b is not None
        assert started + timedelta(seconds=4) < next_b < started + timedelta(seconds=11)
        wait_for(lambda: d.probers[0].last_result is not None, what="a's first run")
        first = d.probers[0].last_result
        assert first is not None
        assert first.success
        next_a = d.scheduler.next_run_time("a")
        assert next_a is not None
        assert next_a > started + timedelta(minutes=59), "then one interval later"
    finally:
        d.shutdown()


def test_a_run_still_going_when_the_next_is_due_is_skipped_and_counted() -> None:
    backend = FakeBackend(hang={"exec"})
    config = make_config(
        {"name": "fake", "backend": "namespace", "interval": "50ms", "jitter": "0s"}
    )
    d = Daemon(config, listen_address=None, backends=by_name({"fake": backend}))
    d.start()
    try:
        wait_for(lambda: sample(d.registry, "sandbox_probe_skipped_total") >= 2, what="skips")
        assert sample(d.registry, "sandbox_probe_in_progress") == 1
        assert len(backend.called("create")) == 1, "skipped runs are not queued"
    finally:
        backend.release.set()
        assert d.shutdown()
    assert sample(d.registry, "sandbox_probe_in_progress") == 0


def test_shutdown_lets_the_running_probe_clean_up() -> None:
    backend = FakeBackend(hang={"start"})
    config = make_config({"name": "fake", "backend": "namespace", "interval": "1h"})
    d = Daemon(config, listen_address=None, backends=by_name({"fake": backend}))
    d.start()
    wait_for(lambda: backend.entered.get("start"), what="start phase")
    releaser = threading.Timer(0.1, backend.release.set)
    releaser.start()
    assert d.shutdown()
    assert backend.called("remove")
    assert not backend.existing
    assert not backend.called("exec"), "no new phase after shutdown began"


def test_orphans_of_this_instance_are_removed_at_start_up_and_counted() -> None:
    target = make_target()
    backend = FakeBackend(
        orphans=[
            ManagedSandbox("sandbox-exporter-fake-old1", "fake", "test-instance", 1.0),
            ManagedSandbox("sandbox-exporter-fake-old2", "fake", "test-instance", 2.0),
        ]
    )
    registry = CollectorRegistry()
    prober = Prober(
        target, "test-instance", Metrics(registry), stopping=threading.Event(), backend=backend
    )
    prober.run()
    prober.run()
    assert backend.called("remove")[:2] == [
        "sandbox-exporter-fake-old1",
        "sandbox-exporter-fake-old2",
    ]
    assert sample(registry, "sandbox_orphans_removed_total") == 2
    assert len(backend.called("list_managed")) == 1, "swept once, at start-up"


def test_an_exception_never_leaves_the_job() -> None:
    target = make_target()
    backend = FakeBackend()
    backend.ping = None  # type: ignore[assignment, method-assign]  # a bug: calling it raises TypeError
    registry = CollectorRegistry()
    prober = Prober(
        target, "test-instance", Metrics(registry), stopping=threading.Event(), backend=backend
    )
    result = prober.run()
    assert result is not None
    assert not result.success
    assert (
        registry.get_sample_value(
            "sandbox_probes_total", {"target": "fake", "backend": "namespace", "result": "failure"}
        )
        == 1
    )


def test_a_backend_whose_sdk_is_missing_fails_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` now fails
    target = make_target("docker")
    registry = CollectorRegistry()
    prober = Prober(target, "i", Metrics(registry), stopping=threading.Event())
    result = prober.run()
    assert result is not None
    assert result.failure is not None
    assert "pip install 'sandbox-exporter[docker]'" in result.failure.message
    labels = {"target": "fake", "backend": "docker", "phase": "create", "reason": "error"}
    assert registry.get_sample_value("sandbox_probe_failures_total", labels) == 1


def test_run_threads_end_with_their_runs() -> None:
    """The threads alive are the runs in progress: none is kept once its run is over,
    so the count cannot creep up over hours as an ever-growing pool's would."""
    config = make_config(
        *({"name": f"t{i}", "backend": "namespace", "interval": "1h"} for i in range(8))
    )
    backends = {f"t{i}": FakeBackend() for i in range(8)}
    d = Daemon(config, listen_address=None, backends=by_name(backends))
    before = {t.ident for t in threading.enumerate()}
    d.scheduler.start(now=datetime.now(UTC) - timedelta(seconds=10))  # all due at once

    def extra_threads() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t.ident not in before and t.name != "APScheduler"]  # fmt: skip

    try:
        wait_for(lambda: all(b.called("remove") for b in backends.values()), what="a run each")
        assert all(p.wait_idle(10) for p in d.probers)
        wait_for(lambda: not extra_threads(), what="every run's thread to end")
        assert d.scheduler.running
    finally:
        d.scheduler.shutdown()
