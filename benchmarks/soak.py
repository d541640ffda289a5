"""Soak: the exporter as a process for minutes to hours; the memory, threads and
open files of both its processes must stay flat.

Two loads:

- the default: `--targets` namespace targets every `--interval`, /metrics scraped
  every 15 s as Prometheus would;
- `--chaos`: the mix an operator runs, with faults. A namespace target every 1 s
  with a burst of 5 every 10 s, a Docker target every 1 s and a Podman target every
  2 s, on private engines of the soak's own (benchmarks/engines.py). A reload
  (SIGHUP) every minute, every second one with the Docker target changed, so that
  its prober is retired and replaced; the web process SIGKILLed at 20 % of the run;
  dockerd SIGKILLed at 40 % and started again 15 s later; the Podman service
  frozen (SIGSTOP) at 60 % for 20 s.

Both processes are sampled every 5 s from /proc: RSS, USS (private memory, what
the process alone holds), threads and open files. The exporter runs under
benchmarks/traced_exporter.py (unless `--no-heap`), which adds the Python heap
(tracemalloc), glibc malloc's figures and arenas, and snapshots of the heap that
are diffed by line at the end. The slopes are least-squares, per hour, over the
samples after the warm-up (`--warmup` minutes, 10 by default; a third of the run
when the run is shorter than twice that).

    python benchmarks/soak.py [--targets 50] [--interval 2s] [--minutes 3]
    python benchmarks/soak.py --chaos --minutes 60 [--warmup 10] [--no-heap]
        [--env MALLOC_ARENA_MAX=2] [--malloc-trim SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import machine_line
from benchmarks.exporter_process import ExporterProcess

SAMPLE_EVERY = 5.0
SCRAPE_EVERY = 15.0
RELOAD_EVERY = 60.0
# what Prometheus 2.42 asks for
SCRAPE_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
MB = 1024 * 1024
KEPT_EVENTS = {
    "web process exited; starting another",
    "config reloaded",
    "signal received",
    "config file changed",
}


# -- /proc ----------------------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def process_sample(pid: int) -> dict[str, float]:
    """RSS and USS (MB), threads and open files of `pid`."""
    status = _status(pid)
    private = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            private += int(line.split()[1])
    return {
        "rss": int(status["VmRSS"].split()[0]) / 1024,
        "uss": private / 1024,
        "threads": float(status["Threads"]),
        "fds": float(len(os.listdir(f"/proc/{pid}/fd"))),
    }


def web_process(parent: int) -> int | None:
    """The exporter's web process, if one runs now (it is restarted when killed)."""
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{parent}/task").iterdir():
            for pid in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if (
                        b"sandbox_exporter.web.http_child"
                        in Path(f"/proc/{pid}/cmdline").read_bytes()
                    ):
                        return int(pid)
    return None


# -- figures --------------------------------------------------------------------------


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    times, values = zip(*points, strict=True)
    return statistics.linear_regression(times, values).slope * 3600


@dataclass
class Series:
    """(seconds since the start, value) of one figure."""

    name: str
    unit: str
    points: list[tuple[float, float]] = field(default_factory=list)

    def row(self, warmup: float) -> str:
        settled = [p for p in self.points if p[0] >= warmup] or self.points
        values = [v for _, v in self.points]
        return (
            f"{self.name:<26}{settled[0][1]:>12.1f}{settled[-1][1]:>12.1f}{min(values):>10.1f}"
            f"{max(values):>10.1f}{slope_per_hour(settled):>+14.2f} {self.unit}/h"
        )


def table(series: list[Series], warmup: float) -> None:
    print(f"{'':<26}{'after warm-up':>12}{'at the end':>12}{'min':>10}{'max':>10}{'slope':>14}")
    for one in series:
        if one.points:
            print(one.row(warmup))


def per_minute(series: Series) -> str:
    """The value nearest each whole minute."""
    out = []
    minute = 0
    for t, value in series.points:
        if t >= minute * 60:
            out.append(f"{value:.1f}")
            minute += 1
    return " ".join(out)


