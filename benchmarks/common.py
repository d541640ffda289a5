"""Shared by the benchmark scripts: the machine line, percentiles, a table printer."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence


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


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank, as `sandbox-exporter bench` reports."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
