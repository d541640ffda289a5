"""A Comparison as a terminal table, as Markdown (for a pull request) or as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from sandbox_exporter.commands.bench_compare import BackendComparison, Comparison
from sandbox_exporter.commands.bench_stats import Change, FailureChange

FORMATS = ("table", "markdown", "json")
HEAD = ("series", "old p50", "new p50", "old p95", "new p95", "median change [95% interval]")


def _pct(value: float) -> str:
    return f"{value * 100:+.1f}%"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _cells(name: str, change: Change) -> list[str]:
    return [
        name,
        _ms(change.old_median),
        _ms(change.new_median),
        _ms(change.old_p95),
        _ms(change.new_p95),
        f"{_pct(change.change)} [{_pct(change.low)}, {_pct(change.high)}]",
        change.verdict,
    ]


def failure_line(failures: FailureChange | None) -> str:
    if failures is None:
        return "failures: no runs on one side"
    rates = (
        f"{failures.old_failed}/{failures.old_runs} -> {failures.new_failed}/{failures.new_runs}"
    )
    said = "rose" if failures.rose else "no significant rise"
    return f"failures: {rates} (Fisher's exact test, one-sided p = {failures.p_value:.3g}): {said}"


def _title(backend: BackendComparison) -> str:
    if backend.old_target == backend.new_target:
        return backend.old_target
    return f"{backend.old_target} -> {backend.new_target}"


def summary(comparison: Comparison) -> str:
    found = [
        f"{_title(b)} {', '.join(b.slower)} slower" for b in comparison.backends if b.slower
    ] + [
        f"{_title(b)} fails more often"
        for b in comparison.backends
        if b.failures is not None and b.failures.rose
    ]
    if found:
        return "REGRESSED: " + "; ".join(found)
    return "no regression: nothing slower by more than the threshold, no rise in failures"


def render_table(comparison: Comparison, old: str, new: str) -> str:
    lines = [
        f"bench compare: {old} (old) -> {new} (new), slower only beyond "
        f"{_pct(comparison.threshold)} (Hodges-Lehmann change of the median, 95% interval)",
        "",
    ]
    widths = (14, 11, 11, 11, 11, 32, 7)
    for backend in comparison.backends:
        lines.append(_title(backend))
        rows = [[*HEAD, "verdict"]] + [
            _cells(name, change) for name, change in backend.changes.items()
        ]
        for row in rows:
            lines.append(
                "  "
                + "".join(
                    cell.ljust(w) if i in (0, 5, 6) else cell.rjust(w) + " "
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                ).rstrip()
            )
        if backend.missing:
            lines.append(f"  no successful run on one side for: {', '.join(backend.missing)}")
        lines.append("  " + failure_line(backend.failures))
        lines.append("")
    if comparison.unmatched:
        lines.append(f"in one report only (not compared): {', '.join(comparison.unmatched)}")
    if comparison.differences:
        lines.append(
            "the runs differ in these besides their timings "
            "(anything but the thing under test is a warning):"
        )
        lines += [f"  {d}" for d in comparison.differences]
    lines.append(summary(comparison))
    return "\n".join(lines) + "\n"


def render_markdown(comparison: Comparison, old: str, new: str) -> str:
    lines = [
        f"**bench compare**: `{old}` (old) → `{new}` (new); slower only beyond "
        f"{_pct(comparison.threshold)} (Hodges-Lehmann change of the median, 95% interval)",
        "",
    ]
    for backend in comparison.backends:
        lines += [f"#### {_title(backend)}", ""]
        lines.append("| " + " | ".join([*HEAD, "verdict"]) + " |")
        lines.append("|" + "---|" * (len(HEAD) + 1))
        for name, change in backend.changes.items():
            cells = _cells(name, change)
            if change.verdict != "same":
                cells[-1] = f"**{cells[-1]}**"
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", failure_line(backend.failures), ""]
    if comparison.differences:
        lines.append(
            "⚠️ The runs differ in these besides their timings "
            "(anything but the thing under test is a warning):"
        )
        lines += [f"- {d}" for d in comparison.differences]
        lines.append("")
    lines.append(f"**{summary(comparison)}**")
    return "\n".join(lines) + "\n"


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "threshold": comparison.threshold,
        "regressed": comparison.regressed,
        "method": "Hodges-Lehmann change of the median with its Moses (Mann-Whitney) 95% "
        "interval; failures: Fisher's exact test, one-sided",
        "differences": comparison.differences,
        "unmatched": comparison.unmatched,
        "backends": [
            {
                "old_target": b.old_target,
                "new_target": b.new_target,
                "regressed": b.regressed,
                "series": {
                    name: {**asdict(change), "p95_change": change.p95_change}
                    for name, change in b.changes.items()
                },
                "missing": b.missing,
                "failures": None
                if b.failures is None
                else {**asdict(b.failures), "rose": b.failures.rose},
            }
            for b in comparison.backends
        ],
    }


def render(comparison: Comparison, fmt: str, old: str, new: str) -> str:
    if fmt == "json":
        return json.dumps(comparison_json(comparison), indent=2) + "\n"
    if fmt == "markdown":
        return render_markdown(comparison, old, new)
    return render_table(comparison, old, new)
