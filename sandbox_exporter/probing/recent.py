"""One target's recent runs, kept in memory for the landing page: a bounded ring of its
last results, when it last succeeded, the nearest-rank p50/p95 of each phase, the
time to exec of each run in order (the page's sparkline), and its last burst.

The figures follow the histograms' rules (metrics/families.py), so the page and
/metrics tell the same story: a phase counts in every run in which it succeeded,
even one that failed later; time to exec and total count only successful runs;
a run cancelled by shutdown counts none of its phases.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sandbox_exporter.probing.percentiles import nearest_rank
from sandbox_exporter.results import LIFECYCLE, BurstResult, ProbeResult

RECENT_RUNS = 100
# what the page shows a spread of, in order: each phase, then the two derived figures
FIGURES: tuple[str, ...] = (*(str(p) for p in LIFECYCLE), "time to exec", "total")


@dataclass(frozen=True)
class Spread:
    """The nearest-rank p50 and p95 (seconds) of `n` durations."""

    n: int
    p50: float
    p95: float


@dataclass(frozen=True)
class Summary:
    runs: int  # in the ring
    successes: int  # in the ring
    last: ProbeResult | None
    last_failure: ProbeResult | None  # the latest run in the ring that did not succeed
    last_success_at: float | None  # wall clock; kept even once that run has left the ring
    spreads: dict[str, Spread]  # by FIGURES name; absent when no run gave that figure
    # each counted run's time to exec, oldest first; None: that run failed
    trend: tuple[float | None, ...] = ()
    last_burst: BurstResult | None = None


class RecentRuns:
    """The last `size` recorded results of one target. Thread-safe: the scheduler's
    threads add, the web's read."""

    def __init__(self, size: int = RECENT_RUNS) -> None:
        self.size = size
        self._results: deque[ProbeResult] = deque(maxlen=size)
        self._last_success_at: float | None = None
        self._last_burst: BurstResult | None = None
        self._lock = threading.Lock()

    def add(self, result: ProbeResult) -> None:
        with self._lock:
            self._results.append(result)
            if result.success:
                self._last_success_at = result.finished_at

    def add_burst(self, burst: BurstResult) -> None:
        """The target's last burst (only the last is kept)."""
        with self._lock:
            self._last_burst = burst

    def summary(self) -> Summary:
        with self._lock:
            results = list(self._results)
            last_success_at = self._last_success_at
            last_burst = self._last_burst
        failed = [r for r in results if not r.success]
        return Summary(
            runs=len(results),
            successes=len(results) - len(failed),
            last=results[-1] if results else None,
            last_failure=failed[-1] if failed else None,
            last_success_at=last_success_at,
            spreads=spreads(results),
            trend=tuple(r.time_to_exec for r in counted(results)),
            last_burst=last_burst,
        )


def counted(results: Sequence[ProbeResult]) -> list[ProbeResult]:
    """The runs the figures count: all but those cancelled by shutdown before failing."""
    return [r for r in results if not (r.cancelled and r.failure is None)]


def spreads(results: Sequence[ProbeResult]) -> dict[str, Spread]:
    counted_runs = counted(results)
    samples: dict[str, list[float]] = {
        str(phase): [r.durations[phase] for r in counted_runs if phase in r.durations]
        for phase in LIFECYCLE
    }
    samples["time to exec"] = _values(counted_runs, lambda r: r.time_to_exec)
    samples["total"] = _values(counted_runs, lambda r: r.total)
    return {
        name: Spread(len(values), nearest_rank(values, 50), nearest_rank(values, 95))
        for name, values in samples.items()
        if values
    }


def _values(
    results: Sequence[ProbeResult], figure: Callable[[ProbeResult], float | None]
) -> list[float]:
    return [value for r in results if (value := figure(r)) is not None]