def samples(text: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                yield sample.labels, sample.value


def counted(text: str, name: str, *keys: str) -> Counter[tuple[str, ...]]:
    totals: Counter[tuple[str, ...]] = Counter()
    for labels, value in samples(text, name):
        if value:
            totals[tuple(labels[k] for k in keys)] += int(value)
    return totals


def by_backend(runs: Counter[tuple[str, ...]]) -> str:
    """`docker 120 (3 failed), ...` from counts by (backend, result)."""
    return ", ".join(
        f"{b} {runs[(b, 'success')] + runs[(b, 'failure')]} ({runs[(b, 'failure')]} failed)"
        for b in sorted({b for b, _ in runs})
    )


def heap_series(out: Path, offset: float) -> list[Series]:
    """The traced exporter's own figures (traced_exporter.py), on the soak's clock."""
    lines = [json.loads(line) for line in (out / "heap.jsonl").read_text().splitlines()]
    wanted = [
        ("traced", "Python heap (tracemalloc)", MB, "MB"),
        ("tracemalloc_own", "tracemalloc's own", MB, "MB"),
        ("blocks", "Python blocks", 1000, "k"),
        ("gc_objects", "objects the GC tracks", 1000, "k"),
        ("malloc_in_use", "malloc in use", MB, "MB"),
        ("malloc_free_kept", "malloc free, kept", MB, "MB"),
        ("malloc_arenas", "malloc arenas", 1, ""),
        ("malloc_main_arena", "main arena (from kernel)", MB, "MB"),
        ("malloc_thread_arenas", "thread arenas (from kernel)", MB, "MB"),
    ]
    series = []
    for key, name, scale, unit in wanted:
        points = [(line["t"] + offset, line[key] / scale) for line in lines if key in line]
        series.append(Series(name, unit, points))
    return series


def request_snapshot(out: Path, label: str) -> None:
    """Ask the traced exporter for a heap snapshot (traced_exporter.py)."""
    (out / f"take-{label}").touch()


def wait_for_file(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # the exporter's watcher takes a snapshot within a tick or two
    return path.exists()


def heap_growth(out: Path, top: int = 12) -> None:
    """Top growth by line from the snapshot at the end of the warm-up to the last."""
    first, last = out / "heap-warm.snapshot", out / "heap-end.snapshot"
    if not (first.exists() and last.exists()):
        print("heap growth by line: the snapshots were not taken")
        return
    old, new = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last))
    diff = new.compare_to(old, "lineno")
    total = sum(d.size_diff for d in diff) / 1024
    print(
        f"Python heap growth by line, end of warm-up to end (tracemalloc, top {top}; "
        f"all lines {total:+.0f} KiB):"
    )
    for stat in diff[:top]:
        frame = stat.traceback[0]
        where = f"{os.path.relpath(frame.filename)}:{frame.lineno}"
        print(f"  {stat.size_diff / 1024:>+9.1f} KiB {stat.count_diff:>+7} blocks  {where}")


# -- the run --------------------------------------------------------------------------


@dataclass
class Fault:
    at: float
    what: str
    act: Callable[[], str]  # returns what happened, for the report
    done: bool = False


def namespace_target(name: str, state: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "backend": "namespace", "namespace": {"state_dir": state}, **more}


