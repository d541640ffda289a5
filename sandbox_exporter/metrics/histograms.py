"""Histogram families whose bucket boundaries may differ per target, with exemplars.

prometheus_client's Histogram fixes one set of buckets per metric name; a
target probed over a slow WAN wants other boundaries than a local one, so the
duration histograms are kept here and given to the registry as a collector. Each
bucket keeps the exemplar of its latest observation (`{run_id="..."}`), which
the OpenMetrics exposition shows: from a slow bucket to the run that made it.

They also write their own lines for /metrics, each series' text kept until it
next changes: with 60 buckets a series is 63 samples, and prometheus_client's
rendering of 50 targets took a third of a second and more (BENCHMARKS.md, 2),
once a second in the process whose probes it times.
The lines are prometheus_client's to the byte (`tests/test_metrics.py` compares
them); families.py splices them into the library's exposition of the registry.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString as _go_float

FORMATS = ("text", "openmetrics")


def _number(value: float) -> str:
    """A sample value as prometheus_client writes it (Go's float formatting)."""
    text: str = _go_float(value)  # type: ignore[no-untyped-call]
    return text


def _bound(value: float) -> str:
    return "+Inf" if value == math.inf else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    """`{a="x",b="y"}`, sorted by name and escaped, as prometheus_client writes them."""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs)) + "}"


def _exemplar(exemplar: Exemplar | None) -> str:
    if exemplar is None:
        return ""
    stamp = "" if exemplar.timestamp is None else f" {exemplar.timestamp}"
    return f" # {_labels(exemplar.labels.items())} {_number(exemplar.value)}{stamp}"


class _Series:
    __slots__ = ("bounds", "counts", "exemplars", "labels", "text", "total")

    def __init__(self, bounds: Sequence[float], labels: tuple[tuple[str, str], ...]) -> None:
        self.bounds = [*bounds, math.inf]
        self.counts = [0] * len(self.bounds)
        self.exemplars: list[Exemplar | None] = [None] * len(self.bounds)
        self.total = 0.0
        self.labels = labels
        self.text: dict[str, str] = {}  # by format, until the next observation

    def observe(self, value: float, exemplar: Exemplar | None) -> None:
        index = bisect.bisect_left(self.bounds, value)
        self.counts[index] += 1
        self.total += value
        if exemplar is not None:
            self.exemplars[index] = exemplar
        self.text.clear()

    def render(self, name: str, fmt: str) -> str:
        text = self.text.get(fmt)
        if text is None:
            lines = []
            running = 0
            for bound, count, exemplar in zip(
                self.bounds, self.counts, self.exemplars, strict=True
            ):
                running += count
                labels = _labels((*self.labels, ("le", _bound(bound))))
                mark = _exemplar(exemplar) if fmt == "openmetrics" else ""
                lines.append(f"{name}_bucket{labels} {_number(running)}{mark}\n")
            labels = _labels(self.labels)
            lines.append(f"{name}_count{labels} {_number(running)}\n")
            lines.append(f"{name}_sum{labels} {_number(self.total)}\n")
            text = self.text[fmt] = "".join(lines)
        return text

    def buckets(self) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
        out: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
        running = 0
        for bound, count, exemplar in zip(self.bounds, self.counts, self.exemplars, strict=True):
            running += count
            if exemplar is None:
                out.append((_bound(bound), float(running)))
            else:
                out.append((_bound(bound), float(running), exemplar))
        return out


class HistogramFamily(Collector):
    """One histogram metric; each label set carries its own buckets."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], _Series] = {}
        self._lock = threading.Lock()
        self._rendering = threading.local()

    def add(self, labels: Sequence[str], buckets: Sequence[float]) -> None:
        """Create the series (all zero) if absent, so it is exposed from start-up."""
        key = tuple(labels)
        with self._lock:
            if key not in self._series:
                self._series[key] = _Series(buckets, tuple(zip(self.labelnames, key, strict=True)))

    def observe(
        self,
        labels: Sequence[str],
        value: float,
        exemplar: Mapping[str, str] | None = None,
        when: float | None = None,
    ) -> None:
        """Count `value`; `exemplar` labels (and the wall time `when`) go with it."""
        mark = None
        if exemplar:
            mark = Exemplar(dict(exemplar), value, time.time() if when is None else when)
        with self._lock:
            self._series[tuple(labels)].observe(value, mark)

    def remove_where(self, label: str, value: str) -> None:
        index = self.labelnames.index(label)
        with self._lock:
            for key in [k for k in self._series if k[index] == value]:
                del self._series[key]

    @contextmanager
    def placeholder(self) -> Iterator[None]:
        """While inside, on this thread, `collect` yields the family without samples:
        /metrics takes this family's lines from `render` (see families.py)."""
        self._rendering.on = True
        try:
            yield
        finally:
            self._rendering.on = False

    def render(self, fmt: str) -> str:
        """This family's sample lines in `fmt`, as prometheus_client writes them."""
        with self._lock:
            return "".join(series.render(self.name, fmt) for series in self._series.values())

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if getattr(self._rendering, "on", False):
            return [family]
        with self._lock:
            snapshot = [
                (key, series.buckets(), series.total) for key, series in self._series.items()
            ]
        for key, buckets, total in snapshot:
            family.add_metric(list(key), buckets, total)
        return [family]

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]
