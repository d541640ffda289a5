"""`bench --baseline` and `bench compare`: two bench reports (the JSON of `bench
--json`), backend by backend, series by series (each phase, time to exec, the
total), with a verdict each (bench_stats.py), the failure rates, and what else
differs between the two runs besides the thing under test."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox_exporter.commands.bench_stats import (
    Change,
    FailureChange,
    compare,
    failure_change,
)
from sandbox_exporter.results import LIFECYCLE

SERIES = [*(str(p) for p in LIFECYCLE), "time_to_exec", "total"]
# what a run records of where it ran: a difference in any is listed by `compare`
MACHINE_KEYS = ("system", "machine", "cpu_model", "cpus", "python", "exporter")
BACKEND_KEYS = ("backend", "image", "runtime", "config_digest")
REGRESSED = 3  # the exit status when something is slower or fails more often


class ReportError(ValueError):
    """A report that cannot be compared: says which file and what is wrong."""


def load_report(path: str | Path) -> dict[str, Any]:
    try:
        report = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ReportError(f"{path}: cannot read it: {exc.strerror}") from None
    except ValueError as exc:
        raise ReportError(f"{path}: not JSON ({exc}); write one with `bench --json`") from None
    if not isinstance(report, dict) or not isinstance(report.get("backends"), list):
        raise ReportError(f"{path}: no `backends` list; write one with `bench --json`")
    for index, backend in enumerate(report["backends"]):
        if not isinstance(backend, dict) or "target" not in backend:
            raise ReportError(f"{path}: backends[{index}] has no `target`")
        if backend.get("concurrency"):
            raise ReportError(
                f"{path}: backends[{index}] is a burst report; compare single lifecycles"
            )
    return report


def series(backend: dict[str, Any]) -> dict[str, list[float]]:
    """Each series' durations (seconds) over the successful samples of one backend."""
    out: dict[str, list[float]] = {name: [] for name in SERIES}
    for sample in backend.get("samples", []):
        if not sample.get("success"):
            continue
        for phase, seconds in sample.get("durations_seconds", {}).items():
            if phase in out:
                out[phase].append(float(seconds))
        for name, key in (("time_to_exec", "time_to_exec_seconds"), ("total", "total_seconds")):
            if sample.get(key) is not None:
                out[name].append(float(sample[key]))
    return out


def _failed(backend: dict[str, Any]) -> tuple[int, int]:
    samples = backend.get("samples", [])
    return sum(1 for s in samples if not s.get("success")), len(samples)


@dataclass
class BackendComparison:
    old_target: str
    new_target: str
    changes: dict[str, Change]
    failures: FailureChange | None
    missing: list[str] = field(default_factory=list)  # series with no sample on a side

    @property
    def slower(self) -> list[str]:
        return [name for name, change in self.changes.items() if change.verdict == "slower"]

    @property
    def regressed(self) -> bool:
        return bool(self.slower) or (self.failures is not None and self.failures.rose)


@dataclass
class Comparison:
    threshold: float
    backends: list[BackendComparison]
    differences: list[str]  # what differs between the runs, as "what: old -> new"
    unmatched: list[str]  # backends in one report only

    @property
    def regressed(self) -> bool:
        return any(b.regressed for b in self.backends)


Pair = tuple[dict[str, Any], dict[str, Any]]  # a backend's report in the old run and the new


def _pairs(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[Pair], list[str]]:
    """Backends paired by target name; two single-backend reports pair as they are
    (the runs of `--ab`, or one target renamed)."""
    measured = [
        [b for b in report["backends"] if b.get("skipped") is None] for report in (old, new)
    ]
    if len(measured[0]) == 1 and len(measured[1]) == 1:
        return [(measured[0][0], measured[1][0])], []
    by_name = {b["target"]: b for b in measured[1]}
    pairs = [(b, by_name[b["target"]]) for b in measured[0] if b["target"] in by_name]
    paired = {b["target"] for b, _ in pairs}
    unmatched = sorted({b["target"] for side in measured for b in side} - paired)
    return pairs, unmatched


def _shown(value: object) -> str:
    return "(none)" if value is None else str(value)


def differences(old: dict[str, Any], new: dict[str, Any], pairs: list[Pair]) -> list[str]:
    """What differs between two runs besides their durations: the machine, the
    exporter, and each paired backend's engine settings."""
    out = []
    for key in MACHINE_KEYS:
        a, b = old.get("machine", {}).get(key), new.get("machine", {}).get(key)
        if a != b:
            out.append(f"machine {key}: {_shown(a)} -> {_shown(b)}")
    if old.get("config_digest") != new.get("config_digest"):
        out.append(
            f"config: {_shown(old.get('config_digest'))} -> {_shown(new.get('config_digest'))}"
        )
    for a, b in pairs:
        for key in BACKEND_KEYS:
            if a.get(key) != b.get(key):
                out.append(f"{a['target']} {key}: {_shown(a.get(key))} -> {_shown(b.get(key))}")
        engines = (a.get("engine") or {}, b.get("engine") or {})
        for key in sorted(set(engines[0]) | set(engines[1])):
            if engines[0].get(key) != engines[1].get(key):
                out.append(f"{a['target']} {key}: {engines[0].get(key)} -> {engines[1].get(key)}")
    return out


def compare_reports(old: dict[str, Any], new: dict[str, Any], threshold: float) -> Comparison:
    pairs, unmatched = _pairs(old, new)
    compared = []
    for a, b in pairs:
        series_a, series_b = series(a), series(b)
        changes = {}
        missing = []
        for name in SERIES:
            if series_a[name] and series_b[name]:
                changes[name] = compare(series_a[name], series_b[name], threshold)
            else:
                missing.append(name)
        (old_failed, old_runs), (new_failed, new_runs) = _failed(a), _failed(b)
        failures = (
            failure_change(old_failed, old_runs, new_failed, new_runs)
            if old_runs and new_runs
            else None
        )
        compared.append(BackendComparison(a["target"], b["target"], changes, failures, missing))
    return Comparison(threshold, compared, differences(old, new, pairs), unmatched)


def parse_threshold(text: str) -> float:
    """`10%` (or 0.1): how much slower the median must surely be to count as slower."""
    value = text.strip()
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"--threshold: expected a percentage such as 10%, got {text!r}") from None
    if not 0 <= number < 10:
        raise ValueError(f"--threshold: expected a percentage from 0% up, got {text!r}")
    return number
