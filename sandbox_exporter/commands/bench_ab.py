"""`bench --ab A,B`: two targets measured in alternating blocks in one run.

Run one after the other, A's and B's figures would also differ by whatever the
machine did in between (another job, a cache warming, a CPU clocking down), and a
comparison could not tell that from the change under test. Alternated in blocks
(A x block, B x block, A x block, ...), both sides meet the same drift. Each
iteration is the same lifecycle `bench` runs (BackendRun.measure); B is compared
with A as `bench compare` compares two reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sandbox_exporter.backends.base import Backend
from sandbox_exporter.commands.bench import BackendRun, BenchError, BenchReport, Progress
from sandbox_exporter.config import Target
from sandbox_exporter.probing.calls import Calls
from sandbox_exporter.results import error_message


def ab_targets(targets: list[Target], names: str) -> tuple[Target, Target]:
    """The two targets `--ab A,B` names, from the config's."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if len(wanted) != 2 or wanted[0] == wanted[1]:
        raise BenchError(f"--ab: name two different targets, as A,B; got {names!r}")
    by_name = {t.name: t for t in targets}
    missing = [n for n in wanted if n not in by_name]
    if missing:
        known = ", ".join(by_name) or "none"
        raise BenchError(f"--ab: no target named {', '.join(missing)} (targets: {known})")
    return by_name[wanted[0]], by_name[wanted[1]]


def run_ab(
    a: Target,
    b: Target,
    *,
    iterations: int,
    block: int,
    warmup: int,
    instance: str,
    cancel: threading.Event,
    progress: Progress | None = None,
    injected: dict[str, Backend[Any]] | None = None,
    make_run: Callable[[Target], BackendRun] = BackendRun,
) -> BenchReport:
    """`iterations` lifecycles of each, alternating `block` of A and `block` of B,
    after `warmup` uncounted ones of each. A side whose backend does not answer is
    skipped, and so is the comparison."""
    report = BenchReport(iterations=iterations, warmup=warmup, runs=[], started_at=time.time())
    runs = [make_run(a), make_run(b)]
    report.runs = runs
    calls: list[Calls] = []
    try:
        for run in runs:
            try:
                calls.append(run.open((injected or {}).get(run.target.name)))
            except Exception as exc:  # noqa: BLE001 - an absent backend is reported, not raised
                run.skipped = error_message(exc)
        if any(run.skipped for run in runs):
            return report
        for run, call in zip(runs, calls, strict=True):
            for _ in range(warmup):
                if cancel.is_set():
                    break
                run.warmup_failures += 0 if run.measure(call, instance, cancel).success else 1
        done, total = 0, 2 * iterations
        while not cancel.is_set() and any(len(run.results) < iterations for run in runs):
            for run, call in zip(runs, calls, strict=True):
                for _ in range(min(block, iterations - len(run.results))):
                    if cancel.is_set():
                        break
                    done += 1
                    if progress is not None:
                        progress(f"{runs[0].target.name}/{runs[1].target.name}", done, total)
                    outcome = run.measure(call, instance, cancel)
                    if not outcome.cancelled:
                        run.add(outcome)
    finally:
        for call in calls:
            call.close()
        report.finished_at = time.time()
        report.interrupted = cancel.is_set()
    return report


def sides(report_json: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An --ab report's JSON as two single-backend reports, A's and B's."""
    first, second = report_json["backends"]
    return {**report_json, "backends": [first]}, {**report_json, "backends": [second]}
