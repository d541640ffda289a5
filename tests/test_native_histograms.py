"""Native histogram buckets (metrics/native.py): the layout's arithmetic, the zero
bucket, the bucket cap, and what the per-target option does. What they look like on
the wire is tests/test_protobuf_exposition.py's; what Prometheus makes of them is
tests/test_dashboard_and_rules.py's."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox_exporter.config import ConfigError
from sandbox_exporter.config.settings import DEFAULT_SCHEMA, MAX_SCHEMA, MIN_SCHEMA
from sandbox_exporter.metrics.native import (
    ZERO_THRESHOLD,
    NativeBuckets,
    NativeLayout,
    bucket_key,
    spans_and_deltas,
    upper_bound,
    worst_case_error,
)
from tests.helpers import make_config

SCHEMAS = st.integers(MIN_SCHEMA, MAX_SCHEMA)
DURATIONS = st.floats(min_value=1e-6, max_value=1e5, allow_nan=False)


@given(DURATIONS, SCHEMAS)
def test_a_value_lies_in_the_bucket_its_key_names(value: float, schema: int) -> None:
    key = bucket_key(value, schema)
    assert upper_bound(key - 1, schema) < value <= upper_bound(key, schema)


@pytest.mark.parametrize("schema", range(MIN_SCHEMA, MAX_SCHEMA + 1))
def test_every_bucket_is_the_growth_factor_wider_than_the_last(schema: int) -> None:
    factor = 2 ** (2.0**-schema)
    keys = min(300, int(1000 * 2.0**schema))  # bounds within 2^±1000, normal floats
    for key in range(-keys, keys):
        assert upper_bound(key, schema) / upper_bound(key - 1, schema) == pytest.approx(factor)
    assert upper_bound(0, schema) == 1.0
    assert worst_case_error(schema) == pytest.approx(factor - 1)


def test_the_default_schema_is_the_coarsest_within_five_percent() -> None:
    assert worst_case_error(DEFAULT_SCHEMA) <= 0.05 < worst_case_error(DEFAULT_SCHEMA - 1)
    assert worst_case_error(DEFAULT_SCHEMA) == pytest.approx(0.0443, abs=1e-4)


def test_values_at_or_below_the_threshold_go_to_the_zero_bucket() -> None:
    buckets = NativeBuckets(NativeLayout())
    assert ZERO_THRESHOLD < 1e-6
    for value in (0.0, ZERO_THRESHOLD / 2, ZERO_THRESHOLD):
        buckets.observe(value)
    buckets.observe(ZERO_THRESHOLD * 1.0001)
    assert buckets.zero_count == 3
    assert sum(buckets.positive.values()) == 1


@given(st.lists(DURATIONS, max_size=300), st.integers(2, 40), st.integers(0, MAX_SCHEMA))
def test_the_bucket_cap_takes_the_schema_down_and_loses_no_count(
    values: list[float], cap: int, schema: int
) -> None:
    """Whatever the order of the values, the buckets end as if every value had been
    counted at the final schema, within the cap (or at the coarsest schema)."""
    buckets = NativeBuckets(NativeLayout(schema=schema, max_buckets=cap))
    for value in values:
        buckets.observe(value)
    assert len(buckets.positive) <= cap or buckets.schema == MIN_SCHEMA
    expected: dict[int, int] = {}
    for value in values:
        key = bucket_key(value, buckets.schema)
        expected[key] = expected.get(key, 0) + 1
    assert buckets.positive == expected
    if buckets.schema < schema:  # reduced only as far as needed
        coarser_by_one: set[int] = {bucket_key(v, buckets.schema + 1) for v in values}
        assert len(coarser_by_one) > cap


def test_the_observation_that_reduces_the_schema_says_so() -> None:
    buckets = NativeBuckets(NativeLayout(schema=4, max_buckets=3))
    said = [buckets.observe(v) for v in (1.0, 2.0, 4.0, 8.0)]
    assert said == [False, False, False, True]
    assert buckets.schema < 4


@given(st.dictionaries(st.integers(-500, 500), st.integers(1, 10**9), max_size=60))
def test_spans_and_deltas_give_back_the_counts(counts: dict[int, int]) -> None:
    spans, deltas = spans_and_deltas(counts)
    decoded: dict[int, int] = {}
    key, running, index = 0, 0, 0
    for number, (offset, length) in enumerate(spans):
        assert length > 0
        assert number == 0 or offset > 0, "spans never touch: they would be one"
        key += offset
        for _ in range(length):
            running += deltas[index]
            decoded[key] = running
            key, index = key + 1, index + 1
    assert decoded == counts


def test_native_is_on_by_default_and_off_per_target() -> None:
    config = make_config(
        {"name": "a", "backend": "namespace"},
        {"name": "b", "backend": "namespace", "histograms": {"native": False}},
        {"name": "c", "backend": "namespace", "histograms": {"schema": 2}},
    )
    a, b, c = (NativeLayout.of(t.histograms) for t in config.targets)
    assert a == NativeLayout(schema=DEFAULT_SCHEMA)
    assert b is None
    assert c == NativeLayout(schema=2)
    assert math.isclose(worst_case_error(2), 2**0.25 - 1)


@pytest.mark.parametrize(
    ("histograms", "field"),
    [
        ({"schema": 9}, "histograms.schema"),
        ({"schema": -5}, "histograms.schema"),
        ({"native": "sometimes"}, "histograms.native"),
        ({"bins": 3}, "histograms.bins"),
    ],
)
def test_a_bad_histograms_block_is_refused_naming_the_field(
    histograms: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config({"name": "a", "backend": "namespace", "histograms": histograms})
    assert field in str(caught.value)


def test_a_series_that_outgrows_the_cap_logs_its_new_schema_once_per_reduction() -> None:
    from structlog.testing import capture_logs

    from sandbox_exporter.metrics.histograms import HistogramFamily

    family = HistogramFamily("sandbox_x_seconds", "x", ("target",))
    family.add(("a",), [1.0], NativeLayout(schema=4, max_buckets=4))
    with capture_logs() as logs:
        for value in (0.001, 0.01, 0.1, 1.0, 10.0):
            family.observe(("a",), value)
    events = [e for e in logs if e["event"] == "native histogram schema reduced"]
    assert events
    last = events[-1]
    assert last["metric"] == "sandbox_x_seconds"
    assert last["target"] == "a"
    assert last["schema"] < 4
    assert last["worst_case_error"] == round(worst_case_error(last["schema"]), 4)
    assert last["log_level"] == "warning"
