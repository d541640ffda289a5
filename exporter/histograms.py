"""Histogram families whose bucket boundaries may differ per target.

prometheus_client's Histogram fixes one set of buckets per metric name; a
target probed over a slow WAN wants other boundaries than a local one, so the
four duration histograms are kept here and exposed through a custom collector.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class _Series:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = [*bounds, math.inf]
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == math.inf else repr(bound), float(running)))
        return out


class HistogramFamily:
    """One histogram metric; each label set carries its own buckets."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], _Series] = {}
        self._lock = threading.Lock()

    def add(self, labels: Sequence[str], buckets: Sequence[float]) -> None:
        """Create the series (all zero) if absent, so it is exposed from start-up."""
        key = tuple(labels)
        with self._lock:
            if key not in self._series:
                self._series[key] = _Series(buckets)

    def observe(self, labels: Sequence[str], value: float) -> None:
        with self._lock:
            self._series[tuple(labels)].observe(value)

    def remove_where(self, label: str, value: str) -> None:
        index = self.labelnames.index(label)
        with self._lock:
            for key in [k for k in self._series if k[index] == value]:
                del self._series[key]

    def metric(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(k, s.cumulative(), s.total) for k, s in self._series.items()]
        for key, buckets, total in snapshot:
            family.add_metric(list(key), buckets, total)
        return family


class HistogramCollector(Collector):
    """Exposes a fixed set of HistogramFamily objects on a registry."""

    def __init__(self, families: Iterable[HistogramFamily]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return [family.metric() for family in self.families]

    def describe(self) -> Iterable[Metric]:
        return [
            HistogramMetricFamily(f.name, f.documentation, labels=f.labelnames)
            for f in self.families
        ]
