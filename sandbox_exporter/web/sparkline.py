"""A sparkline of a target's recent runs, as inline SVG built on the server: no
external asset and no script, so it shows wherever the page does.

The line joins the time to exec of each successful run, scaled to the target's own
range (its fastest at the bottom, its slowest at the top; all equal: a flat line
across the middle); each failed run is a red mark on the baseline at its place.
Runs are evenly spaced, the oldest at the left and the newest at the right. Its
`<title>` (a tooltip) and `aria-label` say the range in words.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from sandbox_exporter.web.humanize import duration

WIDTH = 120
HEIGHT = 24
PAD = 2.0  # room for a mark's radius at the edges
MARK_RADIUS = 1.8
BAD = "#b3261e"  # the page's --bad; its style sheet overrides it in a dark scheme


def sparkline(values: Sequence[float | None]) -> str:
    """The `<svg>` of `values`, oldest first, each a run's time to exec in seconds or
    None for a failed run; "" with fewer than two runs (nothing to draw a trend of)."""
    n = len(values)
    if n < 2:
        return ""
    succeeded = [v for v in values if v is not None]
    failed = n - len(succeeded)
    step = (WIDTH - 2 * PAD) / (n - 1)
    lo, hi = (min(succeeded), max(succeeded)) if succeeded else (0.0, 0.0)

    def y(value: float) -> float:
        if hi == lo:
            return HEIGHT / 2
        return PAD + (hi - value) / (hi - lo) * (HEIGHT - 2 * PAD)

    points = [(PAD + i * step, y(v)) for i, v in enumerate(values) if v is not None]
    marks = [PAD + i * step for i, v in enumerate(values) if v is None]
    label = _label(n, failed, lo, hi)
    shapes: list[str] = []
    if len(points) >= 2:
        shapes.append(
            f'<polyline class="trend" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}" '
            'fill="none" stroke="currentColor" stroke-width="1.2" stroke-linejoin="round"/>'
        )
    elif points:
        x, y0 = points[0]
        shapes.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y0:.1f}" r="{MARK_RADIUS}" '
            'fill="currentColor"/>'
        )
    shapes += [
        f'<circle class="failed" cx="{x:.1f}" cy="{HEIGHT - PAD:.1f}" r="{MARK_RADIUS}" '
        f'fill="{BAD}"/>'
        for x in marks
    ]
    return (
        f'<svg class="spark" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{html.escape(label)}" data-runs="{n}" data-failed="{failed}">'
        f"<title>{html.escape(label)}</title>{''.join(shapes)}</svg>"
    )


def _label(n: int, failed: int, lo: float, hi: float) -> str:
    head = f"time to exec over the last {n} runs, oldest first"
    if failed == n:
        return f"{head}: all {n} failed"
    span = duration(lo) if lo == hi else f"{duration(lo)} to {duration(hi)}"
    return f"{head}: {span}" + (f"; {failed} failed (red)" if failed else "")
