"""The SLO of each target that has one (`slo:` in the config, docs/slo.md): its
objective, threshold and window as gauges, and its probes counted good, slow or
failed, so that one static rule file (config/prometheus/*.rules.yml) computes every
target's error ratio, burn rate and budget against that target's own objective.

The exporter classifies each probe itself, rather than the rules reading the
time-to-exec histogram: PromQL's `histogram_fraction` takes its threshold as a
scalar, one for all targets, and a Prometheus that keeps native histograms has no
`_bucket{le=...}` series to pick a per-target edge from. Counted here, any
threshold is exact, with either kind of histogram.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge

from sandbox_exporter.config.settings import Slo
from sandbox_exporter.config.targets import Target
from sandbox_exporter.results import ProbeResult

TB = ("target", "backend")
OUTCOMES = ("good", "slow", "failed")


class SloMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.objective = Gauge(
            "sandbox_slo_objective_ratio",
            "The share of the target's probes that must be good (its slo.objective).",
            TB,
            registry=registry,
        )
        self.threshold = Gauge(
            "sandbox_slo_time_to_exec_threshold_seconds",
            "A probe is good when it succeeds and reaches exec within this (slo.time_to_exec).",
            TB,
            registry=registry,
        )
        self.window = Gauge(
            "sandbox_slo_window_seconds",
            "The window the target's error budget is counted over (slo.window).",
            TB,
            registry=registry,
        )
        self.probes = Counter(
            "sandbox_slo_probes_total",
            "Probes of a target with an SLO, by outcome: good, slow (succeeded, but reached "
            "exec later than the threshold) or failed.",
            (*TB, "outcome"),
            registry=registry,
        )
        self._slos: dict[str, Slo] = {}

    def add_target(self, target: Target) -> None:
        """The target's SLO series; a reload that dropped its `slo` (and kept its
        labels, so the target's series stay) drops them."""
        if target.slo is None:
            if target.name in self._slos:
                self.remove_target(target)
            return
        labels = (target.name, target.backend)
        self._slos[target.name] = target.slo
        self.objective.labels(*labels).set(target.slo.objective)
        self.threshold.labels(*labels).set(target.slo.time_to_exec)
        self.window.labels(*labels).set(target.slo.window_seconds)
        for outcome in OUTCOMES:
            self.probes.labels(*labels, outcome)

    def remove_target(self, target: Target) -> None:
        self._slos.pop(target.name, None)
        labels = (target.name, target.backend)
        for gauge in (self.objective, self.threshold, self.window):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        for outcome in OUTCOMES:
            with contextlib.suppress(KeyError):
                self.probes.remove(*labels, outcome)

    def record(self, result: ProbeResult) -> None:
        """Count a finished run of a target with an SLO (a run cancelled by shutdown
        with no failure of its own is not one: the caller leaves it out)."""
        slo = self._slos.get(result.target)
        if slo is None:
            return
        if not result.success:
            outcome = "failed"
        elif (result.time_to_exec or 0.0) > slo.time_to_exec:
            outcome = "slow"
        else:
            outcome = "good"
        exemplar = {"run_id": result.run_id} if result.run_id else None
        self.probes.labels(result.target, result.backend, outcome).inc(exemplar=exemplar)
