"""/metrics under load: wrk hammers it on loopback while real probes run.

Target: zero errors, probe timings undisturbed beyond noise. Needs wrk (Debian).

    DOCKER_HOST=unix:///…/docker.sock python benchmarks/load.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line
from benchmarks.exporter_process import ExporterProcess


def totals(process: ExporterProcess, start: float, end: float, target: str) -> list[float]:
    return [float(e["total_seconds"]) for e in process.logs
            if e.get("event") == "lifecycle" and e.get("target") == target and e.get("success")
            and start <= e["_seen"] <= end]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    url = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    process = ExporterProcess({"defaults": {"interval": "1s", "jitter": "0s",
                                            "image": "sandbox-exporter/busybox:local",
                                            "pull_policy": "never"},
                               "targets": [{"name": "ns", "backend": "namespace"},
                                           {"name": "docker", "backend": "docker",
                                            "docker": {"base_url": url}}]})  # fmt: skip
    try:
        time.sleep(3)  # let the first runs settle
        quiet_start = time.monotonic()
        time.sleep(args.seconds)  # the quiet window
        quiet_end = load_start = time.monotonic()
        out = subprocess.run(
            [wrk, "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
             f"http://{process.address}/metrics"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        load_end = time.monotonic()
    finally:
        code = process.stop()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    served = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: (.*)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    print(f"/metrics under load: wrk -t2 -c{args.connections} -d{args.seconds}s, loopback")
    print(machine_line())
    print(f"requests served: {served}, {rps:.0f}/s; latency p50 {p50}, p99 {p99}")
    print(f"socket errors: {errors.group(1) if errors else 'none'}; "
          f"non-2xx: {non_2xx.group(1) if non_2xx else 0}; exit status {code}")  # fmt: skip
    for target in ("ns", "docker"):
        quiet = totals(process, quiet_start, quiet_end, target)
        loaded = totals(process, load_start, load_end, target)
        print(f"{target}: lifecycle median quiet {statistics.median(quiet) * 1000:.1f} ms "
              f"(n={len(quiet)}), under load {statistics.median(loaded) * 1000:.1f} ms "
              f"(n={len(loaded)})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
