"""`sandbox-exporter bench`: options in, table or JSON out, every sandbox cleaned up."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import TextIO

from sandbox_exporter.commands.bench import (
    BackendRun,
    BenchError,
    BenchReport,
    bench_targets,
    parse_backend_names,
    run_bench,
)
from sandbox_exporter.commands.bench_burst import BurstBackendRun, burst_settings, with_burst
from sandbox_exporter.commands.bench_burst_report import render_burst_json, render_burst_table
from sandbox_exporter.commands.bench_report import render_json, render_table
from sandbox_exporter.config import ConfigError, default_instance, load_config

INTERRUPTED = 130


class ProgressBar:
    """A one-line bar on a terminal; silent when stderr is not one."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, name: str, done: int, total: int) -> None:
        if self.enabled:
            filled = int(30 * done / total)
            bar = "#" * filled + "." * (30 - filled)
            self.stream.write(f"\r{name:<16} [{bar}] {done}/{total}")
            self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def bench(args: argparse.Namespace) -> int:
    try:
        burst = burst_settings(args.concurrency, args.stagger)
        config = load_config(args.config_file, instance=args.instance) if args.config_file else None
        names = parse_backend_names(args.backends) if args.backends else None
        targets = bench_targets(config, names, args.image)
        if burst is not None:
            targets = with_burst(targets, burst)
    except (ConfigError, BenchError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, BenchError) else 1
    instance = config.instance if config is not None else (args.instance or default_instance())
    cancel = threading.Event()
    progress = ProgressBar(sys.stderr)
    outcome: list[BenchReport] = []

    finished = threading.Event()

    def work() -> None:
        try:
            outcome.append(
                run_bench(
                    targets,
                    iterations=args.iterations,
                    warmup=args.warmup,
                    instance=instance,
                    cancel=cancel,
                    progress=progress,
                    make_run=BackendRun if burst is None else BurstBackendRun,
                )
            )
        finally:
            finished.set()

    # Joining a thread after Ctrl-C interrupted an earlier join can return at once
    # (CPython gh-90882), so the main thread waits on an Event instead.
    threading.Thread(target=work, name="bench", daemon=True).start()
    try:
        finished.wait()
    except KeyboardInterrupt:
        # Each lifecycle in flight stops at its next phase and removes its sandbox.
        cancel.set()
        progress.clear()
        what = "the sandbox" if burst is None else "the sandboxes"
        print(f"interrupted: removing {what} in flight...", file=sys.stderr)
        finished.wait(timeout=max(t.timeouts.after_cancel for t in targets))
    progress.clear()
    if not outcome:
        print("bench: interrupted before any result; cleanup may still be running", file=sys.stderr)
        return INTERRUPTED
    report = outcome[0]
    if burst is None:
        text = render_json(report) + "\n" if args.json else render_table(report)
    else:
        text = render_burst_json(report) + "\n" if args.json else render_burst_table(report)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if report.interrupted:
        return INTERRUPTED
    return 0 if succeeded(report, explicit=names is not None or config is not None) else 1


def succeeded(report: BenchReport, *, explicit: bool) -> bool:
    """Every measured iteration succeeded, and no backend the user asked for was skipped."""
    measured = [r for r in report.runs if r.skipped is None]
    if not measured or any(r.failures for r in measured):
        return False
    return not (explicit and len(measured) < len(report.runs))
