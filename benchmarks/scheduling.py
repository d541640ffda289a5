"""Scheduling accuracy: lag between a job's due time and the start of its run,
at 50 targets with a backend that answers at once.

Target: p99 under 50 ms.

    python benchmarks/scheduling.py [--targets 50] [--interval 1s] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apscheduler.events import EVENT_JOB_EXECUTED

from benchmarks.common import machine_line, median
from benchmarks.instant import InstantBackend
from sandbox_exporter.config import parse_config
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.logs import configure_logging
from sandbox_exporter.probing.percentiles import nearest_rank


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    configure_logging("error", "logfmt")
    config = parse_config(
        {
            "defaults": {"interval": args.interval, "jitter": "0s"},
            "targets": [{"name": f"t{i}", "backend": "namespace"} for i in range(args.targets)],
        }
    )
    backends: dict[str, Any] = {t.name: InstantBackend() for t in config.targets}
    daemon = Daemon(config, listen_address=None, backends=lambda target: backends[target.name])
    started: dict[str, float] = {}
    lags: list[float] = []
    lock = threading.Lock()
    for prober in daemon.probers:
        original = prober.run

        def timed(name: str = prober.target.name, run: Any = original) -> Any:
            started[name] = time.time()
            return run()

        prober.run = timed  # type: ignore[method-assign]

    def on_executed(event: Any) -> None:
        with lock:
            lags.append(started[event.job_id] - event.scheduled_run_time.timestamp())

    daemon.scheduler.add_listener(on_executed, EVENT_JOB_EXECUTED)
    daemon.start()
    time.sleep(args.seconds)  # the measurement window
    daemon.shutdown()
    runs = sum(1 for p in daemon.probers if p.last_result is not None)
    print(
        f"scheduling accuracy: {args.targets} targets every {args.interval}, no jitter, "
        f"instant backend, {args.seconds:g} s"
    )
    print(machine_line())
    print(f"runs: {len(lags)} ({runs} of {args.targets} targets ran)")
    ms = [x * 1000 for x in lags]
    print(
        f"lag due -> start (ms): p50 {median(ms):.2f}, p95 {nearest_rank(ms, 95):.2f}, "
        f"p99 {nearest_rank(ms, 99):.2f}, max {max(ms):.2f}"
    )
    print("target (p99 < 50 ms): " + ("met" if nearest_rank(ms, 99) < 50 else "MISSED"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
