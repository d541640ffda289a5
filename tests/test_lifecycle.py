"""The runner: timings, failures per phase, timeouts, cleanup, exec check, pull."""

from __future__ import annotations

import threading
import time

import pytest
from structlog.testing import capture_logs

from sandbox_exporter.backends.base import BackendUnavailable, ExecResult
from sandbox_exporter.probing.lifecycle import LifecycleRunner
from sandbox_exporter.results import LIFECYCLE, Phase, Reason
from tests.fakes import FakeBackend, FakeClock, failing, thread_calls
from tests.helpers import make_target, wait_for

COSTS = {"create": 0.5, "start": 1.25, "exec": 0.125, "stop": 2.0, "remove": 0.25}


def runner(
    backend: FakeBackend, clock: FakeClock | None = None, **settings: object
) -> LifecycleRunner:
    target = make_target("docker", **settings)  # a kind whose images the runner pulls
    if clock is None:
        return LifecycleRunner(thread_calls(backend), target, "test-instance")
    return LifecycleRunner(thread_calls(backend), target, "test-instance", clock=clock)


def test_each_phase_duration_lands_in_its_phase() -> None:
    clock = FakeClock()
    backend = FakeBackend(clock=clock, costs=COSTS)
    result = runner(backend, clock).run()
    assert result.success
    assert {p: result.durations[p] for p in LIFECYCLE} == {Phase(k): v for k, v in COSTS.items()}
    assert result.total == sum(COSTS.values())
    assert result.time_to_exec == 0.5 + 1.25 + 0.125
    assert [m for m, _ in backend.received] == [
        "ping",
        "image_present",
        "create",
        "start",
        "exec",
        "stop",
        "remove",
    ]
    assert backend.existing == set()


def test_sandbox_is_named_and_labelled_for_this_exporter() -> None:
    seen = {}
    backend = FakeBackend()
    original = backend.create

    def create(spec, deadline):  # type: ignore[no-untyped-def]
        seen["spec"] = spec
        return original(spec, deadline)

    backend.create = create  # type: ignore[method-assign]
    result = runner(backend).run()
    spec = seen["spec"]
    assert spec.name == result.sandbox
    assert spec.name.startswith("sandbox-exporter-fake-")
    assert spec.labels["sandbox-exporter.io/managed"] == "true"
    assert spec.labels["sandbox-exporter.io/target"] == "fake"
    assert spec.labels["sandbox-exporter.io/instance"] == "test-instance"
    assert spec.labels["sandbox-exporter.io/created-at"].isdigit()
    # when the run is over whatever happens, every timeout added up: see collector.py
    whole_run = make_target("docker").timeouts.whole_run
    created = int(spec.labels["sandbox-exporter.io/created-at"])
    assert int(spec.labels["sandbox-exporter.io/expires-at"]) == created + int(whole_run) + 1


@pytest.mark.parametrize("phase", ["create", "start", "exec", "stop", "remove"])
def test_failure_in_each_phase_is_recorded_and_cleaned_up(phase: str) -> None:
    backend = FakeBackend(errors={phase: failing(f"{phase} broke")})
    with capture_logs() as logs:
        result = runner(backend).run()
    assert not result.success
    assert result.failure is not None
    assert result.failure.phase == Phase(phase)
    assert result.failure.reason == Reason.ERROR
    assert f"{phase} broke" in result.failure.message
    # phases before the failure are timed, the failed one and later ones are not
    index = LIFECYCLE.index(Phase(phase))
    assert set(result.durations) == set(LIFECYCLE[:index])
    # cleanup: whatever was created is removed (a failing remove is retried once)
    assert backend.called("remove")
    if phase in ("start", "exec"):
        assert backend.called("stop"), "a started sandbox is stopped before removal"
    failed = [e for e in logs if e.get("outcome") == "failed"]
    assert failed[0]["phase"] == phase
    assert failed[0]["error"] == f"{phase} broke"


def test_failing_cleanup_is_reported_as_cleanup() -> None:
    backend = FakeBackend(errors={"exec": failing(), "remove": failing("remove broke")})
    result = runner(backend).run()
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.EXEC, Reason.ERROR)
    assert [(f.phase, f.reason) for f in result.cleanup_failures] == [
        (Phase.REMOVE, Reason.CLEANUP)
    ]


def test_a_hanging_call_is_cut_at_its_timeout_and_cleaned_up_late() -> None:
    backend = FakeBackend(hang={"create"})
    began = time.monotonic()
    result = runner(backend, timeouts={"create": "200ms"}).run()
    elapsed = time.monotonic() - began
    try:
        assert result.failure is not None
        assert (result.failure.phase, result.failure.reason) == (Phase.CREATE, Reason.TIMEOUT)
        assert "200ms" in result.failure.message or "0.2s" in result.failure.message
        assert elapsed < 5, "the probe must not be held past the phase timeout"
        assert Phase.CREATE not in result.durations
        removes_before = len(backend.called("remove"))
        assert removes_before == 1, "cleanup tried right away"
    finally:
        backend.release.set()
    # the create that was abandoned finishes later: its sandbox is removed then
    wait_for(lambda: len(backend.called("remove")) == 2, what="late removal")
    wait_for(lambda: not backend.existing, what="sandbox gone")


