"""The backend contract suite: what every backend does, run on each against its real
engine or its double, through the runner and the metrics as the exporter uses them.
Each backend's entry in backend_contract.py is all it takes; what is particular to
one backend is tested in its own file.

| scenario      | what must hold                                                        |
|---------------|-----------------------------------------------------------------------|
| lifecycle     | every phase succeeds, and the metrics say so                          |
| exec mismatch | a wrong exit code (and output) fails exec as `exec_mismatch`          |
| unreachable   | `sandbox_backend_up` 0, `unavailable`, a result all the same          |
| orphans       | what earlier exporters left is found, removed, counted; nothing else  |
| deadline      | an exec past its deadline is a `timeout`; what waited for it ends     |
| output cap    | output past base.MAX_OUTPUT fails exec, the rest unread               |

and after each, nothing is left: no sandbox on the engine, no process it started.
"""

from __future__ import annotations

import contextlib
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sandbox_exporter import backends
from sandbox_exporter.backends.base import MAX_OUTPUT, ExecResult
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.probing.worker import ProcessCalls
from sandbox_exporter.results import LIFECYCLE, Phase, ProbeResult, Reason
from tests.backend_contract import (
    HARNESSES,
    INSTANCE,
    PENDING,
    TARGET,
    Behaviour,
    Harness,
    managed_labels,
)
from tests.helpers import alive, children, wait_for

HOUR = 3600.0


@pytest.fixture(params=list(HARNESSES))
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """Each backend's harness in turn; after the test, nothing of it is left: no
    sandbox on its engine, no process it started."""
    entry = HARNESSES[request.param]
    before = children(os.getpid())
    with entry.open(request, tmp_path, monkeypatch) as opened:
        try:
            yield opened
        finally:
            opened.close()
        nothing_left(opened)
    wait_for(
        lambda: not [pid for pid in children(os.getpid()) - before if alive(pid)],
        what="every child process the test started to end",
    )


def applies(harness: Harness, scenario: str) -> None:
    if scenario in harness.cannot:
        pytest.skip(f"{harness.backend}: {harness.cannot[scenario]}")


def labels(harness: Harness) -> dict[str, str]:
    return {"target": TARGET, "backend": harness.backend}


@contextlib.contextmanager
def probing(harness: Harness, **settings: object) -> Iterator[tuple[Prober, CollectorRegistry]]:
    """A prober of the harness's target (with `settings`), as a daemon makes it."""
    registry = CollectorRegistry()
    prober = Prober(
        harness.target(**settings), INSTANCE, Metrics(registry), stopping=threading.Event()
    )
    try:
        yield prober, registry
    finally:
        prober.close()


def run(prober: Prober) -> ProbeResult:
    result = prober.run()
    assert result is not None
    return result


def nothing_left(harness: Harness) -> None:
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not harness.leftovers(), what="nothing left")
    assert harness.leftovers() == [], "left behind"


def test_every_registered_backend_has_an_entry() -> None:
    assert set(HARNESSES) | set(PENDING) == set(backends.MODULES)
    assert not set(HARNESSES) & set(PENDING)


def test_a_full_lifecycle_succeeds_and_the_metrics_say_so(harness: Harness) -> None:
    with probing(harness) as (prober, registry):
        result = run(prober)
    assert result.success, result.failure
    assert result.output is not None
    assert result.output.strip() == "hello"
    assert set(result.durations) == set(LIFECYCLE)
    mine = labels(harness)
    for phase in LIFECYCLE:
        count = registry.get_sample_value(
            "sandbox_phase_duration_seconds_count", {**mine, "phase": str(phase)}
        )
        assert count == 1, phase
    assert registry.get_sample_value("sandbox_lifecycle_duration_seconds_count", mine) == 1
    assert registry.get_sample_value("sandbox_time_to_exec_seconds_count", mine) == 1
    assert registry.get_sample_value("sandbox_probes_total", {**mine, "result": "success"}) == 1
    assert registry.get_sample_value("sandbox_probes_total", {**mine, "result": "failure"}) == 0
    assert registry.get_sample_value("sandbox_probe_success", mine) == 1
    assert registry.get_sample_value("sandbox_backend_up", mine) == 1
    nothing_left(harness)


def test_a_wrong_answer_is_an_exec_mismatch(harness: Harness) -> None:
    """A wrong exit code (with wrong output: the message shows both came through)."""
    with probing(harness, **harness.behave(Behaviour.WRONG)) as (prober, registry):
        result = run(prober)
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.EXEC, Reason.EXEC_MISMATCH)
    assert harness.mismatch() in result.failure.message
    failed = {**labels(harness), "phase": "exec", "reason": "exec_mismatch"}
    assert registry.get_sample_value("sandbox_probe_failures_total", failed) == 1
    assert registry.get_sample_value("sandbox_probe_success", labels(harness)) == 0
    assert registry.get_sample_value("sandbox_backend_up", labels(harness)) == 1
    nothing_left(harness)


