"""Histogram families whose bucket boundaries may differ per target, with exemplars.

prometheus_client's Histogram fixes one set of buckets per metric name; a
target probed over a slow WAN wants other boundaries than a local one, so the
duration histograms are kept here and given to the registry as a collector. Each
bucket keeps the exemplar of its latest observation (`{run_id="..."}`), which
the OpenMetrics exposition shows: from a slow bucket to the run that made it.

Each series may also keep native buckets (native.py), which only the protobuf
exposition carries, in the same `Histogram` message as the classic ones
(protobuf.py): the text formats stay as they were.

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
from typing import TYPE_CHECKING

import structlog
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString as _go_float

from sandbox_exporter.metrics.native import (
    NativeBuckets,
    NativeLayout,
    spans_and_deltas,
    worst_case_error,
)

if TYPE_CHECKING:  # the protobuf runtime loads at the first protobuf scrape, not before
    from sandbox_exporter.metrics.proto import metrics_pb2 as pb

_log = structlog.get_logger("sandbox_exporter")

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
    __slots__ = ("bounds", "counts", "exemplars", "labels", "message", "native", "text", "total")

    def __init__(
        self,
        bounds: Sequence[float],
        labels: tuple[tuple[str, str], ...],
        native: NativeLayout | None,
    ) -> None:
        self.bounds = [*bounds, math.inf]
        self.counts = [0] * len(self.bounds)
        self.exemplars: list[Exemplar | None] = [None] * len(self.bounds)
        self.total = 0.0
        self.labels = labels
        self.native = NativeBuckets(native) if native is not None else None
        # the renderings, until the next observation: text by format, and protobuf
        self.text: dict[str, str] = {}
        self.message: pb.Metric | None = None

    def observe(self, value: float, exemplar: Exemplar | None) -> bool:
        """Count `value`; True when the native buckets had to take a coarser schema."""
        index = bisect.bisect_left(self.bounds, value)
        self.counts[index] += 1
        self.total += value
        if exemplar is not None:
            self.exemplars[index] = exemplar
        self.text.clear()
        self.message = None
        return self.native.observe(value) if self.native is not None else False

    def protobuf(self) -> pb.Metric:
        """This series as client_golang writes a histogram: the classic buckets (with
        their exemplars) and, when kept, the native ones, in one message."""
        if self.message is not None:
            return self.message
        from sandbox_exporter.metrics import protobuf
        from sandbox_exporter.metrics.proto import metrics_pb2 as pb

        histogram = pb.Histogram(sample_count=sum(self.counts), sample_sum=self.total)
        running = 0
        for bound, count, exemplar in zip(self.bounds, self.counts, self.exemplars, strict=True):
            running += count
            bucket = histogram.bucket.add(cumulative_count=running, upper_bound=bound)
            if exemplar is not None:
                bucket.exemplar.CopyFrom(protobuf.exemplar(exemplar))
        if (native := self.native) is not None:
            histogram.schema = native.schema
            histogram.zero_threshold = native.zero_threshold
            histogram.zero_count = native.zero_count
            for counts, spans, deltas in (
                (native.positive, histogram.positive_span, histogram.positive_delta),
                (native.negative, histogram.negative_span, histogram.negative_delta),
            ):
                found, differences = spans_and_deltas(counts)
                for offset, length in found:
                    spans.add(offset=offset, length=length)
                deltas.extend(differences)
        self.message = pb.Metric(label=protobuf.label_pairs(self.labels), histogram=histogram)
        return self.message

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

    def add(
        self, labels: Sequence[str], buckets: Sequence[float], native: NativeLayout | None = None
    ) -> None:
        """Create the series (all zero) if absent, so it is exposed from start-up; with
        native buckets of that layout too, unless `native` is None."""
        key = tuple(labels)
        with self._lock:
            if key not in self._series:
                pairs = tuple(zip(self.labelnames, key, strict=True))
                self._series[key] = _Series(buckets, pairs, native)

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
            series = self._series[tuple(labels)]
            coarser = series.observe(value, mark)
        if coarser and series.native is not None:
            # rare (a spread of 2^(cap / 2^schema)), and the error bound changes with it
            _log.warning(
                "native histogram schema reduced",
                metric=self.name,
                **dict(zip(self.labelnames, labels, strict=True)),
                schema=series.native.schema,
                worst_case_error=round(worst_case_error(series.native.schema), 4),
                why=f"more than {series.native.max_buckets} buckets in use",
            )

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

    def protobuf(self) -> list[pb.Metric]:
        """Each series' `Metric` message (protobuf.py writes the family around them)."""
        with self._lock:
            return [series.protobuf() for series in self._series.values()]

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