def chaos_config(state: str, engines: Any, changed: bool) -> dict[str, Any]:
    """The chaos mix; `changed`: the Docker target with another jitter (a reload that
    retires its prober and makes a new one)."""
    image = {"image": "sandbox-exporter/busybox:local", "pull_policy": "never"}
    return {
        "defaults": {"jitter": "10%"},
        "targets": [
            namespace_target(
                "floor", state, interval="1s", burst={"concurrency": 5, "interval": "10s"}
            ),
            {
                "name": "docker",
                "backend": "docker",
                "interval": "1s",
                "jitter": "20%" if changed else "10%",
                **image,
                "docker": {"base_url": engines.docker_url},
            },
            {
                "name": "podman",
                "backend": "podman",
                "interval": "2s",
                **image,
                "podman": {"base_url": engines.podman_url},
            },
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chaos", action="store_true", help="the mixed load with faults")
    parser.add_argument("--targets", type=int, default=50, help="namespace targets (not --chaos)")
    parser.add_argument("--interval", default="2s", help="their interval (not --chaos)")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="minutes left out of the slopes")
    parser.add_argument("--no-heap", action="store_true", help="no tracemalloc, no malloc figures")
    parser.add_argument(
        "--reload-every", type=float, default=RELOAD_EVERY, help="seconds between reloads (--chaos)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="for the exporter's environment (MALLOC_ARENA_MAX=2)",
    )
    parser.add_argument(
        "--malloc-trim",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="malloc_trim(0) in the exporter this often (an experiment)",
    )
    args = parser.parse_args()
    duration = args.minutes * 60
    warmup = args.warmup * 60 if args.warmup * 120 <= duration else duration / 3
    launcher = ["-m", "sandbox_exporter"]
    state = tempfile.mkdtemp(prefix="soak-")
    heap = Path(tempfile.mkdtemp(prefix="soak-heap-"))
    if not args.no_heap:
        launcher = [
            str(Path(__file__).with_name("traced_exporter.py")),
            "--out",
            str(heap),
            "--malloc-trim",
            str(args.malloc_trim),
            "--",
        ]
    env = dict(item.split("=", 1) for item in args.env)
    # SIGTERM (from `timeout`, say) ends the soak through its `finally`s: nothing is left running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    engines: Any = None
    try:
        if args.chaos:
            from benchmarks.engines import PrivateEngines

            engines = PrivateEngines()
            config = chaos_config(state, engines, changed=False)
            what = (
                "chaos: namespace every 1 s with a burst of 5 every 10 s, Docker every 1 s, "
                f"Podman every 2 s; a reload every {args.reload_every:g} s (every second one "
                "changes the Docker target), the web process SIGKILLed, dockerd SIGKILLed "
                "and restarted 15 s later, the Podman service frozen for 20 s"
            )
        else:
            config = {
                "defaults": {"interval": args.interval},
                "targets": [namespace_target(f"t{i}", state) for i in range(args.targets)],
            }
            what = f"{args.targets} namespace targets every {args.interval}"
        return soak(args, what, config, engines, launcher, env, warmup, state, heap)
    finally:
        if engines is not None:
            engines.stop()
        shutil.rmtree(heap, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def soak(
    args: argparse.Namespace,
    what: str,
    config: dict[str, Any],
    engines: Any,
    launcher: list[str],
    env: dict[str, str],
    warmup: float,
    state: str,
    heap: Path,
) -> int:
    duration = args.minutes * 60
    process = ExporterProcess(
        config,
        launcher=launcher,
        env=env,
        keep=lambda e: (
            e.get("level") in ("warning", "error")
            or e.get("event") in KEPT_EVENTS
            or e.get("event") == "unparsed"
        ),
    )
    began = time.monotonic()
    offset = process.started - began  # the traced exporter's clock starts about then
    happened: list[str] = []
    faults: list[Fault] = []
    reloads = Counter[str]()

    def at(fraction: float, what: str, act: Callable[[], str]) -> None:
        faults.append(Fault(began + fraction * duration, what, act))

    if args.chaos:

        def kill_web() -> str:
            pid = web_process(process.proc.pid)
            if pid is None:
                return "no web process to kill"
            os.kill(pid, signal.SIGKILL)
            return f"web process {pid} SIGKILLed"

        def kill_dockerd() -> str:
            engines.kill_dockerd()
            at_restart = time.monotonic() + 15 - began
            at(
                at_restart / duration,
                "dockerd restart",
                lambda: f"dockerd started again, answering after {engines.start_dockerd():.1f} s",
            )
            return "dockerd SIGKILLed"

        def freeze_podman() -> str:
            engines.freeze_podman()
            thaw = (time.monotonic() + 20 - began) / duration
            at(thaw, "podman thaw", lambda: (engines.thaw_podman(), "Podman service thawed")[1])
            return "Podman service frozen (SIGSTOP)"

        at(0.2, "web kill", kill_web)
        at(0.4, "dockerd kill", kill_dockerd)
        at(0.6, "podman freeze", freeze_podman)

    series = {
        key: Series(name, unit)
        for key, name, unit in (
            ("rss", "exporter RSS", "MB"),
            ("uss", "exporter USS", "MB"),
            ("threads", "exporter threads", ""),
            ("fds", "exporter open files", ""),
            ("web_rss", "web process RSS", "MB"),
            ("web_uss", "web process USS", "MB"),
            ("web_threads", "web process threads", ""),
            ("web_fds", "web process open files", ""),
        )
    }
    scrapes = scrape_errors = 0
    tracing, warm_asked = not args.no_heap, False
    next_scrape = next_sample = began
    next_reload = began + args.reload_every
    metrics = ""
    try:
        while (now := time.monotonic()) - began < duration:
            for fault in faults:
                if not fault.done and now >= fault.at:
                    fault.done = True
                    happened.append(f"{(now - began) / 60:6.2f} min  {fault.act()}")
            if tracing and not warm_asked and now - began >= max(warmup - 30, warmup / 2):
                # before the slope's window: the snapshot's own garbage is not read as growth
                request_snapshot(heap, "warm")
                warm_asked = True
            if args.chaos and now >= next_reload:
                changed = reloads["sent"] % 2 == 0
                process.write_config(chaos_config(state, engines, changed=changed))
                os.kill(process.proc.pid, signal.SIGHUP)
                reloads["sent"] += 1
                next_reload += args.reload_every
            if now >= next_scrape:
                try:
                    request = urllib.request.Request(
                        f"http://{process.address}/metrics", headers={"Accept": SCRAPE_ACCEPT}
                    )
                    with urllib.request.urlopen(request, timeout=10) as page:  # noqa: S310
                        page.read()
                    scrapes += 1
                except OSError:
                    scrape_errors += 1
                next_scrape += SCRAPE_EVERY
            if now >= next_sample:
                t = now - began
                for key, value in process_sample(process.proc.pid).items():
                    series[key].points.append((t, value))
                web = web_process(process.proc.pid)
                if web is not None:
                    with contextlib.suppress(OSError):
                        for key, value in process_sample(web).items():
                            series[f"web_{key}"].points.append((t, value))
                next_sample += SAMPLE_EVERY
            time.sleep(0.2)  # the soak's own tick: faults, reloads, scrapes and samples
        if tracing:
            request_snapshot(heap, "end")
            wait_for_file(heap / "heap-end.snapshot", 120)
        with urllib.request.urlopen(f"http://{process.address}/metrics", timeout=10) as page:
            metrics = page.read().decode()
    finally:
        code = process.stop()
    left = {"namespace": os.listdir(state), **(engines.managed() if engines else {})}

    print(f"soak: {what}, for {args.minutes:g} min; /metrics scraped every {SCRAPE_EVERY:g} s")
    print(machine_line())
    print(
        f"exporter: {' '.join(launcher[:1])}{' under tracemalloc' if not args.no_heap else ''}"
        f"{', environment ' + ' '.join(args.env) if args.env else ''}"
        f"{f', malloc_trim every {args.malloc_trim:g} s' if args.malloc_trim else ''}"
    )
    for line in happened:
        print(f"  {line}")
    if args.chaos:
        done = [e for e in process.logs if e.get("event") == "config reloaded"]
        with_change = sum(1 for e in done if e.get("changed"))
        hups = sum(1 for e in process.logs if e.get("signal") == "SIGHUP")
        print(
            f"  reloads: {reloads['sent']} sent, {hups} SIGHUPs seen, {len(done)} done, "
            f"{with_change} of them with a target changed"
        )
    troubles = Counter(  # digits masked: APScheduler's messages carry times
        re.sub(r"\d+", "#", str(e.get("event")))
        for e in process.logs
        if e.get("level") in ("warning", "error")
    )
    unparsed = [e["line"] for e in process.logs if e.get("event") == "unparsed"]
    if unparsed:
        mangled = sum(1 for line in unparsed if "config reloaded" in line)
        print(f"lines not JSON on the exporter's stderr: {len(unparsed)} ({mangled} hold a reload)")
    if troubles:
        print(
            "warnings and errors logged: "
            + ", ".join(f"{k!r} {v}" for k, v in troubles.most_common())
        )
    print(
        "lifecycles: " + by_backend(counted(metrics, "sandbox_probes_total", "backend", "result"))
    )
    burst = counted(metrics, "sandbox_burst_sandboxes_total", "backend", "result")
    if burst:
        print(f"burst sandboxes: {by_backend(burst)}")
    for name, title in (
        ("sandbox_probe_failures_total", "failures"),
        ("sandbox_burst_sandbox_failures_total", "burst failures"),
    ):
        found = counted(metrics, name, "backend", "phase", "reason")
        if found:
            listed = ", ".join(f"{'/'.join(k)} {v}" for k, v in sorted(found.items()))
            print(f"{title} by backend/phase/reason: {listed}")
    skipped = counted(metrics, "sandbox_probe_skipped_total", "backend")
    bursts_skipped = counted(metrics, "sandbox_burst_skipped_total", "backend")
    print(
        f"skipped: {dict(skipped) or 0} (bursts: {dict(bursts_skipped) or 0}); scrapes: "
        f"{scrapes} ({scrape_errors} failed); exit status {code}"
    )
    print("left behind: " + ", ".join(f"{k} {len(v)}" for k, v in left.items()))
    mismatches = [e for e in process.logs if e.get("reason") == "exec_mismatch"]
    for entry in mismatches[:5]:
        print(f"  exec_mismatch: {entry.get('sandbox')}: {entry.get('error')}")
    print(f"warm-up: the first {warmup / 60:g} min are left out of the slopes")
    print(f"exporter RSS per minute (MB): {per_minute(series['rss'])}")
    rows = list(series.values())
    if not args.no_heap and (heap / "heap.jsonl").exists():
        rows += heap_series(heap, offset)
    table(rows, warmup)
    if not args.no_heap:
        heap_growth(heap)
    return 0 if code == 0 and not any(left.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
