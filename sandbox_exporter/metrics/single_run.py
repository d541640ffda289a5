"""One run alone in the Prometheus text format, as `/probe` answers it (the
blackbox_exporter style: gauges of this run, not the scheduled histograms)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from sandbox_exporter.results import LIFECYCLE, Phase, ProbeResult, failures


def exposition(result: ProbeResult) -> bytes:
    """This run alone, in the Prometheus text format (blackbox_exporter style)."""
    registry = CollectorRegistry()
    tb = ("target", "backend")
    labels = (result.target, result.backend)

    def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, (*tb, *extra), registry=registry)

    gauge("sandbox_probe_success", "1 if this run succeeded.").labels(*labels).set(
        1 if result.success else 0
    )
    phases = gauge(
        "sandbox_probe_phase_duration_seconds", "Each phase of this run that succeeded.", ("phase",)
    )
    for phase in LIFECYCLE:
        if phase in result.durations:
            phases.labels(*labels, str(phase)).set(result.durations[phase])
    if result.total is not None:
        gauge("sandbox_probe_duration_seconds", "The five phases of this run.").labels(*labels).set(
            result.total
        )
    if result.time_to_exec is not None:
        gauge("sandbox_probe_time_to_exec_seconds", "Create + start + exec of this run.").labels(
            *labels
        ).set(result.time_to_exec)
    if Phase.PULL in result.durations:
        gauge("sandbox_probe_image_pull_duration_seconds", "The image pull this run made.").labels(
            *labels
        ).set(result.durations[Phase.PULL])
    failed = gauge(
        "sandbox_probe_failed",
        "1 for the phase and reason this run failed with.",
        ("phase", "reason"),
    )
    for failure in failures(result):
        failed.labels(*labels, str(failure.phase), str(failure.reason)).set(1)
    if result.backend_up is not None:
        gauge("sandbox_probe_backend_up", "1 if the backend answered.").labels(*labels).set(
            1 if result.backend_up else 0
        )
    return generate_latest(registry)
