"""How the web process keeps a flood of clients off the probing side: the forwarded
requests rationed (`RequestBudget`), the scrapes spaced out (`Pacer`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RequestBudget:
    """At most `rate` forwarded requests a second (bursts up to `burst`) and at most
    `in_flight` at once; the rest are refused, not queued."""

    def __init__(self, rate: float, burst: int, in_flight: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._slots = threading.BoundedSemaphore(in_flight)
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens < 1:
                return False
            if not self._slots.acquire(blocking=False):
                return False
            self._tokens -= 1
            return True

    def release(self) -> None:
        self._slots.release()


class Pacer:
    """Spaces answers at least 1/rate seconds apart (rate 0: no limit). A flood of
    clients then waits its turn, as latency rather than errors, instead of taking
    the CPU the probes are timed on; a client that would wait longer than
    `max_wait` is refused at once (429)."""

    def __init__(
        self,
        rate: float,
        max_wait: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._gap = 1.0 / rate if rate > 0 else 0.0
        self._max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def admit(self) -> bool:
        if not self._gap:
            return True
        with self._lock:
            now = self._clock()
            turn = max(now, self._next)
            if turn - now > self._max_wait:
                return False
            self._next = turn + self._gap
        if turn > now:
            self._sleep(turn - now)  # this client's turn comes then: pacing, not polling
        return True
