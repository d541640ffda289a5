"""Scheduler and prober: first runs at start-up, skips counted, nothing escapes a job."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from prometheus_client import CollectorRegistry

from sandbox_exporter.backends.base import ManagedSandbox
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.collector import collectable
from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.probing.scheduler import first_run_offsets
from tests.fakes import FakeBackend, by_name
from tests.helpers import make_config, make_target, wait_for

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


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


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    """The scheduler's clock, frozen at T0 and moved by the test (`clock.shift(s)`, then
    `scheduler.wakeup()`): jobs fire on cue, never on the wall clock."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def test_every_target_runs_at_start_up_not_one_interval_later(
    clock: time_machine.Traveller,
) -> None:
    config = make_config(
        {"name": "a", "backend": "namespace", "interval": "1h", "jitter": "0s"},
        {"name": "b", "backend": "namespace", "interval": "1h", "jitter": "0s"},
    )
    backends = {"a": FakeBackend(), "b": FakeBackend()}
    d = Daemon(config, listen_address=None, backends=by_name(backends))
    d.start()
    try:
        wait_for(lambda: d.probers[0].last_result is not None, what="a's first run, at once")
        # b's first run is staggered: two targets over the 10 s window
        assert d.scheduler.next_run_time("b") == T0 + timedelta(seconds=5)
        assert d.probers[1].last_result is None
        clock.shift(5)
        d.scheduler.wakeup()
        wait_for(lambda: d.probers[1].last_result is not None, what="b's first run, at T0+5s")
        assert d.scheduler.next_run_time("a") == T0 + timedelta(hours=1), "then an interval on"
        assert d.scheduler.next_run_time("b") == T0 + timedelta(hours=1, seconds=5)
    finally:
        d.shutdown()


def test_a_run_still_going_when_the_next_is_due_is_skipped_and_counted(
    clock: time_machine.Traveller,
) -> None:
    backend = FakeBackend(hang={"exec"})
    config = make_config({"name": "fake", "backend": "namespace", "interval": "1m", "jitter": "0s"})
    d = Daemon(config, listen_address=None, backends=by_name({"fake": backend}))
    d.start()
    try:
        wait_for(lambda: backend.entered.get("exec"), what="the first run in exec")
        for due in (1.0, 2.0):
            clock.shift(60)
            d.scheduler.wakeup()

            def skipped(count: float = due) -> bool:
                return sample(d.registry, "sandbox_probe_skipped_total") == count

            wait_for(skipped, what=f"skip {due:g}")
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

    def answer_once_stopping() -> None:  # the engine answers once the shutdown has begun
        d.stopping.wait()
        backend.release.set()

    threading.Thread(target=answer_once_stopping).start()
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


def test_run_threads_end_with_their_runs(clock: time_machine.Traveller) -> None:
    """The threads alive are the runs in progress: none is kept once its run is over,
    so the count cannot creep up over hours as an ever-growing pool's would."""
    config = make_config(
        *({"name": f"t{i}", "backend": "namespace", "interval": "1h"} for i in range(8))
    )
    backends = {f"t{i}": FakeBackend() for i in range(8)}
    d = Daemon(config, listen_address=None, backends=by_name(backends))
    before = {t.ident for t in threading.enumerate()}
    d.scheduler.start()
    clock.shift(10)  # every first run due at once
    d.scheduler.wakeup()

    def extra_threads() -> list[str]:
        return [
            t.name
            for t in threading.enumerate()
            if t.ident not in before and t.name != "APScheduler"
        ]

    try:
        wait_for(lambda: all(b.called("remove") for b in backends.values()), what="a run each")
        assert all(p.wait_idle(10) for p in d.probers)
        wait_for(lambda: not extra_threads(), what="every run's thread to end")
        assert d.scheduler.running
    finally:
        d.scheduler.shutdown()


def test_the_collector_rule_for_each_kind_of_leftover() -> None:
    """Whose sandboxes the periodic collection of `me` may remove (collector.py)."""
    now, hour = 100_000.0, 3600.0

    def sandbox(instance: str, age: float, expires_in: float | None) -> ManagedSandbox:
        expiry = None if expires_in is None else now + expires_in
        return ManagedSandbox("s", "t", instance, now - age, expiry)

    def ok(s: ManagedSandbox) -> bool:
        return collectable(s, "me", hour, now)

    assert ok(sandbox("me", 2 * hour, None)), "mine, past max_age"
    assert not ok(sandbox("me", hour / 2, None)), "mine, younger than max_age"
    assert ok(sandbox("other", 2 * hour, -hour)), "another's, past its own expiry"
    assert not ok(sandbox("other", 2 * hour, +60)), "another's whose run may still go"
    assert not ok(sandbox("other", 2 * hour, -30)), "within the clock-skew allowance"
    assert not ok(sandbox("other", 2 * hour, None)), "another's without an expiry: its own"
    assert not ok(sandbox("other", hour / 2, -hour)), "another's, younger than max_age"
    assert not ok(ManagedSandbox("s", "t", "me", None, None)), "no creation time"
