"""The statistics of `bench --baseline` and `bench compare`: is B slower than A?

- **The median's change** is the Hodges-Lehmann estimate of the ratio new/old: the
  median of every pairwise log(new) - log(old), back as a relative change. Its 95 %
  interval is the Moses interval of the same differences, from the Mann-Whitney
  statistic's distribution. It assumes nothing about the shape of the durations
  (they are skewed and often bimodal) and works on ratios, which is how a slowdown
  is felt.
- **The verdict** is `slower` only when the whole interval lies above +threshold,
  `faster` only when it lies below -threshold, and `same` otherwise: a change the
  data cannot tell from noise, or one smaller than the threshold.
- **The failure rate** is compared with Fisher's exact test, one-sided (did it rise?).

scipy is in the `bench` extra (`pip install 'sandbox-exporter[bench]'`), so the daemon's
image does not carry it; without it these say so (MissingScipy).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sandbox_exporter.probing.percentiles import nearest_rank

Verdict = Literal["faster", "same", "slower"]
CONFIDENCE = 0.95
SIGNIFICANT = 0.05  # a failure rate "rose" below this one-sided p-value
SMALLEST = 1e-9  # seconds: a log needs a positive duration


class MissingScipy(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            "comparing runs needs scipy, which is in the bench extra: "
            "pip install 'sandbox-exporter[bench]'"
        )


def scipy_stats() -> Any:
    try:
        from scipy import stats  # the bench extra: imported only to compare
    except ImportError as exc:
        raise MissingScipy from exc
    return stats


@dataclass(frozen=True)
class Change:
    """One series (a phase, time to exec, or the total) of one backend, old against new."""

    old_runs: int
    new_runs: int
    old_median: float
    new_median: float
    old_p95: float
    new_p95: float
    change: float  # the median's relative change, Hodges-Lehmann (+0.10: 10 % slower)
    low: float  # its 95 % interval
    high: float
    verdict: Verdict

    @property
    def p95_change(self) -> float:
        return self.new_p95 / self.old_p95 - 1


def median_change(
    old: Sequence[float], new: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(estimate, low, high) of the relative change of the median from `old` to `new`."""
    if not old or not new:
        raise ValueError("both sides need at least one sample")
    logs_old = [math.log(max(v, SMALLEST)) for v in old]
    logs_new = [math.log(max(v, SMALLEST)) for v in new]
    differences = sorted(b - a for a in logs_old for b in logs_new)
    m, n = len(old), len(new)
    z = float(scipy_stats().norm.ppf(1 - (1 - confidence) / 2))
    # the Moses interval: drop the k smallest and k largest of the m * n differences
    k = math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))
    low = differences[k - 1] if k >= 1 else differences[0]
    high = differences[m * n - k] if k >= 1 else differences[-1]
    estimate = statistics.median(differences)
    return math.expm1(estimate), math.expm1(low), math.expm1(high)


def verdict(low: float, high: float, threshold: float) -> Verdict:
    if low > threshold:
        return "slower"
    if high < -threshold:
        return "faster"
    return "same"


def compare(old: Sequence[float], new: Sequence[float], threshold: float) -> Change:
    change, low, high = median_change(old, new)
    return Change(
        old_runs=len(old),
        new_runs=len(new),
        old_median=statistics.median(old),
        new_median=statistics.median(new),
        old_p95=nearest_rank(list(old), 95),
        new_p95=nearest_rank(list(new), 95),
        change=change,
        low=low,
        high=high,
        verdict=verdict(low, high, threshold),
    )


@dataclass(frozen=True)
class FailureChange:
    old_failed: int
    old_runs: int
    new_failed: int
    new_runs: int
    p_value: float  # one-sided: the chance of at least this many new failures if rates were equal

    @property
    def rose(self) -> bool:
        return self.p_value < SIGNIFICANT


def failure_change(old_failed: int, old_runs: int, new_failed: int, new_runs: int) -> FailureChange:
    """Fisher's exact test, one-sided: did the failure rate rise from old to new?"""
    table = [[new_failed, new_runs - new_failed], [old_failed, old_runs - old_failed]]
    result = scipy_stats().fisher_exact(table, alternative="greater")
    return FailureChange(old_failed, old_runs, new_failed, new_runs, float(result.pvalue))
