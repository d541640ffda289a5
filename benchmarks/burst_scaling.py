"""Burst scaling: how start-up grows with the number of sandboxes launched together,
for the namespace backend, Docker (runc) and gVisor (Docker, runtime runsc).

For each backend and each N, K bursts of N sandboxes, one after another, each by
the exporter's own BurstRunner (what `bench --concurrency N` and the daemon's
burst probe run); N = 1 is a single lifecycle (LifecycleRunner), its one sandbox
both the first and the last ready. Backends and sizes run in turn, never
together. Per backend and N: time to first ready p50, time to all ready p50/p95
(from the launch to the first/last exec answered, over the K bursts), time to exec
p50/p95 over every successful sandbox, launch skew p50, the median time to exec
of the first and of the last quarter launched, and the failures.

    DOCKER_HOST=unix:///path/docker.sock python benchmarks/burst_scaling.py \\
        [--sizes 1,5,10,20] [-k 5] [--warmup 1] [--backends namespace,docker,gvisor]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line
from sandbox_exporter.commands.bench import BackendRun, run_bench
from sandbox_exporter.commands.bench_burst import BurstBackendRun, with_burst
from sandbox_exporter.commands.bench_cli import interruptible
from sandbox_exporter.commands.bench_report import notes
from sandbox_exporter.config import Target, parse_config
from sandbox_exporter.config.settings import Burst
from sandbox_exporter.logs import configure_logging
from sandbox_exporter.results import BurstResult

INSTANCE = "burst-scaling-bench"
BACKENDS = ("namespace", "docker", "gvisor")
TITLES = ("first p50", "all p50", "all p95", "tte p50", "tte p95", "skew p50", "Q1 med", "Q4 med")


def targets(names: Sequence[str], url: str, image: str) -> list[Target]:
    blocks: dict[str, dict[str, Any]] = {
        "namespace": {"backend": "namespace"},
        "docker": {"backend": "docker", "docker": {"base_url": url}},
        "gvisor": {"backend": "docker", "docker": {"base_url": url, "runtime": "runsc"}},
    }
    raw = [{"name": name, **blocks[name]} for name in names]
    config = parse_config({"defaults": {"image": image, "pull_policy": "never"}, "targets": raw})
    return list(config.targets)


def single(result_run: BackendRun) -> BurstBackendRun:
    """N = 1: each lifecycle read as a burst of one launched when its create was sent."""
    run = BurstBackendRun(
        result_run.target, result_run.skipped, warmup_failures=result_run.warmup_failures
    )
    for r in result_run.results:
        one = BurstResult(
            r.target,
            r.backend,
            r.run_id,
            "single",
            r.started_at,
            r.finished_at,
            [0.0],
            launch=r.launched_at,
            results=[r],
        )
        run.add(one)
    return run


def measure(target: Target, size: int, bursts: int, warmup: int) -> BurstBackendRun | None:
    """K bursts of `size` (after the warm-up ones); None when Ctrl-C cut them short."""
    chosen = [target] if size == 1 else with_burst([target], Burst(concurrency=size))
    make_run = BackendRun if size == 1 else BurstBackendRun
    report = interruptible(
        lambda cancel: run_bench(
            chosen,
            iterations=bursts,
            warmup=warmup,
            instance=INSTANCE,
            cancel=cancel,
            make_run=make_run,
        ),
        chosen,
        lambda: print("interrupted: removing the sandboxes in flight...", file=sys.stderr),
    )
    if report is None or report.interrupted:
        return None
    run = report.runs[0]
    if size == 1:
        return single(run)
    assert isinstance(run, BurstBackendRun)
    return run


def row(run: BurstBackendRun, size: int) -> str:
    head = f"{run.target.name:<11}{size:>4}"
    if run.skipped is not None:
        return f"{head}  skipped: {run.skipped}"
    quarters = run.quarters()
    figures = (
        run.first_ready(50),
        run.all_ready(50),
        run.all_ready(95),
        run.time_to_exec(50),
        run.time_to_exec(95),
        run.skew(50),
        quarters[0],
        quarters[3],
    )
    cells = "".join(f"{'-':>10}" if v is None else f"{v * 1000:>10.1f}" for v in figures)
    ok = f"{sum(b.success for b in run.bursts)}/{len(run.bursts)}"
    return f"{head}{ok:>8}{cells}{len(run.failures):>8}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="1,5,10,20", help="N, comma-separated (default 1,5,10,20)"
    )
    parser.add_argument("-k", "--bursts", type=int, default=5, help="bursts per N (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted bursts per N (default 1)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="of " + ", ".join(BACKENDS))
    parser.add_argument("--image", default="sandbox-exporter/busybox:local")
    parser.add_argument("--url", help="the Docker engine (default: DOCKER_HOST)")
    args = parser.parse_args()
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    try:
        sizes = [int(n) for n in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or args.bursts < 1 or not set(names) <= set(BACKENDS):
        parser.error("--sizes: whole numbers >= 1; -k >= 1; --backends: " + ", ".join(BACKENDS))
    configure_logging("error", "logfmt")
    url = args.url or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    print("burst scaling: start-up against N sandboxes launched together (BurstRunner)")
    print(machine_line())
    print(f"K = {args.bursts} burst(s) per N (+{args.warmup} warm-up); N = 1 is one lifecycle")
    print(f"image {args.image}, Docker {url}")
    print(
        f"{'backend':<11}{'N':>4}{'bursts':>8}"
        + "".join(f"{t:>10}" for t in TITLES)
        + f"{'failed':>8}   (ms)"
    )
    found: list[str] = []
    for target in targets(names, url, args.image):
        for size in sizes:
            run = measure(target, size, args.bursts, args.warmup)
            if run is None:
                print("interrupted")
                return 130
            print(row(run, size), flush=True)
            found += [f"N={size} {line}" for line in notes(run, unit="burst")]
    print("first/all: launch to the first/last exec answered, over the bursts; tte: create +")
    print("start + exec over every successful sandbox; skew: creates sent against their plan;")
    print("Q1/Q4: median time to exec of the first/last ceil(N/4) launched. Nearest-rank.")
    for line in found:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
