"""APScheduler wiring: one interval job per target, first runs at start-up, staggered."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.prober import Prober

STAGGER_WINDOW_SECONDS = 10.0


def first_run_offsets(probers: Sequence[Prober]) -> list[float]:
    """Seconds after start-up for each target's first run.

    Spread evenly over the shortest interval or 10 s, whichever is less, so a
    config of many targets does not hit the engines all in the same instant.
    """
    if not probers:
        return []
    window = min(STAGGER_WINDOW_SECONDS, *(p.target.interval for p in probers))
    return [index * window / len(probers) for index in range(len(probers))]


class ProbeScheduler:
    """Runs every prober on its own interval; a slow target delays no other."""

    def __init__(self, probers: Sequence[Prober]) -> None:
        self.probers = {p.target.name: p for p in probers}
        self._scheduler: Any = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max(len(probers), 1))},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES)

    def start(self, now: datetime | None = None) -> None:
        start = now or datetime.now(UTC)
        probers = list(self.probers.values())
        for prober, offset in zip(probers, first_run_offsets(probers), strict=True):
            target = prober.target
            self._scheduler.add_job(
                prober.run,
                IntervalTrigger(seconds=target.interval, jitter=target.jitter_seconds or None),
                id=target.name,
                name=target.name,
                next_run_time=start + timedelta(seconds=offset),
            )
        self._scheduler.start()

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def next_run_time(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(name)
        return job.next_run_time if job is not None else None

    def add_listener(self, callback: Any, mask: int) -> None:
        """An APScheduler event listener (used by benchmarks/scheduling.py)."""
        self._scheduler.add_listener(callback, mask)

    def shutdown(self) -> None:
        """Stop firing jobs; running probes go on (the caller waits for them)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _on_skipped(self, event: Any) -> None:
        prober = self.probers.get(event.job_id)
        if prober is not None:
            prober.skipped()
