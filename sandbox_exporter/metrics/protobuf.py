"""`/metrics` in the Prometheus protobuf format: the one a scraper asks for when it
wants native histograms (`Accept: application/vnd.google.protobuf;
proto=io.prometheus.client.MetricFamily;encoding=delimited`).

Every family of the registry goes in, as `MetricFamily` messages of
prometheus/client_model's `metrics.proto` (compiled into `proto/`; see
`scripts/compile-metrics-proto.sh`), each written length-delimited by the
protobuf runtime. The duration histograms bring their own `Metric` messages,
classic and native buckets in one `Histogram` as client_golang writes them
(histograms.py); every other family is converted here from what
prometheus_client collects, under the names its text format gives them
(`sandbox_probes_total`, `sandbox_target_info`), so that a scrape in either
format makes the same series.

prometheus_client (0.26) writes no protobuf (its issue #918, PR #1104): when it
does, this module goes, and /metrics is the library's exposition in all three
formats.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping

from google.protobuf import proto
from prometheus_client.core import Metric
from prometheus_client.samples import Exemplar, Sample

from sandbox_exporter.metrics.proto import metrics_pb2 as pb

CONTENT_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

# prometheus_client's family types, as the text format 0.0.4 declares them
_TYPES = {
    "counter": pb.COUNTER,
    "gauge": pb.GAUGE,
    "info": pb.GAUGE,
    "stateset": pb.GAUGE,
    "summary": pb.SUMMARY,
    "histogram": pb.HISTOGRAM,
    "gaugehistogram": pb.GAUGE_HISTOGRAM,
}
# the sample name a family's value comes under, by type (others: the family's name)
_SUFFIX = {"counter": "_total", "info": "_info"}


def label_pairs(labels: Iterable[tuple[str, str]]) -> list[pb.LabelPair]:
    return [pb.LabelPair(name=name, value=value) for name, value in labels]


def exemplar(mark: Exemplar) -> pb.Exemplar:
    message = pb.Exemplar(label=label_pairs(sorted(mark.labels.items())), value=mark.value)
    if mark.timestamp is not None:
        message.timestamp.FromNanoseconds(int(float(mark.timestamp) * 1e9))
    return message


Labels = tuple[tuple[str, str], ...]


def _by_series(metric: Metric, skip: str) -> dict[Labels, dict[str, list[Sample]]]:
    """A histogram's or summary's samples by series (their labels, `skip` apart), and
    in each by what follows the family's name (`_bucket`, `_count`, `_sum`, ...)."""
    grouped: dict[Labels, dict[str, list[Sample]]] = {}
    for sample in metric.samples:
        key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != skip))
        suffix = sample.name.removeprefix(metric.name).removeprefix("_g")  # gauge histograms
        grouped.setdefault(key, {}).setdefault(suffix.lstrip("_"), []).append(sample)
    return grouped


def _total(samples: dict[str, list[Sample]], suffix: str) -> float:
    return samples[suffix][0].value if suffix in samples else 0.0


def _histogram(samples: dict[str, list[Sample]]) -> pb.Histogram:
    histogram = pb.Histogram(
        sample_count=int(_total(samples, "count")), sample_sum=_total(samples, "sum")
    )
    for sample in samples.get("bucket", []):
        bucket = histogram.bucket.add(
            cumulative_count=int(sample.value), upper_bound=float(sample.labels["le"])
        )
        if sample.exemplar is not None:
            bucket.exemplar.CopyFrom(exemplar(sample.exemplar))
    return histogram


def _summary(samples: dict[str, list[Sample]]) -> pb.Summary:
    summary = pb.Summary(
        sample_count=int(_total(samples, "count")), sample_sum=_total(samples, "sum")
    )
    for sample in samples.get("", []):
        summary.quantile.add(quantile=float(sample.labels["quantile"]), value=sample.value)
    return summary


def family(metric: Metric) -> pb.MetricFamily:
    """One family prometheus_client collected, as the message its text format implies."""
    kind = metric.type
    name = metric.name + _SUFFIX.get(kind, "")
    kind_of = _TYPES.get(kind, pb.UNTYPED)
    message = pb.MetricFamily(name=name, help=metric.documentation, type=kind_of)
    if kind in ("histogram", "gaugehistogram"):
        for labels, samples in _by_series(metric, "le").items():
            message.metric.add(label=label_pairs(labels), histogram=_histogram(samples))
        return message
    if kind == "summary":
        for labels, samples in _by_series(metric, "quantile").items():
            message.metric.add(label=label_pairs(labels), summary=_summary(samples))
        return message
    for sample in metric.samples:
        if sample.name != name:
            continue  # `_created`: prometheus_client's, switched off (families.py)
        pairs = label_pairs(sorted(sample.labels.items()))
        if kind == "counter":
            value = pb.Counter(value=sample.value)
            if sample.exemplar is not None:
                value.exemplar.CopyFrom(exemplar(sample.exemplar))
            message.metric.add(label=pairs, counter=value)
        elif message.type == pb.GAUGE:
            message.metric.add(label=pairs, gauge=pb.Gauge(value=sample.value))
        else:
            message.metric.add(label=pairs, untyped=pb.Untyped(value=sample.value))
    return message


def exposition(collected: Iterable[Metric], own: Mapping[str, Iterable[pb.Metric]]) -> bytes:
    """Each collected family, length-delimited, in order; a family named in `own` takes
    its `Metric` messages from there (the duration histograms)."""
    out = io.BytesIO()
    for metric in collected:
        message = family(metric)
        if metric.name in own:
            message.metric.extend(own[metric.name])
        proto.serialize_length_prefixed(message, out)
    return out.getvalue()
