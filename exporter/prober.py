"""One target's probing: its backend, its no-overlap guard, its metrics, its last result.

The scheduler calls `Prober.run`; `/probe` and the `probe` command call
`run_now`. Nothing raised by a backend or the runner leaves either: every
problem becomes a metric and a log line.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import structlog

from exporter.backends import backend_class
from exporter.backends.base import Backend, ManagedSandbox
from exporter.config import Target
from exporter.lifecycle import (
    Failure,
    LifecycleRunner,
    Phase,
    ProbeResult,
    Reason,
    call_with_timeout,
    describe,
)
from exporter.metrics import Metrics


class BackendSetupError(Exception):
    pass


def build_backend(target: Target) -> Backend:
    """Import the target's backend (and its SDK) and construct it."""
    try:
        cls = backend_class(target.backend)
    except ImportError as exc:
        raise BackendSetupError(
            f"the {target.backend} backend needs a package that is not installed ({exc.name}): "
            f"pip install 'sandbox-exporter[{target.backend}]'"
        ) from exc
    return cls(target)  # type: ignore[call-arg]


class Prober:
    def __init__(
        self,
        target: Target,
        instance: str,
        metrics: Metrics,
        *,
        stopping: threading.Event,
        backend: Backend | None = None,
        logger: Any = None,
        guard: threading.Lock | None = None,
        sweep_at_start: bool = True,
    ) -> None:
        """`guard` is the target's no-overlap lock; a reload hands the old one on, so a
        run of the old configuration and one of the new never overlap.

        `sweep_at_start=False` for a one-off run beside a daemon of the same instance
        (the `probe` command): the start-up sweep would take the daemon's sandbox
        in flight for an orphan."""
        self.target = target
        self.instance = instance
        self.metrics = metrics
        self.stopping = stopping
        self.last_result: ProbeResult | None = None
        self.created = time.monotonic()
        self.last_attempt: float | None = None
        self.record_results = True  # off once a reload has dropped this target's series
        self._backend = backend
        self._orphans_swept = not sweep_at_start
        self._leftovers: set[str] = set()  # sandboxes whose removal failed; retried
        self._leftovers_lock = threading.Lock()
        self.guard = guard or threading.Lock()
        self._log = (logger or structlog.get_logger("exporter")).bind(
            target=target.name, backend=target.backend
        )
        metrics.add_target(target)

    @property
    def labels(self) -> tuple[str, str]:
        return (self.target.name, self.target.backend)

    @property
    def busy(self) -> bool:
        return self.guard.locked()

    def run(self) -> ProbeResult | None:
        """A scheduled run; None (and counted as skipped) when one is already going."""
        self.last_attempt = time.monotonic()
        result = self.run_now()
        if result is None:
            self.skipped()
        return result

    def run_now(self, *, record: bool = True, logger: Any = None) -> ProbeResult | None:
        """One lifecycle now, or None when this target is busy.

        `record=False` leaves the scheduled figures alone (an on-demand probe);
        `logger` receives the run's log lines too.
        """
        if not self.guard.acquire(blocking=False):
            return None
        gauge = self.metrics.in_progress.labels(*self.labels)
        gauge.set(1)
        try:
            result = self._run_locked(logger)
            if record and self.record_results:
                self.metrics.record(result)
        finally:
            gauge.set(0)
            self.guard.release()
        if record:
            self.last_result = result
        return result

    def skipped(self) -> None:
        self.last_attempt = time.monotonic()
        self.metrics.skipped.labels(*self.labels).inc()
        self._log.warning("probe skipped", why="the previous run of this target is still going")

    def wait_idle(self, timeout: float) -> bool:
        """Block until no run is in progress (or the timeout passes)."""
        if not self.guard.acquire(timeout=max(timeout, 0)):
            return False
        self.guard.release()
        return True

    def collect_garbage(
        self, max_age: float | None = None, *, dry_run: bool = False
    ) -> list[ManagedSandbox]:
        """Remove (or, dry, list) this exporter's sandboxes of this target older than
        `max_age` (default: the target's), counting each removal. Returns them."""
        age = self.target.max_age if max_age is None else max_age
        backend = self._get_backend()
        timeout = self.target.timeouts.remove
        name = self.target.name
        found = call_with_timeout(
            lambda: backend.list_managed(self.instance, name), timeout, name=f"{name}:gc-list"
        )
        cutoff = time.time() - age
        old = [s for s in found if s.created_at is not None and s.created_at <= cutoff]
        if dry_run:
            return old
        removed = []
        for sandbox in old:
            try:
                call_with_timeout(
                    functools.partial(backend.remove, sandbox.name), timeout, name=f"{name}:gc"
                )
            except Exception as exc:  # noqa: BLE001 - tried again at the next collection
                self._log.warning(
                    "orphan removal failed", sandbox=sandbox.name, error=describe(exc)
                )
                continue
            removed.append(sandbox)
            self.metrics.orphans_removed.labels(*self.labels).inc()
            self._log.info("orphan removed", sandbox=sandbox.name, created_at=sandbox.created_at)
        return removed

    def remove_leftovers(self) -> None:
        """Retry removing sandboxes whose cleanup failed (engine down, say); counted as
        orphans when it works. Runs before each run and each collection."""
        with self._leftovers_lock:
            if self._leftovers:
                self._remove_leftovers(self._get_backend())

    def _remove_leftovers(self, backend: Backend) -> None:
        target, timeout = self.target.name, self.target.timeouts.remove
        try:  # only what is still there is removed, and counted
            listed = call_with_timeout(lambda: backend.list_managed(self.instance, target),
                                       timeout, name=f"{target}:leftover-list")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - kept for the next attempt
            self._log.warning("leftover listing failed", error=describe(exc))
            return
        for gone in self._leftovers - {s.name for s in listed}:
            self._leftovers.discard(gone)
            self._log.info("leftover already gone", sandbox=gone)
        for sandbox in sorted(self._leftovers):
            try:
                call_with_timeout(functools.partial(backend.remove, sandbox), timeout,
                                  name=f"{target}:leftover")  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - kept for the next attempt
                self._log.warning("leftover removal failed", sandbox=sandbox, error=describe(exc))
                continue
            self._leftovers.discard(sandbox)
            self.metrics.orphans_removed.labels(*self.labels).inc()
            self._log.info("leftover removed", sandbox=sandbox)

    def collect_garbage_safely(self) -> None:
        """The periodic collection: never raises."""
        try:
            self.remove_leftovers()
            self.collect_garbage()
        except Exception as exc:  # noqa: BLE001 - logged; the next collection tries again
            self._log.warning("garbage collection failed", error=describe(exc))

    def close(self) -> None:
        if self._backend is not None:
            try:
                self._backend.close()
            except Exception as exc:  # noqa: BLE001
                self._log.warning("backend close failed", error=describe(exc))

    # -- internals -------------------------------------------------------------

    def _run_locked(self, logger: Any) -> ProbeResult:
        log = (
            logger.bind(target=self.target.name, backend=self.target.backend)
            if logger
            else self._log
        )
        try:
            backend = self._get_backend()
            if not self._orphans_swept:
                self._sweep_orphans()
            self.remove_leftovers()
            result = LifecycleRunner(backend, self.target, self.instance, logger=log).run(
                cancel=self.stopping
            )
            if any(f.phase is Phase.REMOVE for f in result.cleanup_failures):
                with self._leftovers_lock:
                    self._leftovers.add(result.sandbox)
            return result
        except Exception as exc:  # noqa: BLE001 - a bug or setup error must not kill the job
            log.error("probe could not run", error=describe(exc))
            now = time.time()
            return ProbeResult(
                target=self.target.name,
                backend=self.target.backend,
                run_id="",
                sandbox="",
                started_at=now,
                finished_at=now,
                failure=Failure(Phase.CREATE, Reason.ERROR, describe(exc)),
            )

    def _get_backend(self) -> Backend:
        if self._backend is None:
            self._backend = build_backend(self.target)
        return self._backend

    def _sweep_orphans(self) -> None:
        """Before the first run: remove every sandbox an earlier process of this exporter
        left for this target (crash, kill -9). Safe at any age: none of ours is in flight."""
        try:
            self.collect_garbage(max_age=0)
        except Exception as exc:  # noqa: BLE001 - retried before the next run
            self._log.warning("orphan listing failed", error=describe(exc))
            return
        self._orphans_swept = True
