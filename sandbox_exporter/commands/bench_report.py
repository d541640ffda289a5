"""Rendering a BenchReport: the p50/p95 table, or JSON with every sample."""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sandbox_exporter import __version__
from sandbox_exporter.commands.bench import BackendRun, BenchReport
from sandbox_exporter.probing.lifecycle import LIFECYCLE, ProbeResult

COLUMNS = [*(str(p) for p in LIFECYCLE), "total"]


def machine() -> dict[str, Any]:
    return {
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "exporter": __version__,
    }


def _failure_summary(failures: list[ProbeResult]) -> str:
    kinds = Counter(
        f"{r.failure.phase} {r.failure.reason}" if r.failure else "cleanup" for r in failures
    )
    return ", ".join(f"{kind} x{count}" for kind, count in kinds.most_common())


def _row(label: str, runs: str, values: dict[str, float]) -> str:
    cells = "".join(f"{values[c] * 1000:>9.1f}" for c in COLUMNS)
    return f"{label:<24}{runs:>7}{cells}"


def render_table(report: BenchReport) -> str:
    images = sorted({r.target.image for r in report.runs if r.target.uses_image})
    m = machine()
    warm = f" (+{report.warmup} warm-up)" if report.warmup else ""
    lines = [
        f"sandbox-exporter bench: {len(report.runs)} backend(s) x {report.iterations} "
        f"iteration(s){warm}, image {', '.join(images) or '(none)'}",
        f"machine: {m['system']} {m['machine']}, {m['cpus']} CPUs, Python {m['python']}",
        "",
        f"{'Backend':<24}{'Runs':>7}"
        + "".join(f"{c.capitalize():>9}" for c in COLUMNS)
        + "   (ms)",
    ]
    notes: list[str] = []
    for run in report.runs:
        name = run.target.name
        if run.skipped is not None:
            lines.append(f"{name:<24}  skipped: {run.skipped}")
            continue
        ok = len(run.successes)
        runs = f"{ok}/{len(run.results)}"
        if not ok:
            lines.append(f"{name:<24}{runs:>7}  no successful iteration")
        elif len(run.results) == 1:
            lines.append(_row(name, runs, run.percentile(50)))
        else:
            lines.append(_row(f"{name} p50", runs, run.percentile(50)))
            lines.append(_row(f"{name} p95", "", run.percentile(95)))
        if run.failures:
            notes.append(f"{name}: {len(run.failures)} failed: {_failure_summary(run.failures)}")
            first = run.failures[0].failure or run.failures[0].cleanup_failures[0]
            notes.append(f"  first failure: {first.message}")
        if run.warmup_failures:
            notes.append(f"{name}: {run.warmup_failures} warm-up iteration(s) failed")
    total = sum(len(r.results) for r in report.runs)
    failed = sum(len(r.failures) for r in report.runs)
    took = report.finished_at - report.started_at
    lines += ["", *notes] if notes else []
    end = "interrupted: " if report.interrupted else ""
    lines.append(
        f"{end}{total} lifecycle(s) in {took:.1f} s, {failed} failed"
        " (p50/p95: nearest-rank over successful iterations)"
    )
    return "\n".join(lines) + "\n"


def _sample(index: int, result: ProbeResult) -> dict[str, Any]:
    failure = result.failure or (result.cleanup_failures[0] if result.cleanup_failures else None)
    return {
        "iteration": index,
        "success": result.success,
        "durations_seconds": {str(p): d for p, d in result.durations.items()},
        "total_seconds": result.total,
        "time_to_exec_seconds": result.time_to_exec,
        "pulled": result.pulled,
        "failure": None
        if failure is None
        else {
            "phase": str(failure.phase),
            "reason": str(failure.reason),
            "message": failure.message,
        },
    }


def _backend_json(run: BackendRun) -> dict[str, Any]:
    return {
        "target": run.target.name,
        "backend": run.target.backend,
        "image": run.target.image,
        "skipped": run.skipped,
        "iterations": len(run.results),
        "failures": len(run.failures),
        "warmup_failures": run.warmup_failures,
        "p50_seconds": run.percentile(50),
        "p95_seconds": run.percentile(95),
        "samples": [_sample(i, r) for i, r in enumerate(run.results)],
    }


def render_json(report: BenchReport) -> str:
    return json.dumps(
        {
            "machine": machine(),
            "started_at": datetime.fromtimestamp(report.started_at, UTC).isoformat(),
            "iterations": report.iterations,
            "warmup": report.warmup,
            "interrupted": report.interrupted,
            "percentiles": "nearest-rank over successful iterations",
            "backends": [_backend_json(run) for run in report.runs],
        },
        indent=2,
    )
