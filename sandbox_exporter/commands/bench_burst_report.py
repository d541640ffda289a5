"""Rendering a burst bench (`bench --concurrency N`): the burst, phase and launch-order
tables, or JSON with every burst's figures and every sandbox's durations."""

from __future__ import annotations

import json
from typing import Any

from sandbox_exporter.commands.bench import BenchReport
from sandbox_exporter.commands.bench_burst import BurstBackendRun
from sandbox_exporter.commands.bench_report import (
    backend_json,
    failure_json,
    header,
    notes,
    phase_header,
    phase_rows,
    report_json,
    sample,
)
from sandbox_exporter.config.durations import format_duration
from sandbox_exporter.config.settings import Burst
from sandbox_exporter.results import BurstResult

PERCENTILES = (
    "nearest-rank; first and all ready over the bursts, phases over the successful "
    "sandboxes of every burst"
)
LEGEND = (
    "First/All: from the launch to the first/last exec answered, p50/p95 over the bursts;\n"
    "Skew: how far the creates sent strayed from their plan (the exporter's distortion);\n"
    "phases: over the successful sandboxes of all bursts; Q1-Q4: launch quarters, the first\n"
    "and the last ceil(N/4) sandboxes each, the rest split between Q2 and Q3. Nearest-rank."
)
CELL = 11


def _runs(report: BenchReport) -> list[BurstBackendRun]:
    runs = [run for run in report.runs if isinstance(run, BurstBackendRun)]
    assert len(runs) == len(report.runs), "a burst report holds burst runs"
    return runs


def _burst(report: BenchReport) -> Burst:
    burst = report.runs[0].target.burst
    assert burst is not None
    return burst


def describe_burst(burst: Burst) -> str:
    """ "3 sandboxes launched together", "3 sandboxes staggered 200ms apart"."""
    how = (
        f"staggered {format_duration(burst.stagger)} apart"
        if burst.mode == "staggered"
        else "launched together"
    )
    return f"{burst.concurrency} sandboxes {how}"


def _ms(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value * 1000:>{width}.1f}"


def _burst_row(run: BurstBackendRun) -> str:
    name = run.target.name
    if run.skipped is not None:
        return f"{name:<24}  skipped: {run.skipped}"
    ok = f"{sum(b.success for b in run.bursts)}/{len(run.bursts)}"
    figures = (
        run.first_ready(50),
        run.first_ready(95),
        run.all_ready(50),
        run.all_ready(95),
        run.skew(50),
        run.skew(None),
    )
    return f"{name:<24}{ok:>7}" + "".join(_ms(v, CELL) for v in figures)


def render_burst_table(report: BenchReport) -> str:
    runs = _runs(report)
    burst = _burst(report)
    measured = [run for run in runs if run.skipped is None]
    what = f"{report.iterations} burst(s) of {describe_burst(burst)}"
    titles = ("First p50", "First p95", "All p50", "All p95", "Skew p50", "Skew max")
    lines = [
        *header(report, what),
        f"{'Bursts':<24}{'Ok':>7}" + "".join(f"{t:>{CELL}}" for t in titles) + "   (ms)",
        *(_burst_row(run) for run in runs),
    ]
    if measured:
        lines += ["", phase_header("Sandboxes, all bursts")]
        lines += [row for run in measured for row in phase_rows(run)]
        quarters = "".join(f"{f'Q{q}':>{CELL}}" for q in range(1, 5))
        lines += ["", f"{'Time to exec by launch':<31}{quarters}   (ms, median)"]
        lines += [
            f"{run.target.name:<31}" + "".join(_ms(v, CELL) for v in run.quarters())
            for run in measured
        ]
    found = [line for run in runs for line in notes(run, unit="burst")]
    lines += ["", *found] if found else []
    bursts = sum(len(run.bursts) for run in runs)
    sandboxes = sum(len(run.results) for run in runs)
    failed = sum(len(run.failures) for run in runs)
    took = report.finished_at - report.started_at
    end = "interrupted: " if report.interrupted else ""
    lines.append(
        f"{end}{bursts} burst(s), {sandboxes} sandbox(es) in {took:.1f} s, {failed} failed"
    )
    lines.append(LEGEND)
    return "\n".join(lines) + "\n"


def _sandbox_json(burst: BurstResult, index: int) -> dict[str, Any]:
    result = burst.results[index]
    out = sample(index, result)
    del out["iteration"]

    def after(at: float | None) -> float | None:
        return None if at is None or burst.launch is None else at - burst.launch

    return {
        "launch_index": index,
        "planned_offset_seconds": burst.offsets[index],
        "create_sent_after_seconds": after(result.launched_at),
        "ready_after_seconds": after(result.ready_at),
        **out,
    }


def burst_json(index: int, burst: BurstResult) -> dict[str, Any]:
    preflight = burst.preflight
    return {
        "burst": index,
        "burst_id": burst.burst_id,
        "success": burst.success,
        "launched": burst.launched,
        "check_failure": failure_json(preflight) if preflight is not None else None,
        "success_ratio": burst.success_ratio,
        "time_to_first_ready_seconds": burst.time_to_first_ready,
        "time_to_all_ready_seconds": burst.time_to_all_ready,
        "launch_skew_seconds": burst.launch_skew,
        "first_quarter_time_to_exec_seconds": burst.quarter_time_to_exec("first"),
        "last_quarter_time_to_exec_seconds": burst.quarter_time_to_exec("last"),
        "sandboxes": [_sandbox_json(burst, i) for i in range(len(burst.results))],
    }


def _backend(run: BurstBackendRun) -> dict[str, Any]:
    out = backend_json(run)
    del out["samples"]
    return {
        **out,
        "iterations": len(run.bursts),
        "sandboxes": len(run.results),
        "successful_bursts": sum(b.success for b in run.bursts),
        "time_to_first_ready_seconds": {"p50": run.first_ready(50), "p95": run.first_ready(95)},
        "time_to_all_ready_seconds": {"p50": run.all_ready(50), "p95": run.all_ready(95)},
        "time_to_exec_seconds": {"p50": run.time_to_exec(50), "p95": run.time_to_exec(95)},
        "launch_skew_seconds": {"p50": run.skew(50), "max": run.skew(None)},
        "launch_quarter_time_to_exec_seconds": run.quarters(),
        "bursts": [burst_json(i, b) for i, b in enumerate(run.bursts)],
    }


def render_burst_json(report: BenchReport) -> str:
    burst = _burst(report)
    settings = {
        "concurrency": burst.concurrency,
        "mode": burst.mode,
        "stagger_seconds": burst.stagger if burst.mode == "staggered" else 0.0,
    }
    return json.dumps(
        {
            **report_json(report),
            "percentiles": PERCENTILES,
            "burst": settings,
            "backends": [_backend(run) for run in _runs(report)],
        },
        indent=2,
    )
