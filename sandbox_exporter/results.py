"""The vocabulary every layer shares: the phases of a lifecycle, why one failed,
and what a run (or a burst of runs) found.

The runner (probing/) makes these; metrics/, the web pages and the commands read
them. This module imports nothing of the exporter's, so that each of those can
import it without importing the others.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from enum import StrEnum


class Phase(StrEnum):
    PULL = "pull"
    CREATE = "create"
    START = "start"
    EXEC = "exec"
    STOP = "stop"
    REMOVE = "remove"


LIFECYCLE: tuple[Phase, ...] = (Phase.CREATE, Phase.START, Phase.EXEC, Phase.STOP, Phase.REMOVE)
TIME_TO_EXEC: tuple[Phase, ...] = (Phase.CREATE, Phase.START, Phase.EXEC)


class Reason(StrEnum):
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    ERROR = "error"
    EXEC_MISMATCH = "exec_mismatch"
    CLEANUP = "cleanup"


def failure_modes() -> list[tuple[Phase, Reason]]:
    """Every (phase, reason) pair a run can report, so metrics can pre-create them."""
    common = (Reason.TIMEOUT, Reason.UNAVAILABLE, Reason.ERROR)
    modes = [(phase, reason) for phase in (Phase.PULL, *LIFECYCLE) for reason in common]
    modes.append((Phase.EXEC, Reason.EXEC_MISMATCH))
    modes += [(Phase.STOP, Reason.CLEANUP), (Phase.REMOVE, Reason.CLEANUP)]
    return modes


def error_message(exc: BaseException) -> str:
    """What went wrong, in the words the exception carries, at most 500 characters."""
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


@dataclass(frozen=True)
class Failure:
    phase: Phase
    reason: Reason
    message: str


@dataclass
class ProbeResult:
    target: str
    backend: str
    run_id: str
    sandbox: str
    started_at: float
    finished_at: float = 0.0
    durations: dict[Phase, float] = field(default_factory=dict)
    failure: Failure | None = None
    cleanup_failures: list[Failure] = field(default_factory=list)
    pulled: bool = False
    backend_up: bool | None = None
    cancelled: bool = False
    output: str | None = None
    # on the runner's clock: when the create call was sent, and when the exec answered
    # (a burst's launch skew and its times to ready are read from these)
    launched_at: float | None = None
    ready_at: float | None = None

    @classmethod
    def not_run(cls, target: str, backend: str, message: str, at: float) -> ProbeResult:
        """A run that never reached its backend (a setup error or a bug), as a failure
        to create: the job goes on and the failure is counted."""
        failure = Failure(Phase.CREATE, Reason.ERROR, message)
        return cls(target, backend, "", "", started_at=at, finished_at=at, failure=failure)

    @property
    def success(self) -> bool:
        return self.failure is None and not self.cleanup_failures and not self.cancelled

    @property
    def total(self) -> float | None:
        """The five phases added up; None unless the run succeeded."""
        return sum(self.durations[p] for p in LIFECYCLE) if self.success else None

    @property
    def time_to_exec(self) -> float | None:
        """create + start + exec: what a user waits before the agent's first command runs."""
        return sum(self.durations[p] for p in TIME_TO_EXEC) if self.success else None

    @property
    def reason(self) -> Reason | None:
        if self.failure:
            return self.failure.reason
        return self.cleanup_failures[0].reason if self.cleanup_failures else None


def failures(result: ProbeResult) -> list[Failure]:
    """The failure and every cleanup failure of a run."""
    return ([result.failure] if result.failure else []) + list(result.cleanup_failures)


@dataclass
class BurstResult:
    target: str
    backend: str
    burst_id: str
    mode: str
    started_at: float  # wall clock
    finished_at: float = 0.0
    offsets: list[float] = field(default_factory=list)  # planned, from the launch
    launch: float | None = None  # the runners' clock at the launch; None: never launched
    preflight: ProbeResult | None = None  # the engine and image checks
    results: list[ProbeResult] = field(default_factory=list)  # in launch order

    @property
    def launched(self) -> bool:
        return self.launch is not None

    @property
    def cancelled(self) -> bool:
        return bool(self.preflight and self.preflight.cancelled) or any(
            r.cancelled for r in self.results
        )

    @property
    def success(self) -> bool:
        return self.launched and all(r.success for r in self.results)

    @property
    def success_ratio(self) -> float:
        if not self.results:
            return 0.0
        return sum(r.success for r in self.results) / len(self.results)

    def _ready(self) -> list[float]:
        assert self.launch is not None
        return [r.ready_at - self.launch for r in self.results if r.ready_at is not None]

    @property
    def time_to_first_ready(self) -> float | None:
        """From the launch to the first sandbox whose command answered."""
        ready = self._ready() if self.launched else []
        return min(ready) if ready else None

    @property
    def time_to_all_ready(self) -> float | None:
        """From the launch to the last sandbox's answer; None unless every one answered."""
        ready = self._ready() if self.launched else []
        return max(ready) if ready and len(ready) == len(self.results) else None

    @property
    def launch_skew(self) -> float | None:
        """The spread of (create actually sent - its planned instant) over the sandboxes."""
        if self.launch is None:
            return None
        late = [
            r.launched_at - (self.launch + offset)
            for r, offset in zip(self.results, self.offsets, strict=True)
            if r.launched_at is not None
        ]
        return max(late) - min(late) if late else None

    def quarters(self) -> list[list[ProbeResult]]:
        """The results by launch quarter. The first and the last are a quarter each,
        rounded up (with 5 sandboxes, 2 each); the second and the third split what is
        between (the second the larger half), so with fewer than 8 one of them can be
        empty (with 5: 2, 1, 0, 2)."""
        count = len(self.results)
        size = math.ceil(count / 4)
        middle = self.results[size : max(size, count - size)]
        half = math.ceil(len(middle) / 2)
        return [self.results[:size], middle[:half], middle[half:], self.results[-size:]]

    def quarter_time_to_exec(self, which: str) -> float | None:
        """The median time to exec of the first or the last quarter launched (rounded up:
        with 5 sandboxes, 2 each), over their successful runs."""
        chosen = self.quarters()[0 if which == "first" else 3]
        values = [tte for r in chosen if (tte := r.time_to_exec) is not None]
        return statistics.median(values) if values else None
