"""One target's probing: its backend's calls, its no-overlap guard, its metrics, its last
result, its collector of orphans.

The scheduler calls `Prober.run`; `/probe` and the `probe` command call
`run_now`. Nothing raised by a backend or the runner leaves either: every
problem becomes a metric and a log line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import structlog

from sandbox_exporter import backends
from sandbox_exporter.backends.base import Backend, ManagedSandbox
from sandbox_exporter.config.targets import Target
from sandbox_exporter.logs import Logger
from sandbox_exporter.probing.burst import BurstRunner
from sandbox_exporter.probing.calls import Calls, Interrupt, ThreadCalls
from sandbox_exporter.probing.collector import Collector
from sandbox_exporter.probing.lifecycle import LifecycleRunner, Unreachable
from sandbox_exporter.probing.recent import RecentRuns
from sandbox_exporter.probing.recorder import Recorder
from sandbox_exporter.probing.worker import ProcessCalls
from sandbox_exporter.results import BurstResult, Phase, ProbeResult, error_message


class BackendSetupError(Exception):
    pass


def calls_for(target: Target, backend: Backend[Any] | None = None) -> Calls:
    """How this target's backend is reached: on threads, or in a worker process when
    its calls cannot be abandoned on a thread. `backend`: an object to use instead of
    building one (tests)."""
    label = target.name
    if backend is not None:
        return ThreadCalls(backend, label)
    kind = target.kind
    if not kind.capabilities.thread_safe:
        return ProcessCalls(backends.MODULES[kind.name], target.options, target.timeouts, label)
    try:
        return ThreadCalls(kind.build(target.options, target.timeouts), label)
    except ImportError as exc:
        hint = f": pip install 'sandbox-exporter[{kind.extra}]'" if kind.extra else ""
        raise BackendSetupError(
            f"the {kind.name} backend needs a package that is not installed ({exc.name}){hint}"
        ) from exc


class Prober:
    def __init__(
        self,
        target: Target,
        instance: str,
        metrics: Recorder,
        *,
        stopping: threading.Event,
        interrupt: Interrupt | None = None,
        backend: Backend[Any] | None = None,
        logger: Logger | None = None,
        guard: threading.Lock | None = None,
        recent: RecentRuns | None = None,
        sweep_at_start: bool = True,
    ) -> None:
        """`guard` is the target's no-overlap lock; a reload hands the old one on, so a
        run of the old configuration and one of the new never overlap. `recent`, the
        target's recent runs and last burst (the landing page's figures), is handed on
        likewise.

        `sweep_at_start=False` for a one-off run beside a daemon of the same instance
        (the `probe` command): the start-up sweep would take the daemon's sandbox
        in flight for an orphan."""
        self.target = target
        self.instance = instance
        self.metrics = metrics
        self.stopping = stopping
        self.interrupt = interrupt
        self.last_result: ProbeResult | None = None
        self.recent = recent if recent is not None else RecentRuns()
        self.created = time.monotonic()
        self.last_attempt: float | None = None
        self.record_results = True  # off once a reload has dropped this target's series
        self._backend = backend
        self._calls: Calls | None = None
        self._calls_lock = threading.Lock()
        self._swept = not sweep_at_start
        self.guard = guard or threading.Lock()
        self.unreachable = Unreachable()  # an engine that stays down is logged once
        self._log = (logger or structlog.get_logger("sandbox_exporter")).bind(
            target=target.name, backend=target.backend
        )
        self.collector = Collector(target, instance, self.backend_calls, metrics, self._log)
        metrics.add_target(target)

    @property
    def labels(self) -> tuple[str, str]:
        return (self.target.name, self.target.backend)

    @property
    def busy(self) -> bool:
        return self.guard.locked()

    def backend_calls(self) -> Calls:
        """The backend's calls, opened on first use (this imports the backend's SDK)."""
        with self._calls_lock:
            if self._calls is None:
                self._calls = calls_for(self.target, self._backend)
            return self._calls

    def run(self) -> ProbeResult | None:
        """A scheduled run; None (and counted as skipped) when one is already going."""
        self.last_attempt = time.monotonic()
        result = self.run_now()
        if result is None:
            self.skipped()
        return result

    def run_now(self, *, record: bool = True, logger: Logger | None = None) -> ProbeResult | None:
        """One lifecycle now, or None when this target is busy.

        `record=False` leaves the scheduled figures alone (an on-demand probe);
        `logger` receives the run's log lines too.
        """
        if not self.guard.acquire(blocking=False):
            return None
        self.metrics.running(self.target, burst=False, now=True)
        try:
            result = self._run_locked(logger)
            if record and self.record_results:
                self.metrics.record(result)
        finally:
            self.metrics.running(self.target, burst=False, now=False)
            self.guard.release()
        if record:
            self.last_result = result
            self.recent.add(result)
        return result

    def run_burst(self, *, record: bool = True) -> BurstResult | None:
        """One burst now (the target's `burst`), or None (counted as skipped) when a run
        of this target, single or burst, is going: the two never overlap."""
        if not self.guard.acquire(blocking=False):
            if record:
                self.burst_skipped()
            return None
        self.metrics.running(self.target, burst=True, now=True)
        try:
            burst = self._burst_locked()
            if record and self.record_results:
                self.metrics.record_burst(burst)
        finally:
            self.metrics.running(self.target, burst=True, now=False)
            self.guard.release()
        if record:
            self.recent.add_burst(burst)
        return burst

    def burst_skipped(self) -> None:
        self.metrics.skipped(self.target, burst=True)
        self._log.warning("burst skipped", why="a run of this target is still going")

    def skipped(self) -> None:
        self.last_attempt = time.monotonic()
        self.metrics.skipped(self.target, burst=False)
        self._log.warning("probe skipped", why="the previous run of this target is still going")

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no run is in progress (or the timeout passes; None: no bound)."""
        if not self.guard.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            return False
        self.guard.release()
        return True

    def collect_garbage(
        self, max_age: float | None = None, *, dry_run: bool = False
    ) -> list[ManagedSandbox]:
        return self.collector.collect(max_age, dry_run=dry_run)

    def collect_garbage_safely(self) -> None:
        self.collector.collect_safely()

    def close(self) -> None:
        """Close the backend now (shutdown)."""
        self._close(lambda calls: calls.close())

    def close_when_idle(self) -> None:
        """Close the backend once no run is in progress and no call is in flight."""
        self.wait_idle()
        self._close(lambda calls: calls.close_when_idle())

    def _close(self, how: Any) -> None:
        with self._calls_lock:
            calls, self._calls = self._calls, None
        if calls is not None:
            try:
                how(calls)
            except Exception as exc:  # noqa: BLE001
                self._log.warning("backend close failed", error=error_message(exc))

    # -- internals -------------------------------------------------------------

    def _prepared_calls(self) -> Calls:
        """The backend's calls, once this instance's orphans (at the first run) and
        the leftovers of earlier runs are gone."""
        calls = self.backend_calls()
        if not self._swept:
            self._swept = self.collector.sweep()
        self.collector.remove_leftovers()
        return calls

    def _remember_unremoved(self, results: Iterable[ProbeResult]) -> None:
        """Sandboxes whose removal failed: the next run tries again."""
        for result in results:
            if any(f.phase is Phase.REMOVE for f in result.cleanup_failures):
                self.collector.remember(result.sandbox)

    def _burst_locked(self) -> BurstResult:
        name, backend = self.target.name, self.target.backend
        try:
            burst = BurstRunner(
                self._prepared_calls(),
                self.target,
                self.instance,
                logger=self._log,
                unreachable=self.unreachable,
            ).run(cancel=self.stopping, interrupt=self.interrupt)
        except Exception as exc:  # noqa: BLE001 - a bug or setup error must not kill the job
            self._log.error("burst could not run", error=error_message(exc))
            failed = ProbeResult.not_run(name, backend, error_message(exc), time.time())
            return BurstResult(
                name, backend, "", "", failed.started_at, failed.finished_at, preflight=failed
            )
        self._remember_unremoved(burst.results)
        return burst

    def _run_locked(self, logger: Logger | None) -> ProbeResult:
        log = (
            logger.bind(target=self.target.name, backend=self.target.backend)
            if logger
            else self._log
        )
        try:
            result = LifecycleRunner(
                self._prepared_calls(),
                self.target,
                self.instance,
                logger=log,
                unreachable=self.unreachable,
            ).run(cancel=self.stopping, interrupt=self.interrupt)
        except Exception as exc:  # noqa: BLE001 - a bug or setup error must not kill the job
            log.error("probe could not run", error=error_message(exc))
            return ProbeResult.not_run(
                self.target.name, self.target.backend, error_message(exc), time.time()
            )
        self._remember_unremoved([result])
        return result
