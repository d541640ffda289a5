"""The probers a config makes, kept in step with the config as it is reloaded.

An unchanged target keeps its prober and its schedule. A changed one gets a new
prober sharing the old one's no-overlap guard, so a run of the old configuration
and one of the new never overlap. A removed one stops being scheduled. A
retired prober's run in flight finishes under the config it started with, and
its backend is closed only once that run is over and no call is in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sandbox_exporter.backends.base import Backend
from sandbox_exporter.config.targets import Config, Target
from sandbox_exporter.logs import Logger
from sandbox_exporter.probing.calls import Interrupt
from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.probing.recent import RecentRuns
from sandbox_exporter.probing.recorder import Recorder
from sandbox_exporter.probing.scheduler import ProbeScheduler

# A backend object to use for a target instead of building one (tests), or None.
BackendFactory = Callable[[Target], "Backend[Any] | None"]


class Fleet:
    def __init__(
        self,
        config: Config,
        metrics: Recorder,
        *,
        stopping: threading.Event,
        interrupt: Interrupt,
        backends: BackendFactory | None = None,
        logger: Logger,
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._stopping = stopping
        self._interrupt = interrupt
        self._backends = backends
        self._log = logger
        self._lock = threading.Lock()
        self.retiring: set[Prober] = set()
        self.probers = [self.prober(target) for target in config.targets]

    def prober(
        self,
        target: Target,
        guard: threading.Lock | None = None,
        recent: RecentRuns | None = None,
    ) -> Prober:
        return Prober(
            target,
            self.config.instance,
            self._metrics,
            stopping=self._stopping,
            interrupt=self._interrupt,
            backend=self._backends(target) if self._backends is not None else None,
            logger=self._log,
            guard=guard,
            recent=recent,
        )

    def all(self) -> list[Prober]:
        """The current probers and those retired whose backend is not closed yet."""
        with self._lock:
            return [*self.probers, *self.retiring]

    def apply(self, new: Config, scheduler: ProbeScheduler) -> dict[str, list[str]]:
        """Swap in `new`; returns the targets added, changed and removed."""
        same_instance = new.instance == self.config.instance
        self.config = new
        old = {p.target.name: p for p in self.probers}
        probers: list[Prober] = []
        changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
        for target in new.targets:
            previous = old.pop(target.name, None)
            if previous is not None and previous.target == target and same_instance:
                probers.append(previous)
                continue
            if previous is None:
                prober = self.prober(target)
                scheduler.add(prober)
                changes["added"].append(target.name)
            else:
                relabelled = (
                    previous.target.backend,
                    previous.target.buckets,
                    previous.target.histograms,
                ) != (target.backend, target.buckets, target.histograms)
                self._retire(previous, drop_series=relabelled)
                # the page's recent figures go on as the histograms do: unless relabelled
                recent = None if relabelled else previous.recent
                prober = self.prober(target, guard=previous.guard, recent=recent)
                scheduler.replace(prober)
                changes["changed"].append(target.name)
            probers.append(prober)
        for previous in old.values():
            scheduler.remove(previous.target.name)
            self._retire(previous, drop_series=True)
            changes["removed"].append(previous.target.name)
        with self._lock:
            self.probers = probers
        return changes

    def _retire(self, prober: Prober, *, drop_series: bool) -> None:
        """Out of service; its backend closed once its run and calls are over."""
        if drop_series:
            prober.record_results = False
            self._metrics.remove_target(prober.target)
        with self._lock:
            self.retiring.add(prober)

        def close_when_idle() -> None:
            prober.close_when_idle()
            with self._lock:
                self.retiring.discard(prober)

        threading.Thread(
            target=close_when_idle, name=f"retire:{prober.target.name}", daemon=True
        ).start()
