"""Histogram families whose bucket boundaries may differ per target.

prometheus_client's Histogram fixes one set of buckets per metric name; a
target probed over a slow WAN wants other boundaries than a local one, so the
four duration histograms are kept here. They are exposed two ways: as a
Collector on the registry (what `get_sample_value` and any other consumer
reads), and rendered straight to the text format for `/metrics`, each series'
text cached until it next changes: histograms are most of the output, and
building and formatting a Sample object per bucket made a scrape of 50
targets take ~80 ms.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence

from prometheus_client.core import HistogramMetricFamily, Metric


def _number(value: float) -> str:
    return "+Inf" if value == math.inf else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_text(names: Sequence[str], values: Sequence[str]) -> str:
    """`a="x",b="y"` with the text format's escaping."""
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


class _Series:
    __slots__ = ("bounds", "counts", "labels", "text", "total")

    def __init__(self, bounds: Sequence[float], labels: str) -> None:
        self.bounds = [*bounds, math.inf]
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.labels = labels
        self.text: str | None = None

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.text = None

    def render(self, name: str) -> str:
        if self.text is None:
            lines = []
            running = 0
            sep = "," if self.labels else ""
            for bound, count in zip(self.bounds, self.counts, strict=True):
                running += count
                lines.append(
                    f'{name}_bucket{{{self.labels}{sep}le="{_number(bound)}"}} {running}.0\n'
                )
            lines.append(f"{name}_count{{{self.labels}}} {running}.0\n")
            lines.append(f"{name}_sum{{{self.labels}}} {_number(self.total)}\n")
            self.text = "".join(lines)
        return self.text

    def cumulative(self) -> list[tuple[str, float]]:
        out = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            out.append((_number(bound), float(running)))
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
                self._series[key] = _Series(buckets, label_text(self.labelnames, key))

    def observe(self, labels: Sequence[str], value: float) -> None:
        with self._lock:
            self._series[tuple(labels)].observe(value)

    def remove_where(self, label: str, value: str) -> None:
        index = self.labelnames.index(label)
        with self._lock:
            for key in [k for k in self._series if k[index] == value]:
                del self._series[key]

    def render(self) -> str:
        """This family in the Prometheus text format (0.0.4)."""
        with self._lock:
            body = "".join(series.render(self.name) for series in self._series.values())
        return f"# HELP {self.name} {self.documentation}\n# TYPE {self.name} histogram\n{body}"

    def metric(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(k, s.cumulative(), s.total) for k, s in self._series.items()]
        for key, buckets, total in snapshot:
            family.add_metric(list(key), buckets, total)
        return family
