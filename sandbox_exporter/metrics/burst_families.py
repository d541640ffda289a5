"""The burst probe's metrics (probing/burst.py), apart from the single probe's so that
the two never mix: every family is `sandbox_burst_*`, labelled by target and backend
(and phase, reason, result), never by sandbox or launch index, so the series do not
grow with the concurrency."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from sandbox_exporter.config.targets import Target
from sandbox_exporter.metrics.histograms import HistogramFamily
from sandbox_exporter.metrics.native import NativeLayout
from sandbox_exporter.results import LIFECYCLE, BurstResult, Phase, failure_modes

TB = ("target", "backend")
RESULTS = ("success", "failure")


class BurstMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.phase_duration = HistogramFamily(
            "sandbox_burst_phase_duration_seconds",
            "Duration of one lifecycle phase of a sandbox in a burst, in seconds (succeeded only).",
            (*TB, "phase"),
        )
        self.time_to_exec = HistogramFamily(
            "sandbox_burst_time_to_exec_seconds",
            "Create + start + exec of one successful sandbox in a burst, in seconds.",
            TB,
        )
        self.first_ready = HistogramFamily(
            "sandbox_burst_time_to_first_ready_seconds",
            "From a burst's launch to the first sandbox whose command answered, in seconds.",
            TB,
        )
        self.all_ready = HistogramFamily(
            "sandbox_burst_time_to_all_ready_seconds",
            "From a burst's launch to the last sandbox's answer, when every one answered.",
            TB,
        )
        self.histograms = (self.phase_duration, self.time_to_exec, self.first_ready, self.all_ready)

        def counter(name: str, doc: str, labels: tuple[str, ...] = TB) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, TB, registry=registry)

        self.bursts = counter(
            "sandbox_bursts_total",
            "Bursts run, by result (success: every sandbox succeeded).",
            (*TB, "result"),
        )
        self.sandboxes = counter(
            "sandbox_burst_sandboxes_total", "Sandboxes run in bursts, by result.", (*TB, "result")
        )
        self.failures = counter(
            "sandbox_burst_sandbox_failures_total",
            "Sandboxes of bursts that failed, by phase and reason.",
            (*TB, "phase", "reason"),
        )
        self.skipped = counter(
            "sandbox_burst_skipped_total",
            "Scheduled bursts skipped: a run of the target was still going.",
        )
        self.success_ratio = gauge(
            "sandbox_burst_success_ratio", "Share of the last burst's sandboxes that succeeded."
        )
        self.first_quarter = gauge(
            "sandbox_burst_first_quarter_time_to_exec_seconds",
            "Median time to exec of the first quarter launched in the last burst.",
        )
        self.last_quarter = gauge(
            "sandbox_burst_last_quarter_time_to_exec_seconds",
            "Median time to exec of the last quarter launched in the last burst.",
        )
        self.launch_skew = gauge(
            "sandbox_burst_launch_skew_seconds",
            "Spread of the last burst's creates around their planned instants: the "
            "exporter's own distortion of the launch.",
        )
        self.in_progress = gauge("sandbox_burst_in_progress", "1 while a burst is running.")
        self.concurrency = gauge("sandbox_burst_concurrency", "Sandboxes a burst launches.")
        self.last_run = gauge(
            "sandbox_burst_last_run_timestamp_seconds", "When the last burst finished (Unix time)."
        )
        self._gauges = (
            self.success_ratio,
            self.first_quarter,
            self.last_quarter,
            self.launch_skew,
            self.in_progress,
            self.concurrency,
            self.last_run,
            self.skipped,
        )

    def add_target(self, target: Target) -> None:
        if target.burst is None:
            # a reload that dropped the `burst` block but kept the labels: its series go
            self.remove_target(target)
            return
        labels = (target.name, target.backend)
        native = NativeLayout.of(target.histograms)
        for phase in LIFECYCLE:
            self.phase_duration.add((*labels, str(phase)), target.buckets, native)
        for family in self.histograms[1:]:
            family.add(labels, target.buckets, native)
        for result in RESULTS:
            self.bursts.labels(*labels, result)
            self.sandboxes.labels(*labels, result)
        for phase, reason in failure_modes():
            self.failures.labels(*labels, str(phase), str(reason))
        for metric in self._gauges:
            metric.labels(*labels)
        self.concurrency.labels(*labels).set(target.burst.concurrency)

    def remove_target(self, target: Target) -> None:
        labels = (target.name, target.backend)
        for family in self.histograms:
            family.remove_where("target", target.name)
        combos: list[tuple[Any, tuple[str, ...]]] = [
            *((m, (*labels, r)) for m in (self.bursts, self.sandboxes) for r in RESULTS),
            *((self.failures, (*labels, str(p), str(r))) for p, r in failure_modes()),
            *((metric, labels) for metric in self._gauges),
        ]
        for metric, values in combos:
            with contextlib.suppress(KeyError):
                metric.remove(*values)

    def record(self, burst: BurstResult) -> None:
        """Count one finished burst. One cancelled by shutdown counts only its failures."""
        labels = (burst.target, burst.backend)
        when = burst.finished_at or None
        failed = [burst.preflight] if burst.preflight and burst.preflight.failure else []
        for result in [*failed, *burst.results]:
            for failure in ([result.failure] if result.failure else []) + result.cleanup_failures:
                self.failures.labels(*labels, str(failure.phase), str(failure.reason)).inc()
        if burst.cancelled and not burst.launched:
            return
        for result in burst.results:
            exemplar = {"run_id": result.run_id} if result.run_id else None
            for phase, seconds in result.durations.items():
                if phase is not Phase.PULL:
                    self.phase_duration.observe((*labels, str(phase)), seconds, exemplar, when)
            if result.time_to_exec is not None:
                self.time_to_exec.observe(labels, result.time_to_exec, exemplar, when)
            self.sandboxes.labels(*labels, "success" if result.success else "failure").inc()
        exemplar = {"burst_id": burst.burst_id}
        if (first := burst.time_to_first_ready) is not None:
            self.first_ready.observe(labels, first, exemplar, when)
        if (every := burst.time_to_all_ready) is not None:
            self.all_ready.observe(labels, every, exemplar, when)
        self.bursts.labels(*labels, "success" if burst.success else "failure").inc()
        self.success_ratio.labels(*labels).set(burst.success_ratio)
        for gauge, which in ((self.first_quarter, "first"), (self.last_quarter, "last")):
            value = burst.quarter_time_to_exec(which)
            gauge.labels(*labels).set(value if value is not None else float("nan"))
        skew = burst.launch_skew
        self.launch_skew.labels(*labels).set(skew if skew is not None else float("nan"))
        self.last_run.labels(*labels).set(burst.finished_at)
