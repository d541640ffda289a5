"""`sandbox-exporter bench`: options in, table or JSON out, every sandbox cleaned up."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
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
from sandbox_exporter.config import ConfigError, Target, default_instance, load_config

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


def interruptible(
    work: Callable[[threading.Event], BenchReport],
    targets: Sequence[Target],
    on_interrupt: Callable[[], None] = lambda: None,
) -> BenchReport | None:
    """`work(cancel)` on a thread. Ctrl-C sets `cancel` (each lifecycle in flight stops
    at its next phase and removes its sandbox) and waits as long as the targets' runs
    take to wind down; None when the work did not finish by then."""
    cancel = threading.Event()
    finished = threading.Event()
    outcome: list[BenchReport] = []

    def run() -> None:
        # Ctrl-C only for the main thread: a signal the kernel hands to another thread
        # does not wake the main thread from its wait, so the bench would run on to its
        # end. The threads this one starts (a burst's) inherit the mask.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            outcome.append(work(cancel))
        finally:
            finished.set()

    # Joining a thread after Ctrl-C interrupted an earlier join can return at once
    # (CPython gh-90882), so the main thread waits on an Event instead.
    threading.Thread(target=run, name="bench", daemon=True).start()
    try:
        finished.wait()
    except KeyboardInterrupt:
        cancel.set()
        on_interrupt()
        finished.wait(timeout=max(t.timeouts.after_cancel for t in targets))
        if outcome:  # a Ctrl-C as the last run ended still means the user stopped it
            outcome[0].interrupted = True
    return outcome[0] if outcome else None


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
    progress = ProgressBar(sys.stderr)

    def work(cancel: threading.Event) -> BenchReport:
        return run_bench(
            targets,
            iterations=args.iterations,
            warmup=args.warmup,
            instance=instance,
            cancel=cancel,
            progress=progress,
            make_run=BackendRun if burst is None else BurstBackendRun,
        )

    def on_interrupt() -> None:
        progress.clear()
        what = "the sandbox" if burst is None else "the sandboxes"
        print(f"interrupted: removing {what} in flight...", file=sys.stderr)

    report = interruptible(work, targets, on_interrupt)
    progress.clear()
    if report is None:
        print("bench: interrupted before any result; cleanup may still be running", file=sys.stderr)
        return INTERRUPTED
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