def test_exec_with_wrong_output_is_a_mismatch() -> None:
    backend = FakeBackend(exec_result=ExecResult(0, "goodbye\n"))
    result = runner(backend).run()
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.EXEC, Reason.EXEC_MISMATCH)
    assert "goodbye" in result.failure.message
    assert backend.called("stop")
    assert backend.called("remove")


def test_exec_with_non_zero_exit_is_a_mismatch() -> None:
    backend = FakeBackend(exec_result=ExecResult(3, "hello\n"))
    result = runner(backend).run()
    assert result.failure is not None
    assert result.failure.reason == Reason.EXEC_MISMATCH
    assert "exit code 3" in result.failure.message


def test_no_expected_output_checks_only_the_exit_code() -> None:
    backend = FakeBackend(exec_result=ExecResult(0, "anything"))
    assert runner(backend, expect_output=None).run().success


def test_missing_image_is_pulled_and_the_pull_is_timed_apart() -> None:
    clock = FakeClock()
    backend = FakeBackend(clock=clock, costs={**COSTS, "pull_image": 7.0}, images=set())
    result = runner(backend, clock).run()
    assert result.success
    assert result.pulled
    assert result.durations[Phase.PULL] == 7.0
    assert result.total == sum(COSTS.values()), "the pull is not part of the lifecycle"


def test_pull_policy_always_pulls_a_present_image() -> None:
    backend = FakeBackend()
    result = runner(backend, pull_policy="always").run()
    assert result.success
    assert backend.called("pull_image") == ["busybox:1.36"]


def test_pull_policy_never_fails_on_a_missing_image_without_creating() -> None:
    backend = FakeBackend(images=set())
    result = runner(backend, pull_policy="never").run()
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.PULL, Reason.ERROR)
    assert "pull_policy is never" in result.failure.message
    assert not backend.called("pull_image")
    assert not backend.called("create")
    assert not backend.called("remove")


def test_unreachable_backend_is_unavailable() -> None:
    backend = FakeBackend(errors={"ping": BackendUnavailable("connection refused")})
    result = runner(backend).run()
    assert result.backend_up is False
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.CREATE, Reason.UNAVAILABLE)
    assert not backend.called("create")


def test_engine_lost_mid_run_is_unavailable() -> None:
    backend = FakeBackend(errors={"start": BackendUnavailable("connection refused")})
    result = runner(backend).run()
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.START, Reason.UNAVAILABLE)
    assert result.backend_up is False


def test_cancel_goes_straight_to_removal() -> None:
    cancel = threading.Event()
    backend = FakeBackend(on_call=lambda method: cancel.set() if method == "start" else None)
    result = runner(backend).run(cancel=cancel)
    assert result.cancelled
    assert not result.success
    assert result.failure is None
    assert not backend.called("exec")
    assert not backend.called("stop")
    assert backend.called("remove")
    assert backend.existing == set()


def test_each_phase_logs_one_line_with_run_id() -> None:
    with capture_logs() as logs:
        result = runner(FakeBackend()).run()
    phases = [e for e in logs if e["event"] == "phase"]
    assert [e["phase"] for e in phases] == [str(p) for p in LIFECYCLE]
    assert {e["run_id"] for e in phases} == {result.run_id}
    assert all(e["target"] == "fake" and "duration_seconds" in e for e in phases)


@pytest.mark.parametrize("backend", ["namespace", "kubernetes"])
def test_images_are_the_runners_business_only_where_the_exporter_pulls(backend: str) -> None:
    """No image (namespace) or one the engine pulls inside `start` (kubernetes): the
    runner never checks or pulls it; the spec carries the pull policy to the engine."""
    seen = {}
    fake = FakeBackend(images=set())
    original = fake.create

    def create(spec, deadline):  # type: ignore[no-untyped-def]
        seen["spec"] = spec
        return original(spec, deadline)

    fake.create = create  # type: ignore[method-assign]
    target = make_target(backend, pull_policy="always")
    result = LifecycleRunner(thread_calls(fake), target, "test-instance").run()
    assert result.success, result.failure
    assert not fake.called("image_present")
    assert not fake.called("pull_image")
    assert Phase.PULL not in result.durations
    assert seen["spec"].pull_policy == "always"


def test_an_engine_that_stays_down_is_logged_once_per_target_and_its_return_once() -> None:
    from prometheus_client import CollectorRegistry

    from sandbox_exporter.metrics.families import Metrics
    from sandbox_exporter.probing.prober import Prober

    backend = FakeBackend(errors={"ping": BackendUnavailable("cannot reach it: refused")})
    target = make_target()
    prober = Prober(
        target, "i", Metrics(CollectorRegistry()), backend=backend, stopping=threading.Event()
    )
    try:
        with capture_logs() as logs:
            for _ in range(3):
                prober.run()
            backend.errors.pop("ping")
            prober.run()
    finally:
        prober.close()
    events = [
        (e["log_level"], e["event"])
        for e in logs
        if "unreachable" in e["event"] or e["event"] == "backend reachable again"
    ]
    assert events == [
        ("warning", "backend unreachable"),
        ("debug", "backend still unreachable"),
        ("debug", "backend still unreachable"),
        ("info", "backend reachable again"),
    ]
    assert isinstance(prober.metrics, Metrics)
    failures = prober.metrics.registry.get_sample_value(
        "sandbox_probe_failures_total",
        {
            "target": target.name,
            "backend": target.backend,
            "phase": "create",
            "reason": "unavailable",
        },
    )
    assert failures == 3, "every run is counted, whatever is logged"
