"""/metrics cost: render time and size at 10, 50 and 200 targets, every series populated,
in the text format, OpenMetrics and protobuf (native histograms on, the default).

python benchmarks/metrics_cost.py [--repeat 50] [--targets 10 50 200]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line, median
from sandbox_exporter.config import parse_config
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.percentiles import nearest_rank
from sandbox_exporter.results import LIFECYCLE, Failure, Phase, ProbeResult, Reason, failure_modes


def success(target: str, k: int) -> ProbeResult:
    result = ProbeResult(target, "docker", f"run{k:08d}", "s", started_at=0.0, finished_at=1.0)
    result.backend_up = True
    result.durations = {p: 0.003 * (k + 1) * (i + 1) for i, p in enumerate(LIFECYCLE)}
    result.durations[Phase.PULL] = 2.0 + k
    return result


def populated(n: int) -> tuple[Any, Metrics, list[str]]:
    """The daemon's own app and metrics (not started), with n Docker targets."""
    config = parse_config(
        {"targets": [{"name": f"target-{i}", "backend": "docker"} for i in range(n)]}
    )
    daemon = Daemon(config, listen_address=None)
    metrics = daemon.metrics
    for target in config.targets:
        for k in range(20):  # observations spread over the buckets
            metrics.record(success(target.name, k))
        for phase, reason in failure_modes():  # every failure counter non-zero
            failed = ProbeResult(target.name, "docker", "r", "s", started_at=0.0, finished_at=2.0)
            failed.failure = Failure(phase, reason, "x")
            failed.cleanup_failures = [Failure(Phase.REMOVE, Reason.CLEANUP, "y")]
            metrics.record(failed)
        metrics.skipped_runs.labels(target.name, "docker").inc()
        metrics.orphans_removed.labels(target.name, "docker").inc()
    names = [t.name for t in config.targets]
    return daemon.app, metrics, names


def render_times(
    metrics: Metrics, names: list[str], fmt: Any, repeat: int
) -> tuple[list[float], list[float]]:
    """(cold, warm) rendering times in `fmt`: cold after every target recorded a run."""
    cold, warm = [], []
    for k in range(repeat):
        for name in names:
            metrics.record(success(name, k))
        t = time.perf_counter()
        metrics.exposition(fmt)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        metrics.exposition(fmt)
        warm.append(time.perf_counter() - t)
    return cold, warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--targets", type=int, nargs="*", default=[10, 50, 200])
    args = parser.parse_args()
    print("/metrics cost: one rendering of the registry (what the exporter's process spends")
    print("on it; the render cache then serves every scrape of that second), per format")
    print(machine_line())
    print("cold: every target recorded a new run since the last rendering; warm: nothing changed")
    print(
        f"{'targets':>8} {'format':<12}{'samples':>9}{'bytes':>11}{'gzip bytes':>12}"
        f"{'cold p50':>10}{'p95':>8}{'warm p50':>10}  (ms)"
    )
    for n in args.targets:
        _, metrics, names = populated(n)
        body = metrics.exposition("text")
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        for fmt in ("text", "openmetrics", "protobuf"):
            body = metrics.exposition(fmt)
            zipped = gzip.compress(body, compresslevel=6)
            cold, warm = render_times(metrics, names, fmt, args.repeat)
            print(
                f"{n:>8} {fmt:<12}{samples if fmt == 'text' else '':>9}{len(body):>11}"
                f"{len(zipped):>12}{median(cold) * 1000:>10.2f}"
                f"{nearest_rank(cold, 95) * 1000:>8.2f}{median(warm) * 1000:>10.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
