"""Shared by the benchmark scripts: the machine line, percentiles, a table printer."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence

from sandbox_exporter.config import Target
from sandbox_exporter.probing.lifecycle import LifecycleRunner
from sandbox_exporter.probing.prober import calls_for


def machine_line() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                platform.processor() or "unknown CPU",
            )
    except OSError:
        model = platform.processor() or "unknown CPU"
    return (
        f"machine: {platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def interleaved(
    target: Target, minimal: Callable[[], dict[str, float]], n: int
) -> tuple[list[dict[str, float]], list[dict[str, float]]] | None:
    """Per-phase durations of `n` lifecycles each side, ABAB, after one warm-up each:
    the exporter's own runner on `target` against `minimal()`. None, said on stderr,
    when an exporter run failed: that stops the measurement."""
    calls = calls_for(target)
    run = LifecycleRunner(calls, target, "overhead-bench").run
    try:
        run()
        minimal()
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        for _ in range(n):
            result = run()
            if not result.success:
                print(f"exporter run failed: {result.failure}", file=sys.stderr)
                return None
            ours.append({str(p): d for p, d in result.durations.items()})
            theirs.append(minimal())
        return ours, theirs
    finally:
        calls.close()


def overhead_table(ours: list[dict[str, float]], theirs: list[dict[str, float]]) -> bool:
    """Print each phase's medians and their difference against the target (2% or 1 ms,
    whichever is larger); True when every phase meets it."""
    print(
        f"{'phase':<8}{'exporter ms':>13}{'minimal ms':>12}{'diff ms':>10}{'diff %':>9}"
        "  target (2% or 1 ms)"
    )
    met = True
    for phase in ("create", "start", "exec", "stop", "remove"):
        e = median([r[phase] for r in ours]) * 1000
        m = median([r[phase] for r in theirs]) * 1000
        allowed = max(0.02 * m, 1.0)
        ok = abs(e - m) <= allowed
        met &= ok
        print(
            f"{phase:<8}{e:>13.2f}{m:>12.2f}{e - m:>10.2f}{(e - m) / m * 100:>8.1f}%  "
            f"{'met' if ok else 'MISSED'} (allowed {allowed:.1f} ms)"
        )
    print("target met for every phase" if met else "target MISSED for at least one phase")
    return met
