"""APScheduler wiring: per target one probe job (`id` = target name), first run at
start-up, staggered, and one garbage-collection job (`gc:<name>`)."""

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
GC_PREFIX = "gc:"


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

    def __init__(self, probers: Sequence[Prober], *, max_workers: int | None = None) -> None:
        self.probers = {p.target.name: p for p in probers}
        workers = max_workers or max(2 * len(probers), 4)
        self._scheduler: Any = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES)

    def start(self, now: datetime | None = None) -> None:
        start = now or datetime.now(UTC)
        probers = list(self.probers.values())
        for prober, offset in zip(probers, first_run_offsets(probers), strict=True):
            self._add_jobs(prober, start + timedelta(seconds=offset))
        self._scheduler.start()

    def add(self, prober: Prober) -> None:
        """Schedule a target added by a reload: first run now."""
        self.probers[prober.target.name] = prober
        self._add_jobs(prober, datetime.now(UTC))

    def replace(self, prober: Prober) -> None:
        """A changed target: the new prober takes over its jobs from the next run on."""
        self.remove(prober.target.name)
        self.add(prober)

    def remove(self, name: str) -> None:
        self.probers.pop(name, None)
        for job_id in (name, GC_PREFIX + name):
            if self._scheduler.get_job(job_id) is not None:
                self._scheduler.remove_job(job_id)

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

    def _add_jobs(self, prober: Prober, first_run: datetime) -> None:
        target = prober.target
        self._scheduler.add_job(
            prober.run,
            IntervalTrigger(seconds=target.interval, jitter=target.jitter_seconds or None),
            id=target.name,
            name=target.name,
            next_run_time=first_run,
            replace_existing=True,
        )
        self._scheduler.add_job(
            prober.collect_garbage_safely,
            IntervalTrigger(seconds=target.gc_interval),
            id=GC_PREFIX + target.name,
            name=GC_PREFIX + target.name,
            replace_existing=True,
        )

    def _on_skipped(self, event: Any) -> None:
        prober = self.probers.get(event.job_id)
        if prober is not None:
            prober.skipped()
