"""Sandboxes left behind, found by their labels and removed, each counted as an orphan.

Three occasions:
- before a target's first run: every sandbox of this instance and target, at any
  age (an earlier process of this instance left it: `kill -9`, a crash, a node
  gone). None of this instance's is in flight, provided an instance name is
  never used by two running exporters at once (the chart makes sure);
- every `gc_interval`: those older than `max_age` (below);
- before each run: the sandboxes whose removal failed (engine down), retried.

Which sandboxes of a target the periodic collection removes:
- this instance's, once older than `max_age` (which must exceed the longest a
  run can take, so a sandbox in use is never one of them);
- another instance's, once older than `max_age` AND past the expiry its own
  creator wrote on it (`sandbox-exporter.io/expires-at`: its creation plus every
  timeout of that exporter's run added up) by more than `CLOCK_SKEW_ALLOWANCE`.
  Its creator's run is then over, whatever that exporter's timeouts are, so
  nothing in use is taken; and sandboxes whose exporter is gone for good (an
  instance renamed, a shard scaled away, a pod that got a new host name) are
  still collected. A sandbox without that label (made by an older version) is
  left to its own instance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sandbox_exporter.backends.base import ManagedSandbox
from sandbox_exporter.config.targets import Target
from sandbox_exporter.logs import Logger
from sandbox_exporter.probing.calls import Calls
from sandbox_exporter.probing.recorder import Recorder
from sandbox_exporter.results import error_message

CLOCK_SKEW_ALLOWANCE = 60.0  # seconds two exporters' clocks may differ by


def collectable(sandbox: ManagedSandbox, instance: str, max_age: float, now: float) -> bool:
    """Whether the periodic collection of `instance` may remove `sandbox` (see above)."""
    if sandbox.created_at is None or sandbox.created_at > now - max_age:
        return False
    if sandbox.instance == instance:
        return True
    return sandbox.expires_at is not None and sandbox.expires_at + CLOCK_SKEW_ALLOWANCE <= now


class Collector:
    def __init__(
        self,
        target: Target,
        instance: str,
        calls: Callable[[], Calls],
        metrics: Recorder,
        log: Logger,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.instance = instance
        self._calls = calls
        self._metrics = metrics
        self._log = log
        self._wall = wall_clock
        self._leftovers: set[str] = set()  # removals that failed; retried
        self._lock = threading.Lock()

    @property
    def _labels(self) -> tuple[str, str]:
        return (self.target.name, self.target.backend)

    def sweep(self) -> bool:
        """Before the first run: this instance's sandboxes of this target, any age.
        False when the engine could not be asked (tried again before the next run)."""
        try:
            self._remove(self._listed(lambda s: s.instance == self.instance))
        except Exception as exc:  # noqa: BLE001 - retried before the next run
            self._log.warning("orphan listing failed", error=error_message(exc))
            return False
        return True

    def collect(
        self, max_age: float | None = None, *, dry_run: bool = False
    ) -> list[ManagedSandbox]:
        """Remove (or, dry, list) what the periodic collection may take (module
        docstring); `max_age` defaults to the target's. Returns those sandboxes."""
        age = self.target.max_age if max_age is None else max_age
        now = self._wall()
        old = self._listed(lambda s: collectable(s, self.instance, age, now))
        return old if dry_run else self._remove(old)

    def remember(self, name: str) -> None:
        """A sandbox whose removal failed: retried before each run and collection."""
        with self._lock:
            self._leftovers.add(name)

    def remove_leftovers(self) -> None:
        """Retry those removals; only what is still there is removed, and counted."""
        with self._lock:
            if not self._leftovers:
                return
            try:
                listed = {s.name: s for s in self._listed(lambda s: True)}
            except Exception as exc:  # noqa: BLE001 - kept for the next attempt
                self._log.warning("leftover listing failed", error=error_message(exc))
                return
            for gone in sorted(self._leftovers - listed.keys()):
                self._leftovers.discard(gone)
                self._log.info("leftover already gone", sandbox=gone)
            removed = self._remove([listed[name] for name in sorted(self._leftovers)], "leftover")
            self._leftovers -= {s.name for s in removed}

    def collect_safely(self) -> None:
        """The periodic collection: never raises."""
        try:
            self.remove_leftovers()
            self.collect()
        except Exception as exc:  # noqa: BLE001 - logged; the next collection tries again
            self._log.warning("garbage collection failed", error=error_message(exc))

    # -- internals -------------------------------------------------------------

    @property
    def _timeout(self) -> float:
        return self.target.timeouts.remove

    def _listed(self, wanted: Callable[[ManagedSandbox], bool]) -> list[ManagedSandbox]:
        found = self._calls().list_managed(self.target.name, timeout=self._timeout)
        return [s for s in found if wanted(s)]

    def _remove(
        self, sandboxes: list[ManagedSandbox], what: str = "orphan"
    ) -> list[ManagedSandbox]:
        """Each removed and counted as an orphan; those that failed are left for the
        next attempt. Returns the removed."""
        removed = []
        for sandbox in sandboxes:
            try:
                self._calls().remove(sandbox, timeout=self._timeout)
            except Exception as exc:  # noqa: BLE001 - tried again at the next collection
                self._log.warning(
                    f"{what} removal failed", sandbox=sandbox.name, error=error_message(exc)
                )
                continue
            removed.append(sandbox)
            self._metrics.orphan_removed(self.target)
            self._log.info(
                f"{what} removed",
                sandbox=sandbox.name,
                instance=sandbox.instance,
                created_at=sandbox.created_at,
            )
        return removed
