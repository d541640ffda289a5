"""Metrics, read back from the registry with get_sample_value."""

from __future__ import annotations

import bisect
import itertools

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sandbox_exporter.config import DEFAULT_BUCKETS
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.results import Failure, Phase, ProbeResult, Reason
from tests.helpers import make_config

DURATIONS = {
    Phase.CREATE: 0.004,
    Phase.START: 0.3,
    Phase.EXEC: 0.05,
    Phase.STOP: 1.0,
    Phase.REMOVE: 2.5,
}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    m = Metrics(registry)
    config = make_config(
        {"name": "alpha", "backend": "docker", "image": "img:1"},
        {"name": "beta", "backend": "namespace", "buckets": [0.5, 1, 10]},
    )
    for target in config.targets:
        m.add_target(target)
    return m


def result(target: str = "alpha", backend: str = "docker", **fields: object) -> ProbeResult:
    r = ProbeResult(target=target, backend=backend, run_id="r", sandbox="s", started_at=10.0)
    r.finished_at = 12.0
    r.backend_up = True
    for key, value in fields.items():
        setattr(r, key, value)
    return r


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_every_series_exists_at_zero_from_start_up(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    for phase in ("create", "start", "exec", "stop", "remove"):
        labels = {"target": "alpha", "backend": "docker", "phase": phase}
        assert value(registry, "sandbox_phase_duration_seconds_count", **labels) == 0
    ab = {"target": "alpha", "backend": "docker"}
    for name in (
        "sandbox_lifecycle_duration_seconds_count",
        "sandbox_time_to_exec_seconds_count",
        "sandbox_image_pull_duration_seconds_count",
        "sandbox_probe_success",
        "sandbox_probe_last_run_timestamp_seconds",
        "sandbox_probe_last_success_timestamp_seconds",
        "sandbox_probe_in_progress",
        "sandbox_probe_skipped_total",
        "sandbox_backend_up",
        "sandbox_orphans_removed_total",
    ):
        assert value(registry, name, **ab) == 0, name
    assert value(registry, "sandbox_probes_total", result="failure", **ab) == 0
    assert (
        value(registry, "sandbox_probe_failures_total", phase="exec", reason="exec_mismatch", **ab)
        == 0
    )
    assert (
        value(registry, "sandbox_probe_failures_total", phase="remove", reason="cleanup", **ab) == 0
    )
    assert value(registry, "sandbox_probe_failures_total", phase="pull", reason="error", **ab) == 0
    info = {"target": "alpha", "backend": "docker", "image": "img:1", "runtime": ""}
    assert (
        value(
            registry,
            "sandbox_target_info",
            pull_policy="if_not_present",
            interval_seconds="60",
            **info,
        )
        == 1
    )


def test_target_info_shows_no_image_settings_for_a_backend_without_images(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    floor = make_config({"name": "floor", "backend": "namespace"}).targets[0]
    metrics.add_target(floor)
    info = {"target": "floor", "backend": "namespace", "image": "", "runtime": ""}
    assert (
        value(registry, "sandbox_target_info", pull_policy="", interval_seconds="60", **info) == 1
    )
    assert value(registry, "sandbox_exporter_config_last_reload_successful") == 0


def test_default_buckets_are_the_documented_ones(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    text = generate_latest(registry).decode()
    les = [
        line.split('le="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("sandbox_lifecycle_duration_seconds_bucket") and 'target="alpha"' in line
    ]
    assert les == [repr(float(b)) for b in DEFAULT_BUCKETS] + ["+Inf"]
    assert "1.0" in les
    assert "5.0" in les


def test_buckets_are_configurable_per_target(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.record(result("beta", "namespace", durations=dict(DURATIONS)))
    b = {"target": "beta", "backend": "namespace", "phase": "start"}
    assert value(registry, "sandbox_phase_duration_seconds_bucket", le="0.5", **b) == 1
    assert value(registry, "sandbox_phase_duration_seconds_bucket", le="0.1", **b) is None
    assert value(registry, "sandbox_phase_duration_seconds_bucket", le="10.0", **b) == 1


def test_a_successful_run_fills_every_figure(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.record(result(durations=dict(DURATIONS)))
    ab = {"target": "alpha", "backend": "docker"}
    for phase, seconds in DURATIONS.items():
        labels = {**ab, "phase": str(phase)}
        assert value(registry, "sandbox_phase_duration_seconds_count", **labels) == 1
        assert value(registry, "sandbox_phase_duration_seconds_sum", **labels) == seconds
    stop = {**ab, "phase": "stop"}
    assert value(registry, "sandbox_phase_duration_seconds_bucket", le="0.75", **stop) == 0
    assert value(registry, "sandbox_phase_duration_seconds_bucket", le="1.0", **stop) == 1
    assert value(registry, "sandbox_lifecycle_duration_seconds_sum", **ab) == pytest.approx(3.854)
    assert value(registry, "sandbox_time_to_exec_seconds_sum", **ab) == pytest.approx(0.354)
    assert value(registry, "sandbox_probes_total", result="success", **ab) == 1
    assert value(registry, "sandbox_probe_success", **ab) == 1
    assert value(registry, "sandbox_probe_last_success_timestamp_seconds", **ab) == 12.0
    assert value(registry, "sandbox_backend_up", **ab) == 1
    assert value(registry, "sandbox_image_pull_duration_seconds_count", **ab) == 0


def test_a_failed_run_counts_its_reason_and_keeps_completed_phases(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.record(result(durations=dict(DURATIONS)))
    failed = result(
        durations={Phase.CREATE: 0.01, Phase.START: 0.2},
        failure=Failure(Phase.EXEC, Reason.TIMEOUT, "exec did not finish"),
        cleanup_failures=[Failure(Phase.REMOVE, Reason.CLEANUP, "remove broke")],
    )
    failed.finished_at = 20.0
    metrics.record(failed)
    ab = {"target": "alpha", "backend": "docker"}
    assert (
        value(registry, "sandbox_probe_failures_total", phase="exec", reason="timeout", **ab) == 1
    )
    assert (
        value(registry, "sandbox_probe_failures_total", phase="remove", reason="cleanup", **ab) == 1
    )
    assert value(registry, "sandbox_probes_total", result="failure", **ab) == 1
    assert value(registry, "sandbox_probe_success", **ab) == 0
    assert value(registry, "sandbox_probe_last_run_timestamp_seconds", **ab) == 20.0
    assert value(registry, "sandbox_probe_last_success_timestamp_seconds", **ab) == 12.0
    assert value(registry, "sandbox_phase_duration_seconds_count", phase="start", **ab) == 2
    assert value(registry, "sandbox_phase_duration_seconds_count", phase="exec", **ab) == 1
    assert value(registry, "sandbox_lifecycle_duration_seconds_count", **ab) == 1


def test_pull_goes_to_its_own_histogram(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.record(result(durations={**DURATIONS, Phase.PULL: 42.0}, pulled=True))
    ab = {"target": "alpha", "backend": "docker"}
    assert value(registry, "sandbox_image_pull_duration_seconds_sum", **ab) == 42.0
    assert value(registry, "sandbox_lifecycle_duration_seconds_sum", **ab) == pytest.approx(3.854)


def test_unreachable_backend_sets_backend_up_to_zero(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.record(result(durations=dict(DURATIONS)))
    metrics.record(
        result(backend_up=False, failure=Failure(Phase.CREATE, Reason.UNAVAILABLE, "refused"))
    )
    ab = {"target": "alpha", "backend": "docker"}
    assert value(registry, "sandbox_backend_up", **ab) == 0
    assert (
        value(registry, "sandbox_probe_failures_total", phase="create", reason="unavailable", **ab)
        == 1
    )


def test_a_run_cancelled_by_shutdown_is_not_a_failure(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.record(result(durations={Phase.CREATE: 0.1}, cancelled=True))
    ab = {"target": "alpha", "backend": "docker"}
    assert value(registry, "sandbox_probes_total", result="failure", **ab) == 0
    assert value(registry, "sandbox_probes_total", result="success", **ab) == 0
    assert value(registry, "sandbox_phase_duration_seconds_count", phase="create", **ab) == 0


def test_two_instances_do_not_collide() -> None:
    for _ in range(2):
        Metrics(CollectorRegistry())


def test_the_default_buckets_keep_quantiles_within_a_quarter_from_1ms_to_60s() -> None:
    """histogram_quantile interpolates inside the bucket that holds the quantile: its
    estimate is somewhere in (low, high], the true value too. Worst case, over every
    value from 1 ms to 60 s and every place the estimate can land: 25%."""
    assert 1.0 in DEFAULT_BUCKETS
    assert 5.0 in DEFAULT_BUCKETS, "the SLO edges, exactly"
    assert list(DEFAULT_BUCKETS) == sorted(DEFAULT_BUCKETS)
    edges = [b for b in DEFAULT_BUCKETS if 0.001 <= b <= 60]
    assert (edges[0], edges[-1]) == (0.001, 60.0)
    steps = [high / low for low, high in itertools.pairwise(edges)]
    assert max(steps) <= 1.25, "adjacent edges at most 1.25x apart"
    worst = 0.0
    for i in range(2001):  # values spread evenly on a log scale from 1 ms to 60 s
        true = 0.001 * (60_000 ** (i / 2000))
        index = bisect.bisect_left(edges, true)
        low, high = edges[max(index - 1, 0)], edges[index]
        worst = max(worst, (high - true) / true, (true - low) / true)
    assert worst <= 0.25, worst


def test_a_reload_that_drops_a_targets_burst_drops_its_burst_series(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    """The fleet adds a changed target again without removing it when its labels stay."""
    bursting = make_config(
        {"name": "gamma", "backend": "namespace", "burst": {"concurrency": 2}}
    ).targets[0]
    metrics.add_target(bursting)
    labels = {"target": "gamma", "backend": "namespace"}
    assert value(registry, "sandbox_burst_concurrency", **labels) == 2
    metrics.add_target(make_config({"name": "gamma", "backend": "namespace"}).targets[0])
    assert value(registry, "sandbox_burst_concurrency", **labels) is None
    assert value(registry, "sandbox_bursts_total", **labels, result="success") is None
    assert value(registry, "sandbox_burst_time_to_all_ready_seconds_count", **labels) is None
    assert value(registry, "sandbox_probes_total", **labels, result="success") == 0
