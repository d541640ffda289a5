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
from sandbox_exporter.results import LIFECYCLE, ProbeResult

COLUMNS = [*(str(p) for p in LIFECYCLE), "total"]


def cpu_model() -> str | None:
    """The CPU's model name as the kernel reports it (Linux), else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """Where a run ran: `bench compare` lists any difference between two runs'."""
    return {
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
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


def header(report: BenchReport, what: str) -> list[str]:
    """The first lines: what was run (`what`: "10 iteration(s)"), the image, the machine."""
    images = sorted({r.target.image for r in report.runs if r.target.uses_image})
    m = machine()
    warm = f" (+{report.warmup} warm-up)" if report.warmup else ""
    return [
        f"sandbox-exporter bench: {len(report.runs)} backend(s) x {what}{warm}, "
        f"image {', '.join(images) or '(none)'}",
        f"machine: {m['system']} {m['machine']}, {m['cpus']} CPUs, Python {m['python']}",
        "",
    ]


def phase_header(label: str = "Backend") -> str:
    return f"{label:<24}{'Runs':>7}" + "".join(f"{c.capitalize():>9}" for c in COLUMNS) + "   (ms)"


def phase_rows(run: BackendRun) -> list[str]:
    """A backend's p50 and p95 rows (one row for one run), or why there are none."""
    name = run.target.name
    if run.skipped is not None:
        return [f"{name:<24}  skipped: {run.skipped}"]
    ok = len(run.successes)
    runs = f"{ok}/{len(run.results)}"
    if not ok:
        return [f"{name:<24}{runs:>7}  no successful iteration"]
    if len(run.results) == 1:
        return [_row(name, runs, run.percentile(50))]
    return [
        _row(f"{name} p50", runs, run.percentile(50)),
        _row(f"{name} p95", "", run.percentile(95)),
    ]


def notes(run: BackendRun, unit: str = "iteration") -> list[str]:
    """The failures by phase and reason, the first one's message, failed warm-ups."""
    name = run.target.name
    out: list[str] = []
    if run.failures:
        out.append(f"{name}: {len(run.failures)} failed: {_failure_summary(run.failures)}")
        first = run.failures[0].failure or run.failures[0].cleanup_failures[0]
        out.append(f"  first failure: {first.message}")
    if run.warmup_failures:
        out.append(f"{name}: {run.warmup_failures} warm-up {unit}(s) failed")
    return out


def render_table(report: BenchReport) -> str:
    lines = [*header(report, f"{report.iterations} iteration(s)"), phase_header()]
    for run in report.runs:
        lines += phase_rows(run)
    found = [line for run in report.runs for line in notes(run)]
    total = sum(len(r.results) for r in report.runs)
    failed = sum(len(r.failures) for r in report.runs)
    took = report.finished_at - report.started_at
    lines += ["", *found] if found else []
    end = "interrupted: " if report.interrupted else ""
    lines.append(
        f"{end}{total} lifecycle(s) in {took:.1f} s, {failed} failed"
        " (p50/p95: nearest-rank over successful iterations)"
    )
    return "\n".join(lines) + "\n"


def failure_json(result: ProbeResult) -> dict[str, str] | None:
    failure = result.failure or (result.cleanup_failures[0] if result.cleanup_failures else None)
    if failure is None:
        return None
    return {"phase": str(failure.phase), "reason": str(failure.reason), "message": failure.message}


def sample(index: int, result: ProbeResult) -> dict[str, Any]:
    return {
        "iteration": index,
        "success": result.success,
        "durations_seconds": {str(p): d for p, d in result.durations.items()},
        "total_seconds": result.total,
        "time_to_exec_seconds": result.time_to_exec,
        "pulled": result.pulled,
        "failure": failure_json(result),
    }


def backend_json(run: BackendRun) -> dict[str, Any]:
    return {
        "target": run.target.name,
        "backend": run.target.backend,
        "image": run.target.image if run.target.uses_image else None,
        "runtime": run.target.options.runtime_name(),
        "engine": run.engine,
        "skipped": run.skipped,
        "iterations": len(run.results),
        "failures": len(run.failures),
        "warmup_failures": run.warmup_failures,
        "p50_seconds": run.percentile(50),
        "p95_seconds": run.percentile(95),
        "samples": [sample(i, r) for i, r in enumerate(run.results)],
    }


def report_json(report: BenchReport) -> dict[str, Any]:
    """Everything but the backends'."""
    return {
        "machine": machine(),
        "started_at": datetime.fromtimestamp(report.started_at, UTC).isoformat(),
        "iterations": report.iterations,
        "warmup": report.warmup,
        "interrupted": report.interrupted,
        "config_digest": report.config_digest,
        "percentiles": "nearest-rank over successful iterations",
    }


def full_json(report: BenchReport) -> dict[str, Any]:
    return {**report_json(report), "backends": [backend_json(run) for run in report.runs]}


def render_json(report: BenchReport) -> str:
    return json.dumps(full_json(report), indent=2)
