"""Every metric the exporter exposes, on one injected CollectorRegistry, and
`/metrics`: prometheus_client's own exposition of that registry.

Names and labels are part of the interface (dashboard, alert rules, chart
use them); see docs/metrics.md. The duration histograms are
collectors of their own (histograms.py: buckets per target, exemplars); the
standard process, platform and GC collectors are on the same registry.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterable
from typing import Any, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sandbox_exporter import __version__
from sandbox_exporter.config.targets import Target
from sandbox_exporter.metrics.burst_families import BurstMetrics
from sandbox_exporter.metrics.histograms import HistogramFamily
from sandbox_exporter.metrics.native import NativeLayout
from sandbox_exporter.metrics.slo_families import SloMetrics
from sandbox_exporter.results import LIFECYCLE, BurstResult, Phase, ProbeResult, failure_modes

TB = ("target", "backend")
Format = Literal["text", "openmetrics", "protobuf"]


class _One(Collector):
    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterable[Metric]:
        return [self.metric]


def _encode(metric: Metric, openmetrics: bool) -> bytes:
    if openmetrics:
        page: bytes = generate_openmetrics(_One(metric))  # type: ignore[no-untyped-call]
        return page
    return generate_latest(_One(metric))


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # `_created` series double every counter and nothing reads them (a switch of
        # prometheus_client's, for the whole process)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.phase_duration = HistogramFamily(
            "sandbox_phase_duration_seconds",
            "Duration of one lifecycle phase, in seconds; recorded only when the phase succeeded.",
            (*TB, "phase"),
        )
        self.lifecycle_duration = HistogramFamily(
            "sandbox_lifecycle_duration_seconds",
            "Create + start + exec + stop + remove of a successful probe, in seconds.",
            TB,
        )
        self.time_to_exec = HistogramFamily(
            "sandbox_time_to_exec_seconds",
            "Create + start + exec of a successful probe: the wait before a first command runs.",
            TB,
        )
        self.image_pull_duration = HistogramFamily(
            "sandbox_image_pull_duration_seconds",
            "Duration of an image pull a probe had to make, timed apart from its lifecycle.",
            TB,
        )
        self.burst = BurstMetrics(registry)
        self.slo = SloMetrics(registry)
        self._histograms = (
            self.phase_duration,
            self.lifecycle_duration,
            self.time_to_exec,
            self.image_pull_duration,
            *self.burst.histograms,
        )
        for family in self._histograms:
            registry.register(family)

        def counter(name: str, doc: str, labels: tuple[str, ...] = TB) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = TB) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        self.probes = counter(
            "sandbox_probes_total", "Probes run, by result (success/failure).", (*TB, "result")
        )
        self.failures = counter(
            "sandbox_probe_failures_total",
            "Probe failures by the phase that failed and why.",
            (*TB, "phase", "reason"),
        )
        self.success = gauge("sandbox_probe_success", "1 if the last probe succeeded, else 0.")
        self.last_run = gauge(
            "sandbox_probe_last_run_timestamp_seconds", "When the last probe finished (Unix time)."
        )
        self.last_success = gauge(
            "sandbox_probe_last_success_timestamp_seconds",
            "When the last successful probe finished (Unix time); 0 if none yet.",
        )
        self.in_progress = gauge("sandbox_probe_in_progress", "1 while a probe is running.")
        self.interval = gauge(
            "sandbox_probe_interval_seconds", "The configured interval between probes (for alerts)."
        )
        self.skipped_runs = counter(
            "sandbox_probe_skipped_total", "Scheduled runs skipped because the previous still ran."
        )
        self.backend_up = gauge(
            "sandbox_backend_up", "1 if the backend answered at the last attempt, else 0."
        )
        self.orphans_removed = counter(
            "sandbox_orphans_removed_total",
            "Sandboxes of this exporter found left behind (earlier run or crash) and removed.",
        )
        self.target_info = Info("sandbox_target", "What each target probes.", TB, registry=registry)
        self.build_info = Info("sandbox_exporter_build", "Exporter build.", registry=registry)
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        self.reload_successful = Gauge(
            "sandbox_exporter_config_last_reload_successful",
            "1 if the last configuration load succeeded.",
            registry=registry,
        )
        self.reload_success_time = Gauge(
            "sandbox_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (Unix time).",
            registry=registry,
        )
        self.web_restarts = Counter(
            "sandbox_exporter_web_process_restarts_total",
            "Times the web process that answers HTTP died and was started again.",
            registry=registry,
        )

    def exposition(self, fmt: Format = "text") -> bytes:
        """The registry in the Prometheus text format (0.0.4), in OpenMetrics (with the
        exemplars) or in protobuf (with the native histograms, protobuf.py).
        The text formats are prometheus_client's exposition of each family it collects,
        in its order, but for the duration histograms' samples, whose lines (the
        library's, to the byte) come from their cache (histograms.py says why)."""
        openmetrics = fmt == "openmetrics"
        ours = {family.name: family for family in self._histograms}
        with contextlib.ExitStack() as placeholders:
            for family in self._histograms:
                placeholders.enter_context(family.placeholder())
            collected = list(self.registry.collect())
        if fmt == "protobuf":
            # the protobuf runtime loads here, at the first scrape that asks for it
            from sandbox_exporter.metrics import protobuf

            return protobuf.exposition(
                collected, {name: family.protobuf() for name, family in ours.items()}
            )
        parts: list[bytes] = []
        for metric in collected:
            page = _encode(metric, openmetrics)
            parts.append(page.removesuffix(b"# EOF\n") if openmetrics else page)
            if metric.name in ours:
                parts.append(ours[metric.name].render(fmt).encode())
        if openmetrics:
            parts.append(b"# EOF\n")
        return b"".join(parts)

    def config_loaded(self, ok: bool, when: float) -> None:
        self.reload_successful.set(1 if ok else 0)
        if ok:
            self.reload_success_time.set(when)

    def add_target(self, target: Target) -> None:
        """Pre-create every series this target implies, all at zero."""
        labels = (target.name, target.backend)
        native = NativeLayout.of(target.histograms)
        for phase in LIFECYCLE:
            self.phase_duration.add((*labels, str(phase)), target.buckets, native)
        for family in (self.lifecycle_duration, self.time_to_exec, self.image_pull_duration):
            family.add(labels, target.buckets, native)
        for result in ("success", "failure"):
            self.probes.labels(*labels, result)
        for phase, reason in failure_modes():
            self.failures.labels(*labels, str(phase), str(reason))
        for metric in self._per_target():
            metric.labels(*labels)
        self.interval.labels(*labels).set(target.interval)
        self.burst.add_target(target)
        self.slo.add_target(target)
        self.target_info.labels(*labels).info(
            {
                "image": target.image if target.uses_image else "",
                "runtime": target.options.runtime_name() or "",
                "pull_policy": target.pull_policy if target.uses_image else "",
                "interval_seconds": f"{target.interval:g}",
            }
        )

    def _per_target(self) -> tuple[Any, ...]:
        """The counters and gauges with one series per target, labelled (target, backend)."""
        return (
            self.success,
            self.last_run,
            self.last_success,
            self.in_progress,
            self.skipped_runs,
            self.backend_up,
            self.orphans_removed,
        )

    def remove_target(self, target: Target) -> None:
        """Drop every series of `target` (a reload removed or relabelled it)."""
        labels = (target.name, target.backend)
        self.burst.remove_target(target)
        self.slo.remove_target(target)
        for family in self._histograms:
            family.remove_where("target", target.name)
        combos: list[tuple[Any, tuple[str, ...]]] = [
            (self.probes, (*labels, "success")),
            (self.probes, (*labels, "failure")),
            *((self.failures, (*labels, str(p), str(r))) for p, r in failure_modes()),
            *(
                (metric, labels)
                for metric in (*self._per_target(), self.target_info, self.interval)
            ),
        ]
        for metric, values in combos:
            with contextlib.suppress(KeyError):
                metric.remove(*values)

    def running(self, target: Target, *, burst: bool, now: bool) -> None:
        gauge = self.burst.in_progress if burst else self.in_progress
        gauge.labels(target.name, target.backend).set(1 if now else 0)

    def skipped(self, target: Target, *, burst: bool) -> None:
        counter = self.burst.skipped if burst else self.skipped_runs
        counter.labels(target.name, target.backend).inc()

    def orphan_removed(self, target: Target) -> None:
        self.orphans_removed.labels(target.name, target.backend).inc()

    def record_burst(self, burst: BurstResult) -> None:
        self.burst.record(burst)

    def record(self, result: ProbeResult) -> None:
        """Count one finished run. A run cancelled by shutdown counts only its cleanup trouble."""
        labels = (result.target, result.backend)
        for failure in result.cleanup_failures:
            self.failures.labels(*labels, str(failure.phase), str(failure.reason)).inc()
        if result.cancelled and result.failure is None:
            return
        exemplar = {"run_id": result.run_id} if result.run_id else None
        when = result.finished_at or None
        for phase, seconds in result.durations.items():
            if phase is Phase.PULL:
                self.image_pull_duration.observe(labels, seconds, exemplar, when)
            else:
                self.phase_duration.observe((*labels, str(phase)), seconds, exemplar, when)
        if result.backend_up is not None:
            self.backend_up.labels(*labels).set(1 if result.backend_up else 0)
        if result.failure is not None:
            failure = result.failure
            self.failures.labels(*labels, str(failure.phase), str(failure.reason)).inc()
        self.probes.labels(*labels, "success" if result.success else "failure").inc()
        self.slo.record(result)
        self.success.labels(*labels).set(1 if result.success else 0)
        self.last_run.labels(*labels).set(result.finished_at)
        if result.success:
            total, tte = result.total, result.time_to_exec
            assert total is not None
            assert tte is not None
            self.lifecycle_duration.observe(labels, total, exemplar, when)
            self.time_to_exec.observe(labels, tte, exemplar, when)
            self.last_success.labels(*labels).set(result.finished_at)
