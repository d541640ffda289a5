"""One run's figures as a dict (JSON) and a table, as `/probe?debug=true` and
`sandbox-exporter probe` give them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sandbox_exporter.results import LIFECYCLE, Phase, ProbeResult, failures


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
            for f in failures(result)
        ],
    }


def as_json(result: ProbeResult) -> str:
    return json.dumps(as_dict(result), indent=2)


def as_table(result: ProbeResult) -> str:
    lines = [f"target {result.target} ({result.backend}), sandbox {result.sandbox}", ""]
    failed = {f.phase: f for f in failures(result)}
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
