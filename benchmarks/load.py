"""/metrics under load: wrk hammers it on loopback while real probes run.

Windows of `--seconds` alternate quiet and loaded (Q L Q L Q); every lifecycle
total is read from the exporter's JSON log and put in the window it ended in.
Target: zero errors, probe timings not disturbed beyond noise. "Noise" is
measured, not assumed: the spread of the quiet windows' medians, and a
bootstrap 95% interval of the loaded-minus-quiet difference of medians.

wrk runs at SCHED_IDLE (`chrt --idle 0`) by default. A real scraper runs on
another machine; a load generator at normal priority on a 2-core box takes
the CPU the engine needs, which no exporter can prevent. `--generator normal`
runs it at normal priority, for comparison. Needs wrk (Debian).

    DOCKER_HOST=unix:///…/docker.sock python benchmarks/load.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line
from benchmarks.exporter_process import ExporterProcess

TARGETS = ("ns", "docker")


def totals(process: ExporterProcess, start: float, end: float, target: str) -> list[float]:
    return [
        float(e["total_seconds"])
        for e in process.logs
        if e.get("event") == "lifecycle"
        and e.get("target") == target
        and e.get("success")
        and start <= e["_seen"] <= end
    ]


def median_difference_interval(
    quiet: list[float], loaded: list[float], rounds: int = 2000
) -> tuple[float, float]:
    """Bootstrap 95% interval of median(loaded) - median(quiet)."""
    pick = random.Random(1)  # noqa: S311 - resampling, not secrets
    diffs = sorted(
        statistics.median(pick.choices(loaded, k=len(loaded)))
        - statistics.median(pick.choices(quiet, k=len(quiet)))
        for _ in range(rounds)
    )
    return diffs[int(0.025 * rounds)], diffs[int(0.975 * rounds) - 1]


def wrk(generator: list[str], connections: int, seconds: int, url: str) -> dict[str, float]:
    out = subprocess.run(
        [*generator, "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        value = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        assert value is not None, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[value.group(2)]
        return float(value.group(1)) * scale

    served = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": float(served.group(1)) if served else 0.0,
        "seconds": float(seconds),
        "errors": float(sum(int(g) for g in errors.groups()) if errors else 0)
        + float(non_2xx.group(1) if non_2xx else 0),
        "p50": ms("50%"),
        "p99": ms("99%"),
    }


def realistic(url: str, seconds: int, extra: list[str]) -> dict[str, float]:
    """benchmarks/realistic_load.py for `seconds`: answer times of /metrics (p50, p99)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "realistic_load.py")
    out = subprocess.run(
        [sys.executable, script, url, str(seconds), *extra],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    answers = json.loads(out)
    scrapes, pages = sorted(answers["metrics"]), sorted(answers["page"])

    def ms(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else math.nan

    print(
        f"  realistic window: {len(scrapes)} scrapes p50 {ms(scrapes, 0.5):.1f} ms max "
        f"{ms(scrapes, 1.0):.1f} ms; {len(pages)} page loads p50 {ms(pages, 0.5):.1f} ms "
        f"p99 {ms(pages, 0.99):.1f} ms; {len(answers['errors'])} errors"
    )
    return {
        "requests": float(len(scrapes) + len(pages)),
        "seconds": float(seconds),
        "errors": float(len(answers["errors"])),
        "p50": ms(scrapes, 0.5),
        "p99": ms(scrapes, 0.99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--generator", choices=("idle", "normal"), default="idle")
    parser.add_argument(
        "--load",
        choices=("flood", "realistic", "scrape"),
        default="flood",
        help="flood: wrk on /metrics; realistic: two Prometheus at 15 s and five people "
        "refreshing the landing page every second (benchmarks/realistic_load.py); scrape: "
        "one Prometheus scraping every second",
    )
    parser.add_argument(
        "--filler",
        type=int,
        default=0,
        help="this many more namespace targets, every 60 s: their series "
        "make /metrics as large as a real fleet's",
    )
    parser.add_argument(
        "--scrapes-per-second", default="50", help="--web.max-scrapes-per-second (0: unpaced)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    generator = ["chrt", "--idle", "0"] if args.generator == "idle" else []
    url = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    process = ExporterProcess(
        {
            "defaults": {
                "interval": "1s",
                "jitter": "0s",
                "image": "sandbox-exporter/busybox:local",
                "pull_policy": "never",
            },
            "targets": [
                {"name": "ns", "backend": "namespace"},
                {"name": "docker", "backend": "docker", "docker": {"base_url": url}},
                *(
                    {"name": f"filler-{i}", "backend": "namespace", "interval": "60s"}
                    for i in range(args.filler)
                ),
            ],
        },
        "--web.max-scrapes-per-second",
        args.scrapes_per_second,
    )
    quiet: list[tuple[float, float]] = []
    loaded: list[tuple[float, float]] = []
    runs: list[dict[str, float]] = []
    try:
        time.sleep(3)  # let the first runs settle
        for window in range(5):
            began = time.monotonic()
            if window % 2 and args.load != "flood":
                extra = ["--scrapers", "1", "--scrape-every", "1", "--pages", "0"]
                runs.append(
                    realistic(
                        f"http://{process.address}",
                        args.seconds,
                        extra if args.load == "scrape" else [],
                    )
                )
                loaded.append((began, time.monotonic()))
            elif window % 2:
                runs.append(
                    wrk(
                        generator,
                        args.connections,
                        args.seconds,
                        f"http://{process.address}/metrics",
                    )
                )
                loaded.append((began, time.monotonic()))
            else:
                time.sleep(args.seconds)  # a quiet window
                quiet.append((began, time.monotonic()))
    finally:
        code = process.stop()
    served = sum(r["requests"] for r in runs)
    load = {
        "realistic": "two scrapers at 15 s + five page refreshers at 1 s",
        "scrape": "one scraper (OpenMetrics) every second",
        "flood": f"wrk -t2 -c{args.connections}, generator at "
        f"{'SCHED_IDLE' if generator else 'normal priority'}",
    }[args.load]
    load += f", {2 + args.filler} targets"
    print(
        f"/metrics under load: {load}, {len(runs)} windows of {args.seconds}s between "
        f"{len(quiet)} quiet ones, loopback, serving "
        f"{os.environ.get('SANDBOX_EXPORTER_SERVING', 'separate')}, "
        f"--web.max-scrapes-per-second {args.scrapes_per_second}"
    )
    print(machine_line())
    print(
        f"requests served: {served:.0f}, {served / sum(r['seconds'] for r in runs):.0f}/s; "
        f"latency p50 {max(r['p50'] for r in runs):.2f} ms, "
        f"p99 {max(r['p99'] for r in runs):.2f} ms (worst window)"
    )
    print(f"errors (socket + non-2xx): {sum(r['errors'] for r in runs):.0f}; exit status {code}")
    for target in TARGETS:
        per_quiet = [totals(process, a, b, target) for a, b in quiet]
        q = [v for window in per_quiet for v in window]
        ld = [v for a, b in loaded for v in totals(process, a, b, target)]
        if not q or not ld:
            print(f"{target}: no successful lifecycles to compare")
            continue
        medians = [statistics.median(w) * 1000 for w in per_quiet if w]
        low, high = median_difference_interval(q, ld)
        diff = (statistics.median(ld) - statistics.median(q)) * 1000
        spread = max(medians) - min(medians)
        verdict = (
            "within noise" if low <= 0 <= high or abs(diff) <= spread else "DISTURBED beyond noise"
        )
        print(
            f"{target}: lifecycle median quiet {statistics.median(q) * 1000:.1f} ms (n={len(q)}; "
            f"quiet windows {', '.join(f'{m:.1f}' for m in medians)}), under load "
            f"{statistics.median(ld) * 1000:.1f} ms (n={len(ld)}); difference {diff:+.1f} ms, "
            f"95% CI {low * 1000:+.1f}..{high * 1000:+.1f}; {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
