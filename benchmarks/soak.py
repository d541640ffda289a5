"""Soak: 50 namespace targets probed every 2 s for minutes, /metrics scraped every
15 s as Prometheus would; memory, threads and open files of both of the
exporter's processes must stay flat.

"Flat" is read off a least-squares slope over the samples after the first
third (start-up and warm-up excluded), in MB (or threads, files) per hour.

    python benchmarks/soak.py [--targets 50] [--interval 2s] [--minutes 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line
from benchmarks.exporter_process import ExporterProcess
from benchmarks.footprint import web_process

SAMPLE_EVERY = 5.0
SCRAPE_EVERY = 15.0
COLUMNS = ("RSS MB", "threads", "open files", "web RSS MB", "web threads", "web open files")


def process_sample(pid: int) -> tuple[float, float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return (int(fields["VmRSS"][0]) / 1024, float(fields["Threads"][0]),
            float(len(os.listdir(f"/proc/{pid}/fd"))))  # fmt: skip


def added_up(exposition: str, prefix: str, containing: str = "") -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
               if line.startswith(prefix) and containing in line)  # fmt: skip


def slope_per_hour(times: list[float], values: list[float]) -> float:
    if len(times) < 2:
        return 0.0
    return statistics.linear_regression(times, values).slope * 3600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--interval", default="2s")
    parser.add_argument("--minutes", type=float, default=3.0)
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="soak-")
    process = ExporterProcess({
        "defaults": {"interval": args.interval},
        "targets": [{"name": f"t{i}", "backend": "namespace", "namespace": {"state_dir": state}}
                    for i in range(args.targets)],
    }, keep_events={"web process exited; starting another"})  # fmt: skip
    web = web_process(process.proc.pid)
    samples: list[tuple[float, ...]] = []
    scrapes = scrape_errors = 0
    start = time.monotonic()
    next_scrape = start
    try:
        while (now := time.monotonic()) - start < args.minutes * 60:
            if now >= next_scrape:
                try:
                    urllib.request.urlopen(f"http://{process.address}/metrics", timeout=10).read()
                    scrapes += 1
                except OSError:
                    scrape_errors += 1
                next_scrape += SCRAPE_EVERY
            samples.append((now - start, *process_sample(process.proc.pid),
                            *process_sample(web)))  # fmt: skip
            time.sleep(SAMPLE_EVERY)  # the soak's sampling period
        with urllib.request.urlopen(f"http://{process.address}/metrics", timeout=10) as page:
            metrics = page.read().decode()
    finally:
        code = process.stop()
    runs = added_up(metrics, "sandbox_probes_total{")
    failed = added_up(metrics, "sandbox_probes_total{", 'result="failure"')
    skipped = added_up(metrics, "sandbox_probe_skipped_total{")
    leftover = os.listdir(state)
    third = max(len(samples) // 3, 1)
    settled = samples[third:]

    print(f"soak: {args.targets} namespace targets every {args.interval} for {args.minutes:g} min, "
          f"/metrics scraped every {SCRAPE_EVERY:g} s")  # fmt: skip
    print(machine_line())
    print(f"lifecycles: {runs:.0f}, failed: {failed:.0f}, skipped: {skipped:.0f}, scrapes: "
          f"{scrapes} ({scrape_errors} failed), exit status {code}, "
          f"sandbox directories left: {len(leftover)}")  # fmt: skip
    print(f"{'':<16}{'first third':>12}{'last third':>12}{'max':>8}{'slope/h after warm-up':>24}")
    for col, name in enumerate(COLUMNS, start=1):
        values = [s[col] for s in samples]
        slope = slope_per_hour([s[0] for s in settled], [s[col] for s in settled])
        first, last = statistics.mean(values[:third]), statistics.mean(values[-third:])
        print(f"{name:<16}{first:>12.1f}{last:>12.1f}{max(values):>8.1f}{slope:>+24.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
