"""`sandbox-exporter bench`: the daemon's measurement, run now, N times, per backend.

Same code path as the daemon: targets come from the same config models and
each iteration is one `LifecycleRunner.run`. Nothing here times anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from sandbox_exporter import backends
from sandbox_exporter.backends.base import Backend, BackendKind, Found
from sandbox_exporter.config import Config, ConfigError, Target, parse_config
from sandbox_exporter.probing.calls import Calls
from sandbox_exporter.probing.lifecycle import LifecycleRunner
from sandbox_exporter.probing.percentiles import nearest_rank
from sandbox_exporter.probing.prober import calls_for
from sandbox_exporter.results import LIFECYCLE, ProbeResult, error_message


class BenchError(ValueError):
    """Bad input to bench; the message names the option."""


def parse_backend_names(text: str) -> list[str]:
    """`-b " Docker, k8s "` -> ["docker", "kubernetes"]; unknown names are an error."""
    names: list[str] = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        name = backends.canonical(raw)
        if name is None:
            raise BenchError(f"-b/--backends: {backends.UnknownBackend(raw.strip())}")
        if name not in names:
            names.append(name)
    if not names:
        raise BenchError("-b/--backends: no backend named")
    return names


def bench_targets(
    config: Config | None, names: Sequence[str] | None, image: str | None
) -> list[Target]:
    """Targets to bench: the config's (filtered by backend name), else one per backend:
    those named, or every local one (a remote control plane only when named: a
    kubeconfig lying around is no reason to reach out to a cluster), each with the
    options `targets: auto` would find for it here."""
    if config is not None:
        targets = [t for t in config.targets if names is None or t.backend in names]
        if image is not None:
            targets = [t.model_copy(update={"image": image}) for t in targets]
        if not targets:
            raise BenchError(
                f"-b/--backends: no target in {config.source} uses {', '.join(names or [])}"
            )
        return targets
    if names:
        kinds = [backends.kind(name) for name in names]
    else:
        kinds = [k for k in backends.kinds() if not k.capabilities.remote]
    raw: list[dict[str, Any]] = []
    for kind in kinds:
        target: dict[str, Any] = {"name": kind.name, "backend": kind.name}
        found = kind.discover() if kind.discover is not None else None
        if isinstance(found, Found):
            target[kind.name] = found.options
        elif not _has_defaults(kind):  # say, a micro-VM's kernel: only a config names it
            if names:
                why = f" was not found here: {found.reason}." if found is not None else ":"
                raise BenchError(
                    f"-b/--backends: {kind.name}{why} Name its target in a "
                    "config and pass it with -c"
                )
            continue
        raw.append(target)
    defaults: dict[str, Any] = {} if image is None else {"image": image}
    try:
        return list(parse_config({"defaults": defaults, "targets": raw}, source="bench").targets)
    except ConfigError as exc:
        raise BenchError(str(exc)) from None


def _has_defaults(kind: BackendKind[Any]) -> bool:
    """A target of this kind needs no options block (every option has a default)."""
    try:
        kind.options.model_validate({})
    except ValidationError:
        return False
    return True


class Outcome(Protocol):
    """What one iteration gives: a lifecycle's result, or a burst's."""

    @property
    def success(self) -> bool: ...

    @property
    def cancelled(self) -> bool: ...


@dataclass
class BackendRun:
    """One backend's iterations, each one lifecycle (`bench_burst` makes each a burst)."""

    target: Target
    skipped: str | None = None
    results: list[ProbeResult] = field(default_factory=list)
    warmup_failures: int = 0
    clock: Callable[[], float] = time.monotonic  # what times the phases (tests: a fake)
    engine: dict[str, str] = field(default_factory=dict)  # what the backend says of itself

    def open(self, injected: Backend[Any] | None) -> Calls:
        """The target's calls, its backend pinged and described; skipped (and None
        returned) when it does not answer."""
        target = self.target
        calls = calls_for(target, injected)
        try:
            calls.ping(timeout=target.timeouts.create)
        except BaseException:
            calls.close()
            raise
        self.engine = calls.describe(
            target.image if target.uses_image else None, timeout=target.timeouts.create
        )
        return calls

    def measure(self, calls: Calls, instance: str, cancel: threading.Event) -> Outcome:
        """One iteration: a lifecycle, by the daemon's runner."""
        return LifecycleRunner(calls, self.target, instance, clock=self.clock).run(cancel=cancel)

    def add(self, outcome: Outcome) -> None:
        """Keep a measured (not warm-up, not cancelled) iteration."""
        assert isinstance(outcome, ProbeResult)
        self.results.append(outcome)

    @property
    def successes(self) -> list[ProbeResult]:
        return [r for r in self.results if r.success]

    @property
    def failures(self) -> list[ProbeResult]:
        return [r for r in self.results if not r.success and not r.cancelled]

    def time_to_exec(self, p: float) -> float | None:
        """Create + start + exec, over the successful iterations (seconds)."""
        values = [tte for r in self.successes if (tte := r.time_to_exec) is not None]
        return nearest_rank(values, p) if values else None

    def percentile(self, p: float) -> dict[str, float]:
        """Per phase, plus `total`, over the successful iterations (seconds)."""
        ok = self.successes
        if not ok:
            return {}
        out = {str(ph): nearest_rank([r.durations[ph] for r in ok], p) for ph in LIFECYCLE}
        out["total"] = nearest_rank([r.total or 0.0 for r in ok], p)
        return out


@dataclass
class BenchReport:
    iterations: int
    warmup: int
    runs: list[BackendRun]
    started_at: float
    finished_at: float = 0.0
    interrupted: bool = False
    config_digest: str | None = None  # sha256 of the config file, when one was given


Progress = Callable[[str, int, int], None]


def run_bench(
    targets: Iterable[Target],
    *,
    iterations: int,
    warmup: int,
    instance: str,
    cancel: threading.Event,
    progress: Progress | None = None,
    injected: dict[str, Backend[Any]] | None = None,
    make_run: Callable[[Target], BackendRun] = BackendRun,
) -> BenchReport:
    """Run every target `warmup + iterations` times, one after another; `make_run`
    says what an iteration is (BackendRun: one lifecycle).

    Backends run in turn, not in parallel, so they do not compete for the
    machine and each one's figures are its own. `cancel` stops at the next
    phase boundary; the sandbox in flight is still removed.
    """
    report = BenchReport(iterations=iterations, warmup=warmup, runs=[], started_at=time.time())
    for target in targets:
        run = make_run(target)
        report.runs.append(run)
        if cancel.is_set():
            run.skipped = "interrupted"
            continue
        try:
            calls = run.open((injected or {}).get(target.name))
        except Exception as exc:  # noqa: BLE001 - an absent backend is reported, not raised
            run.skipped = error_message(exc)
            continue
        try:
            for index in range(warmup + iterations):
                if cancel.is_set():
                    break
                if progress is not None:
                    progress(target.name, index + 1, warmup + iterations)
                outcome = run.measure(calls, instance, cancel)
                if index < warmup:
                    run.warmup_failures += 0 if outcome.success else 1
                elif not outcome.cancelled:
                    run.add(outcome)
        finally:
            calls.close()
    report.finished_at = time.time()
    report.interrupted = cancel.is_set()
    return report
