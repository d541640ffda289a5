"""`sandbox-exporter bench`: options in, table or JSON out, every sandbox cleaned up."""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from sandbox_exporter.commands.bench import (
    BackendRun,
    BenchError,
    BenchReport,
    bench_targets,
    parse_backend_names,
    run_bench,
)
from sandbox_exporter.commands.bench_ab import ab_targets, run_ab, sides
from sandbox_exporter.commands.bench_burst import BurstBackendRun, burst_settings, with_burst
from sandbox_exporter.commands.bench_burst_report import render_burst_json, render_burst_table
from sandbox_exporter.commands.bench_compare import (
    REGRESSED,
    ReportError,
    load_report,
    parse_threshold,
)
from sandbox_exporter.commands.bench_gate import comparison
from sandbox_exporter.commands.bench_report import full_json, render_json, render_table
from sandbox_exporter.commands.bench_stats import MissingScipy, scipy_stats
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


def _comparing(args: argparse.Namespace) -> None:
    """--baseline's and --ab's checks, before anything runs."""
    option = "--baseline" if args.baseline is not None else "--ab"
    if args.baseline is not None and args.ab is not None:
        raise BenchError("--baseline and --ab: one comparison at a time")
    if args.concurrency is not None:
        raise BenchError(f"{option} compares single lifecycles, not bursts (--concurrency)")
    if args.json == "-":
        raise BenchError(f"with {option}, --json needs a FILE: the comparison goes to stdout")
    parse_threshold(args.threshold)
    scipy_stats()  # MissingScipy now, not after the runs


def _baseline(args: argparse.Namespace) -> dict[str, Any] | None:
    """The report to compare with, read and checked before anything runs."""
    if args.baseline is None and args.ab is None:
        return None
    _comparing(args)
    return load_report(args.baseline) if args.baseline is not None else None


def bench(args: argparse.Namespace) -> int:
    try:
        burst = burst_settings(args.concurrency, args.stagger)
        config = load_config(args.config_file, instance=args.instance) if args.config_file else None
        names = parse_backend_names(args.backends) if args.backends else None
        targets = bench_targets(config, names, args.image)
        if burst is not None:
            targets = with_burst(targets, burst)
        baseline = _baseline(args)
        pair = ab_targets(targets, args.ab) if args.ab is not None else None
    except (ConfigError, BenchError, ReportError, ValueError, MissingScipy) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ConfigError) else 2
    instance = config.instance if config is not None else (args.instance or default_instance())
    progress = ProgressBar(sys.stderr)

    def work(cancel: threading.Event) -> BenchReport:
        if pair is not None:
            return run_ab(
                *pair,
                iterations=args.iterations,
                block=args.block,
                warmup=args.warmup,
                instance=instance,
                cancel=cancel,
                progress=progress,
            )
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

    report = interruptible(work, pair or targets, on_interrupt)
    progress.clear()
    if report is None:
        print("bench: interrupted before any result; cleanup may still be running", file=sys.stderr)
        return INTERRUPTED
    if args.config_file:
        report.config_digest = hashlib.sha256(Path(args.config_file).read_bytes()).hexdigest()
    as_json = render_json(report) if burst is None else render_burst_json(report)
    if args.json not in (None, "-"):
        Path(args.json).write_text(as_json + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    regressed = False
    if pair is not None and not any(run.skipped for run in report.runs):
        a, b = sides(full_json(report))
        text, regressed = comparison(a, b, args, (pair[0].name, pair[1].name))
    elif pair is not None:
        text = render_table(report)  # a side did not answer: its row says why
    elif baseline is not None:
        names_shown = (args.baseline, args.json or "this run")
        text, regressed = comparison(baseline, full_json(report), args, names_shown)
    elif args.json == "-":
        text = as_json + "\n"
    else:
        text = render_table(report) if burst is None else render_burst_table(report)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if report.interrupted:
        return INTERRUPTED
    if regressed:
        return REGRESSED
    return 0 if succeeded(report, explicit=names is not None or config is not None) else 1


def succeeded(report: BenchReport, *, explicit: bool) -> bool:
    """Every measured iteration succeeded, and no backend the user asked for was skipped."""
    measured = [r for r in report.runs if r.skipped is None]
    if not measured or any(r.failures for r in measured):
        return False
    return not (explicit and len(measured) < len(report.runs))
