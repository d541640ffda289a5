"""The landing page: each target, its last result, why it failed and when."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sandbox_exporter import __version__

if TYPE_CHECKING:
    from sandbox_exporter.probing.prober import Prober


def landing_page(probers: Sequence[Prober]) -> str:
    rows = []
    for prober in probers:
        target = prober.target
        result = prober.last_result
        if result is None:
            outcome, reason, when, figure = "not run yet", "", "", ""
        else:
            outcome = "success" if result.success else "failure"
            failures = [result.failure] if result.failure else result.cleanup_failures
            reason = "; ".join(f"{f.phase} {f.reason}: {f.message}" for f in failures)
            when = datetime.fromtimestamp(result.finished_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            tte = result.time_to_exec
            figure = f"{tte * 1000:.1f} ms" if tte is not None else ""
        cells = (
            target.name,
            target.backend,
            f"{target.interval:g}s",
            outcome,
            figure,
            when,
            reason,
        )
        rows.append(
            f'<tr class="{html.escape(outcome.split()[0])}">'
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sandbox-exporter</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 10px;text-align:left}}
.failure{{color:#b00}} .success{{color:#070}}</style></head>
<body><h1>sandbox-exporter {html.escape(__version__)}</h1>
<p><a href="/metrics">Metrics</a> &middot; <a href="/-/healthy">Health</a>
 &middot; <a href="/-/ready">Readiness</a></p>
<table><tr><th>Target</th><th>Backend</th><th>Interval</th><th>Last result</th>
<th>Time to exec</th><th>Finished</th><th>Failure</th></tr>
{"".join(rows)}
</table></body></html>
"""
