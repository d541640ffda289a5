"""/metrics in protobuf (metrics/protobuf.py): the same series as the text format,
the native buckets as counted, exemplars, the negotiation, and the compiled
`metrics.proto` current with what protoc makes of the official file."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import proto
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sandbox_exporter.metrics import protobuf
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.metrics.native import bucket_key
from sandbox_exporter.metrics.proto import metrics_pb2 as pb
from sandbox_exporter.results import Failure, Phase, ProbeResult, Reason
from sandbox_exporter.web import responses
from tests.conftest import unavailable
from tests.helpers import make_config

ROOT = Path(__file__).parent.parent
PROTO_DIR = ROOT / "sandbox_exporter" / "metrics" / "proto"
# what each Prometheus sends when it wants native histograms
PROMETHEUS_2_42_NATIVE = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,"
    "application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3_NATIVE = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
    "encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;"
    "escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,"
    "*/*;q=0.1"
)

Key = tuple[str, tuple[tuple[str, str], ...]]


def families(body: bytes) -> list[pb.MetricFamily]:
    stream, out = io.BytesIO(body), []
    while stream.tell() < len(body):
        out.append(proto.parse_length_prefixed(pb.MetricFamily, stream))
    return out


def labels_of(message: Any, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({**{p.name: p.value for p in message.label}, **extra}.items()))


def classic_samples(body: bytes) -> dict[Key, float]:
    """The series Prometheus makes of a protobuf scrape without native histograms."""
    out: dict[Key, float] = {}
    for family in families(body):
        for metric in family.metric:
            if family.type == pb.SUMMARY:
                out[(f"{family.name}_count", labels_of(metric))] = metric.summary.sample_count
                out[(f"{family.name}_sum", labels_of(metric))] = metric.summary.sample_sum
            elif family.type == pb.HISTOGRAM:
                h = metric.histogram
                for bucket in h.bucket:
                    le = "+Inf" if math.isinf(bucket.upper_bound) else repr(bucket.upper_bound)
                    key = (f"{family.name}_bucket", labels_of(metric, le=le))
                    out[key] = bucket.cumulative_count
                out[(f"{family.name}_count", labels_of(metric))] = h.sample_count
                out[(f"{family.name}_sum", labels_of(metric))] = h.sample_sum
            else:
                value = {
                    pb.COUNTER: metric.counter.value,
                    pb.GAUGE: metric.gauge.value,
                    pb.UNTYPED: metric.untyped.value,
                }[family.type]
                out[(family.name, labels_of(metric))] = value
    return out


def text_samples(text: str) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if "le" in labels:
                labels["le"] = "+Inf" if labels["le"] == "+Inf" else repr(float(labels["le"]))
            out[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return out


def native_counts(histogram: pb.Histogram) -> dict[int, int]:
    counts: dict[int, int] = {}
    key, running, index = 0, 0, 0
    for span in histogram.positive_span:
        key += span.offset
        for _ in range(span.length):
            running += histogram.positive_delta[index]
            counts[key] = running
            key, index = key + 1, index + 1
    return {k: v for k, v in counts.items() if v}


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics(CollectorRegistry())
    config = make_config(
        {"name": "alpha", "backend": "docker", "image": "img:1"},
        {"name": "beta", "backend": "namespace", "histograms": {"native": False}},
        {"name": "gamma", "backend": "namespace", "histograms": {"schema": 2}},
        {"name": "burst", "backend": "namespace", "burst": {"concurrency": 2}},
    )
    for target in config.targets:
        m.add_target(target)
    return m


def run(target: str, backend: str, run_id: str, seconds: dict[Phase, float]) -> ProbeResult:
    result = ProbeResult(
        target=target, backend=backend, run_id=run_id, sandbox="s", started_at=10.0
    )
    result.finished_at, result.backend_up = 12.0, True
    result.durations = dict(seconds)
    return result


STARTS = [0.012, 0.0131, 0.0131, 0.02, 0.5, 7.0, 1e-7]


@pytest.fixture
def recorded(metrics: Metrics) -> Metrics:
    for i, start in enumerate(STARTS):
        for target, backend in (("alpha", "docker"), ("beta", "namespace"), ("gamma", "namespace")):
            seconds = {p: 0.01 for p in (Phase.CREATE, Phase.EXEC, Phase.STOP, Phase.REMOVE)}
            metrics.record(run(target, backend, f"run-{i}", {**seconds, Phase.START: start}))
    failed = run("alpha", "docker", "run-x", {Phase.CREATE: 0.3})
    failed.failure = Failure(Phase.START, Reason.TIMEOUT, "slow")
    metrics.record(failed)
    return metrics


def test_a_protobuf_scrape_makes_the_same_series_as_the_text_format(recorded: Metrics) -> None:
    ours = classic_samples(recorded.exposition("protobuf"))
    theirs = text_samples(recorded.exposition("text").decode())
    assert set(ours) == set(theirs)
    moving = ("process_", "python_gc_")  # the process's own figures change between the two
    for key, value in theirs.items():
        if not key[0].startswith(moving):
            assert ours[key] == pytest.approx(value), key
    names = {name for name, _ in ours}
    assert {"sandbox_probes_total", "sandbox_target_info", "sandbox_burst_concurrency"} <= names


def test_a_collector_of_the_librarys_own_on_the_registry_comes_through_too(
    metrics: Metrics,
) -> None:
    """What families.py does not write itself (a prometheus_client Histogram or Summary
    someone registers beside ours) is converted with the same series as its text."""
    from prometheus_client import Histogram, Summary

    histogram = Histogram("extra_seconds", "x", ["k"], buckets=[0.1, 1], registry=metrics.registry)
    histogram.labels("a").observe(0.5)
    summary = Summary("extra_size_bytes", "y", registry=metrics.registry)
    summary.observe(3)
    ours = classic_samples(metrics.exposition("protobuf"))
    theirs = text_samples(metrics.exposition("text").decode())
    for name in ("extra_seconds_bucket", "extra_seconds_count", "extra_size_bytes_sum"):
        keys = {key for key in theirs if key[0] == name}
        assert keys
        assert {key: ours[key] for key in keys} == {key: theirs[key] for key in keys}


def test_each_family_says_its_type_and_help_once(recorded: Metrics) -> None:
    found = families(recorded.exposition("protobuf"))
    by_name = {f.name: f for f in found}
    assert len(by_name) == len(found)
    assert by_name["sandbox_probes_total"].type == pb.COUNTER
    assert by_name["sandbox_probe_success"].type == pb.GAUGE
    assert by_name["sandbox_target_info"].type == pb.GAUGE
    assert by_name["sandbox_time_to_exec_seconds"].type == pb.HISTOGRAM
    assert by_name["sandbox_time_to_exec_seconds"].help.startswith("Create + start + exec")


def test_native_buckets_are_the_observations_counted(recorded: Metrics) -> None:
    found = {f.name: f for f in families(recorded.exposition("protobuf"))}
    starts = {
        dict(labels_of(m))["target"]: m.histogram
        for m in found["sandbox_phase_duration_seconds"].metric
        if dict(labels_of(m))["phase"] == "start"
    }
    for target, schema in (("alpha", 4), ("gamma", 2)):
        h = starts[target]
        assert h.schema == schema
        assert h.zero_threshold == 2.0**-20
        assert h.zero_count == 1  # the 0.1 µs start
        counted: dict[int, int] = {}
        for value in STARTS[:-1]:
            counted[bucket_key(value, schema)] = counted.get(bucket_key(value, schema), 0) + 1
        assert native_counts(h) == counted
        assert h.sample_count == len(STARTS)
    # native off: the classic buckets alone, which Prometheus takes for a classic histogram
    beta = starts["beta"]
    assert not beta.HasField("schema")
    assert not beta.HasField("zero_threshold")
    assert len(beta.positive_span) == 0


def test_an_untouched_native_histogram_is_still_native(metrics: Metrics) -> None:
    """Prometheus takes a histogram for native when it has a zero threshold, so one
    with no observation yet is exposed as what it will be."""
    found = {f.name: f for f in families(metrics.exposition("protobuf"))}
    for metric in found["sandbox_time_to_exec_seconds"].metric:
        native = dict(labels_of(metric))["target"] != "beta"
        assert (
            metric.histogram.zero_threshold > 0 if native else metric.histogram.zero_threshold == 0
        )


def test_exemplars_go_on_the_buckets_with_their_timestamp(recorded: Metrics) -> None:
    found = {f.name: f for f in families(recorded.exposition("protobuf"))}
    marks = [
        (bucket.upper_bound, bucket.exemplar)
        for m in found["sandbox_time_to_exec_seconds"].metric
        if dict(labels_of(m))["target"] == "alpha"
        for bucket in m.histogram.bucket
        if bucket.HasField("exemplar")
    ]
    assert marks
    for upper, exemplar in marks:
        assert labels_of(exemplar)[0][0] == "run_id"
        assert exemplar.value <= upper
        assert exemplar.timestamp.ToNanoseconds() == 12 * 10**9


def test_burst_histograms_are_native_too(metrics: Metrics) -> None:
    found = {f.name: f for f in families(metrics.exposition("protobuf"))}
    for name in (
        "sandbox_burst_phase_duration_seconds",
        "sandbox_burst_time_to_exec_seconds",
        "sandbox_burst_time_to_first_ready_seconds",
        "sandbox_burst_time_to_all_ready_seconds",
    ):
        assert found[name].metric, name
        assert all(m.histogram.zero_threshold > 0 for m in found[name].metric), name


def test_the_rendering_changes_only_when_an_observation_does(recorded: Metrics) -> None:
    first = recorded.exposition("protobuf")
    again = recorded.exposition("protobuf")
    strip = ("process_", "python_gc_")
    assert {k: v for k, v in classic_samples(first).items() if not k[0].startswith(strip)} == {
        k: v for k, v in classic_samples(again).items() if not k[0].startswith(strip)
    }
    late = run("alpha", "docker", "late", {Phase.CREATE: 0.25})
    late.failure = Failure(Phase.START, Reason.ERROR, "no")
    recorded.record(late)
    after = classic_samples(recorded.exposition("protobuf"))
    key = (
        "sandbox_phase_duration_seconds_count",
        (("backend", "docker"), ("phase", "create"), ("target", "alpha")),
    )
    assert after[key] == classic_samples(first)[key] + 1


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (PROMETHEUS_2_42_NATIVE, "protobuf"),
        (PROMETHEUS_3_NATIVE, "protobuf"),
        # Prometheus 2.42 without the feature flag
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            "openmetrics",
        ),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily", "text"),
        ("application/vnd.google.protobuf;proto=other.Thing;encoding=delimited", "text"),
        (
            "text/plain;q=0.9,application/vnd.google.protobuf;"
            "proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5",
            "text",
        ),
        (
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
            "encoding=delimited;q=0",
            "text",
        ),
    ],
)
def test_protobuf_is_served_when_the_scraper_prefers_it(accept: str, fmt: str) -> None:
    assert responses.metrics_format(accept) == fmt


def test_the_web_side_names_the_protobuf_content_type_as_the_encoder_does() -> None:
    assert responses.CONTENT_TYPES["protobuf"] == protobuf.CONTENT_TYPE


def test_the_compiled_metrics_proto_is_what_protoc_makes_of_the_official_file(
    tmp_path: Path,
) -> None:
    if shutil.which("protoc") is None:
        unavailable("protoc", "protoc is not installed (Debian package protobuf-compiler)")
    model = Path("/usr/share/gocode/src/github.com/prometheus/client_model")
    if not model.is_dir():
        unavailable(
            "protoc",
            "client_model's metrics.proto is not installed "
            "(Debian package golang-github-prometheus-client-model-dev)",
        )
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "compile-metrics-proto.sh"), str(tmp_path)], check=True
    )
    for name in ("metrics_pb2.py", "metrics_pb2.pyi"):
        assert (tmp_path / name).read_text() == (PROTO_DIR / name).read_text(), (
            f"{name} is stale: run scripts/compile-metrics-proto.sh"
        )
