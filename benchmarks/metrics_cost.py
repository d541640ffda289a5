"""/metrics cost: render time and size at 10, 50 and 200 targets, every series populated.

Target: under 20 ms at 50 targets.

    python benchmarks/metrics_cost.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from typing import Any
from wsgiref.util import setup_testing_defaults

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client import disable_created_metrics

from benchmarks.common import machine_line, median, percentile
from exporter.config import parse_config
from exporter.daemon import Daemon
from exporter.metrics.families import Metrics
from exporter.probing.lifecycle import LIFECYCLE, Failure, Phase, ProbeResult, Reason, failure_modes


def success(target: str, k: int) -> ProbeResult:
    result = ProbeResult(target, "docker", "r", "s", started_at=0.0, finished_at=1.0)
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
        metrics.skipped.labels(target.name, "docker").inc()
        metrics.orphans_removed.labels(target.name, "docker").inc()
    names = [t.name for t in config.targets]
    return daemon.app, metrics, names


def scrape(app: Any, gzip_ok: bool) -> bytes:
    environ: dict[str, Any] = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}
    if gzip_ok:
        environ["HTTP_ACCEPT_ENCODING"] = "gzip"
    setup_testing_defaults(environ)
    return b"".join(app(environ, lambda status, headers, exc_info=None: None))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    disable_created_metrics()  # type: ignore[no-untyped-call]  # as the daemon does
    print("/metrics cost: one scrape through the WSGI app (no socket), all series populated")
    print(machine_line())
    print("cold: every target recorded a new run since the last scrape (worst case);")
    print("warm: nothing changed since the last scrape (histogram text comes from cache)")
    head = f"{'targets':>8}{'series':>8}{'bytes':>10}{'gzip bytes':>12}"
    print(f"{head}{'cold p50':>10}{'cold p95':>10}{'warm p50':>10}{'gzip cold p50':>15}  (ms)")
    for n in (10, 50, 200):
        app, metrics, names = populated(n)
        body = scrape(app, False)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        zipped = scrape(app, True)
        assert gzip.decompress(zipped)
        cold, warm, packed = [], [], []
        for k in range(args.repeat):
            for name in names:
                metrics.record(success(name, k))
            t = time.perf_counter()
            scrape(app, False)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            scrape(app, False)
            warm.append(time.perf_counter() - t)
            for name in names:
                metrics.record(success(name, k))
            t = time.perf_counter()
            scrape(app, True)
            packed.append(time.perf_counter() - t)
        print(f"{n:>8}{series:>8}{len(body):>10}{len(zipped):>12}{median(cold) * 1000:>10.2f}"
              f"{percentile(cold, 95) * 1000:>10.2f}{median(warm) * 1000:>10.2f}"
              f"{median(packed) * 1000:>15.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
