"""Native histogram buckets: sparse and exponential, kept beside the classic ones.

A native histogram's bucket `k` at schema `s` holds the values in
(2^((k-1)/2^s), 2^(k/2^s)]: each bucket is 2^(2^-s) times as wide as the one
before, so a quantile read from it is off by at most 2^(2^-s) - 1 of the value
(4.4 % at the default schema 4), and only buckets that were hit exist. Values
within `ZERO_THRESHOLD` of zero count in the zero bucket. The layout, the
bucket cap and the schema reduction that enforces it are client_golang's
(`prometheus/histogram.go`): when more than `MAX_BUCKETS` buckets are in use,
the schema drops by one, merging each pair of neighbours, until they fit.

prometheus_client (0.26) observes no native histograms (its issue #918, PR
#1104). When it does, this module and the native part of `protobuf.py` go, and
the histograms become the library's own.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from sandbox_exporter.config.settings import DEFAULT_SCHEMA, MIN_SCHEMA, Histograms

ZERO_THRESHOLD = 2.0**-20  # 0.95 µs: a bucket edge at every schema >= 0
MAX_BUCKETS = 160

# the fractions in [0.5, 1) at which a power of two's buckets end, per positive schema
_FRACTIONS = {s: [math.ldexp(2 ** (i / 2**s), -1) for i in range(2**s)] for s in range(1, 9)}


def worst_case_error(schema: int) -> float:
    """The most a quantile inside one bucket can be off, relative to the value."""
    return float(2 ** (2.0**-schema) - 1)


def bucket_key(value: float, schema: int) -> int:
    """The index of the bucket that holds `value` (> 0): the k with
    2^((k-1)/2^schema) < value <= 2^(k/2^schema)."""
    fraction, exponent = math.frexp(value)
    if schema > 0:
        fractions = _FRACTIONS[schema]
        return bisect.bisect_left(fractions, fraction) + (exponent - 1) * len(fractions)
    key = exponent - 1 if fraction == 0.5 else exponent
    return (key + (1 << -schema) - 1) >> -schema


def upper_bound(key: int, schema: int) -> float:
    """Where bucket `key` ends (inclusive); it starts where `key - 1` ends."""
    if schema > 0:
        fraction = _FRACTIONS[schema][key & ((1 << schema) - 1)]
        return math.ldexp(fraction, (key >> schema) + 1)
    return math.ldexp(1.0, key << -schema)


@dataclass(frozen=True)
class NativeLayout:
    schema: int = DEFAULT_SCHEMA
    zero_threshold: float = ZERO_THRESHOLD
    max_buckets: int = MAX_BUCKETS

    @classmethod
    def of(cls, histograms: Histograms) -> NativeLayout | None:
        """A target's layout; None when it keeps classic buckets only."""
        return cls(schema=histograms.native_schema) if histograms.native else None


class NativeBuckets:
    """One series' native buckets: counts by key, for values above and below zero."""

    __slots__ = ("max_buckets", "negative", "positive", "schema", "zero_count", "zero_threshold")

    def __init__(self, layout: NativeLayout) -> None:
        self.schema = layout.schema
        self.zero_threshold = layout.zero_threshold
        self.max_buckets = layout.max_buckets
        self.zero_count = 0
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}

    def observe(self, value: float) -> bool:
        """Count `value`; True when that took the schema down to stay within the cap."""
        if abs(value) <= self.zero_threshold:
            self.zero_count += 1
            return False
        side = self.positive if value > 0 else self.negative
        key = bucket_key(abs(value), self.schema)
        side[key] = side.get(key, 0) + 1
        reduced = False
        while len(self.positive) + len(self.negative) > self.max_buckets > 0:
            if self.schema <= MIN_SCHEMA:
                break
            self._halve_resolution()
            reduced = True
        return reduced

    def _halve_resolution(self) -> None:
        """One schema down: buckets 2j-1 and 2j become bucket j."""
        self.schema -= 1
        for side in (self.positive, self.negative):
            merged: dict[int, int] = {}
            for key, count in side.items():
                wider = -(-key // 2)
                merged[wider] = merged.get(wider, 0) + count
            side.clear()
            side.update(merged)


def spans_and_deltas(counts: dict[int, int]) -> tuple[list[tuple[int, int]], list[int]]:
    """The protobuf form of one side's buckets: (offset, length) spans, each offset
    the gap after the previous span (the first: the first key), and each bucket's
    count as the difference from the bucket before it."""
    spans: list[tuple[int, int]] = []
    deltas: list[int] = []
    previous_key: int | None = None
    previous_count = 0
    for key in sorted(counts):
        if previous_key is not None and key == previous_key + 1:
            offset, length = spans[-1]
            spans[-1] = (offset, length + 1)
        else:
            gap = key if previous_key is None else key - previous_key - 1
            spans.append((gap, 1))
        deltas.append(counts[key] - previous_count)
        previous_key, previous_count = key, counts[key]
    return spans, deltas
