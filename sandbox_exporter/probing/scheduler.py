"""APScheduler wiring: per target one probe job (`id` = target name), first run at
start-up, staggered, and one garbage-collection job (`gc:<name>`), each run on a
thread of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from sandbox_exporter.probing.prober import Prober

STAGGER_WINDOW_SECONDS = 10.0
GC_PREFIX = "gc:"
BURST_PREFIX = "burst:"
P = ParamSpec("P")
R = TypeVar("R")


class ThreadPerTask(Executor):
    """Each task on a new thread that ends with it.

    A pool keeps every thread it ever started, and starts one whenever a task
    arrives while all are busy: with jittered intervals its size creeps up for
    hours towards its cap, each thread keeping its stack and malloc arena. Here
    the threads alive are the runs in progress (at most two per target, its probe
    and its collection, as max_instances=1 allows), and a probe costs one thread
    start more (BENCHMARKS.md, "Costs the code relies on").
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._shutdown = False

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        future: Future[R] = Future()

        def work() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:  # noqa: BLE001 - carried by the future
                        future.set_exception(exc)
            finally:
                with self._lock:
                    self._threads.discard(thread)

        job = getattr(args[0], "id", "task") if args else "task"
        thread = threading.Thread(target=work, name=f"run:{job}", daemon=True)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            self._threads.add(thread)
        thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            running = list(self._threads)
        if wait:
            for thread in running:
                thread.join()


class ThreadPerRunExecutor(BasePoolExecutor):  # type: ignore[misc]
    """APScheduler's pool executor on ThreadPerTask."""

    def __init__(self) -> None:
        super().__init__(ThreadPerTask())


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
            executors={"default": ThreadPerRunExecutor()},
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
        for job_id in (name, GC_PREFIX + name, BURST_PREFIX + name):
            if self._scheduler.get_job(job_id) is not None:
                self._scheduler.remove_job(job_id)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def next_run_time(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(name)
        return job.next_run_time if job is not None else None

    def wakeup(self) -> None:
        """Look at the jobs now (after the clock moved under a test, say)."""
        self._scheduler.wakeup()

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
        if target.burst is not None:
            # between two single runs, so the two meet as seldom as they can
            first_burst = min(target.interval, target.burst.interval) / 2
            self._scheduler.add_job(
                prober.run_burst,
                IntervalTrigger(seconds=target.burst.interval),
                id=BURST_PREFIX + target.name,
                name=BURST_PREFIX + target.name,
                next_run_time=first_run + timedelta(seconds=first_burst),
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
        job: str = event.job_id
        if job.startswith(BURST_PREFIX):
            prober = self.probers.get(job.removeprefix(BURST_PREFIX))
            if prober is not None:
                prober.burst_skipped()
            return
        prober = self.probers.get(job)
        if prober is not None:
            prober.skipped()
