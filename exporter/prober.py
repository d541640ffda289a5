"""One target's probing: its backend, its no-overlap guard, its metrics, its last result.

The scheduler calls `Prober.run`; nothing raised by a backend or the runner
leaves it: every problem becomes a metric and a log line.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import structlog

from exporter.backends import backend_class
from exporter.backends.base import Backend
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
    ) -> None:
        self.target = target
        self.instance = instance
        self.metrics = metrics
        self.stopping = stopping
        self.last_result: ProbeResult | None = None
        self._backend = backend
        self._orphans_swept = False
        self._busy = threading.Lock()
        self._log = (logger or structlog.get_logger("exporter")).bind(
            target=target.name, backend=target.backend
        )
        metrics.add_target(target)

    @property
    def labels(self) -> tuple[str, str]:
        return (self.target.name, self.target.backend)

    def run(self) -> ProbeResult | None:
        """One lifecycle now; None (and counted as skipped) when one is already running."""
        if not self._busy.acquire(blocking=False):
            self.skipped()
            return None
        gauge = self.metrics.in_progress.labels(*self.labels)
        gauge.set(1)
        try:
            result = self._run_locked()
        finally:
            gauge.set(0)
            self._busy.release()
        self.last_result = result
        return result

    def skipped(self) -> None:
        self.metrics.skipped.labels(*self.labels).inc()
        self._log.warning("probe skipped", why="the previous run of this target is still going")

    def wait_idle(self, timeout: float) -> bool:
        """Block until no run is in progress (or the timeout passes)."""
        if not self._busy.acquire(timeout=max(timeout, 0)):
            return False
        self._busy.release()
        return True

    def close(self) -> None:
        if self._backend is not None:
            try:
                self._backend.close()
            except Exception as exc:  # noqa: BLE001
                self._log.warning("backend close failed", error=describe(exc))

    # -- internals -------------------------------------------------------------

    def _run_locked(self) -> ProbeResult:
        try:
            backend = self._get_backend()
            if not self._orphans_swept:
                self._sweep_orphans(backend)
            result = LifecycleRunner(backend, self.target, self.instance, logger=self._log).run(
                cancel=self.stopping
            )
        except Exception as exc:  # noqa: BLE001 - a bug or setup error must not kill the job
            self._log.error("probe could not run", error=describe(exc))
            now = time.time()
            result = ProbeResult(
                target=self.target.name,
                backend=self.target.backend,
                run_id="",
                sandbox="",
                started_at=now,
                finished_at=now,
                failure=Failure(Phase.CREATE, Reason.ERROR, describe(exc)),
            )
        self.metrics.record(result)
        return result

    def _get_backend(self) -> Backend:
        if self._backend is None:
            self._backend = build_backend(self.target)
        return self._backend

    def _sweep_orphans(self, backend: Backend) -> None:
        """Remove sandboxes an earlier run of this exporter left (crash, kill -9)."""
        timeout = self.target.timeouts.remove
        try:
            orphans = call_with_timeout(
                lambda: backend.list_managed(self.instance, self.target.name),
                timeout,
                name=f"{self.target.name}:orphan-listing",
            )
        except Exception as exc:  # noqa: BLE001 - retried before the next run
            self._log.warning("orphan listing failed", error=describe(exc))
            return
        for orphan in orphans:
            try:
                call_with_timeout(
                    functools.partial(backend.remove, orphan.name),
                    timeout,
                    name=f"{self.target.name}:orphan-removal",
                )
            except Exception as exc:  # noqa: BLE001
                self._log.warning("orphan removal failed", sandbox=orphan.name, error=describe(exc))
                return
            self.metrics.orphans_removed.labels(*self.labels).inc()
            self._log.info("orphan removed", sandbox=orphan.name, created_at=orphan.created_at)
        self._orphans_swept = True
