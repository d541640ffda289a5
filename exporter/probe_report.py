"""One run's figures, as `/probe` and `sandbox-exporter probe` give them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from exporter.lifecycle import LIFECYCLE, Phase, ProbeResult


def _failures(result: ProbeResult) -> list[Any]:
    return ([result.failure] if result.failure else []) + list(result.cleanup_failures)


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
    phases = gauge("sandbox_probe_phase_duration_seconds", "Each phase of this run that succeeded.",
                   ("phase",))  # fmt: skip
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
    failed = gauge("sandbox_probe_failed", "1 for the phase and reason this run failed with.",
                   ("phase", "reason"))  # fmt: skip
    for failure in _failures(result):
        failed.labels(*labels, str(failure.phase), str(failure.reason)).set(1)
    if result.backend_up is not None:
        gauge("sandbox_probe_backend_up", "1 if the backend answered.").labels(*labels).set(
            1 if result.backend_up else 0
        )
    return generate_latest(registry)


def as_dict(result: ProbeResult) -> dict[str, Any]:
    return {
        "target": result.target,
        "backend": result.backend,
        "run_id": result.run_id,
        "sandbox": result.sandbox,
        "success": result.success,
        "started_at": datetime.fromtimestamp(result.started_at, UTC).isoformat(),
        "durations_seconds": {str(p): d for p, d in result.durations.items()},
        "total_seconds": result.total,
        "time_to_exec_seconds": result.time_to_exec,
        "pulled": result.pulled,
        "backend_up": result.backend_up,
        "output": result.output,
        "failures": [
            {"phase": str(f.phase), "reason": str(f.reason), "message": f.message}
            for f in _failures(result)
        ],
    }


def as_json(result: ProbeResult) -> str:
    return json.dumps(as_dict(result), indent=2)


def as_table(result: ProbeResult) -> str:
    lines = [f"target {result.target} ({result.backend}), sandbox {result.sandbox}", ""]
    failed = {f.phase: f for f in _failures(result)}
    for phase in (Phase.PULL, *LIFECYCLE):
        if phase in result.durations:
            lines.append(f"  {phase:<8}{result.durations[phase] * 1000:>10.1f} ms  ok")
        elif phase in failed:
            f = failed[phase]
            lines.append(f"  {phase:<8}{'':>13}  {f.reason}: {f.message}")
    lines.append("")
    if result.success:
        assert result.total is not None
        assert result.time_to_exec is not None
        lines.append(
            f"success: total {result.total * 1000:.1f} ms, "
            f"time to exec {result.time_to_exec * 1000:.1f} ms"
        )
    else:
        lines.append("cancelled" if result.cancelled else "failure")
    return "\n".join(lines) + "\n"