def test_an_unreachable_engine_is_backend_down(harness: Harness) -> None:
    words = harness.unreachable()
    with probing(harness) as (prober, registry):
        result = run(prober)
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.CREATE, Reason.UNAVAILABLE)
    assert words in result.failure.message
    mine = labels(harness)
    assert registry.get_sample_value("sandbox_backend_up", mine) == 0
    failed = {**mine, "phase": "create", "reason": "unavailable"}
    assert registry.get_sample_value("sandbox_probe_failures_total", failed) == 1
    assert registry.get_sample_value("sandbox_probes_total", {**mine, "result": "failure"}) == 1
    assert registry.get_sample_value("sandbox_probe_success", mine) == 0
    nothing_left(harness)


def test_orphans_are_found_removed_and_counted_and_only_they(harness: Harness) -> None:
    """At start-up, what this instance left for this target (a killed run's sandbox,
    still running); later, the periodic collection takes another instance's once its
    own run is long over. Nothing else, and each removal counted."""
    applies(harness, "orphans")
    name = f"sandbox-exporter-{TARGET}-{{}}".format
    left = {
        "killed-run": managed_labels(age=2 * HOUR),
        "theirs-old": managed_labels(instance="another-exporter", age=2 * HOUR, ended=HOUR),
        "other-target": managed_labels(target="another-target", age=2 * HOUR),
    }
    try:
        for which, labelled in left.items():
            harness.leave(name(which), labelled, start=which == "killed-run")
        with probing(harness, max_age="1h") as (prober, registry):
            assert run(prober).success
            swept = registry.get_sample_value("sandbox_orphans_removed_total", labels(harness))
            still = " ".join(harness.leftovers())
            collected = prober.collect_garbage()
            removed = registry.get_sample_value("sandbox_orphans_removed_total", labels(harness))
        assert swept == 1, "the killed run's sandbox, at start-up"
        assert name("killed-run") not in still
        assert name("theirs-old") in still, "another instance's, at start-up"
        assert [s.name for s in collected] == [name("theirs-old")]
        assert removed == 2
        assert name("other-target") in " ".join(harness.leftovers()), "another target's"
    finally:
        still = " ".join(harness.leftovers())
        for which in left:
            if name(which) in still:
                harness.remove(name(which))
    nothing_left(harness)


def test_an_exec_past_its_deadline_is_ended_with_its_thread_or_process(
    harness: Harness,
) -> None:
    """A command that never ends: the exec is a `timeout`, what waited for it (a thread
    of the exporter, or its worker process) ends then, and the sandbox is removed."""
    threads = set(threading.enumerate())
    processes = children(os.getpid())
    settings = harness.behave(Behaviour.HANG)
    with probing(harness, timeouts={"exec": "200ms"}, **settings) as (prober, registry):
        result = run(prober)
        calls = prober.backend_calls()
        serving = calls.worker_pid if isinstance(calls, ProcessCalls) else None

        def left() -> list[str]:
            return [
                t.name
                for t in threading.enumerate()
                if t not in threads and t.is_alive() and t.name != "worker-spawner"
            ] + [
                f"process {pid}"
                for pid in children(os.getpid()) - processes
                if pid != serving and alive(pid)
            ]

        wait_for(lambda: not left(), what="the exec's thread or process to end")
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.EXEC, Reason.TIMEOUT)
    failed = {**labels(harness), "phase": "exec", "reason": "timeout"}
    assert registry.get_sample_value("sandbox_probe_failures_total", failed) == 1
    nothing_left(harness)


def test_output_past_the_cap_fails_exec_and_is_not_read(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command printing eight times the cap: exec fails with base.py's words, and
    while it runs the test process never holds twice the cap at once (its peak counts
    an in-process double's own work too; read whole, the output alone would be eight)."""
    peaks: list[int] = []
    with probing(harness, **harness.behave(Behaviour.FLOOD)) as (prober, _):
        calls = prober.backend_calls()
        untraced = calls.exec

        def traced(*args: Any, **kwargs: Any) -> ExecResult:
            tracemalloc.start()
            try:
                return untraced(*args, **kwargs)
            finally:
                peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()

        monkeypatch.setattr(calls, "exec", traced)
        result = run(prober)
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.EXEC, Reason.ERROR)
    assert result.failure.message == "output too large (over 1048576 bytes)"
    assert len(peaks) == 1
    assert peaks[0] < 2 * MAX_OUTPUT, f"{peaks[0]} bytes held at once"
    nothing_left(harness)
