"""Drive one sandbox through create, start, exec, stop, remove, and time it.

The runner owns the clock, the per-phase timeouts and the cleanup; backends
only do the work. It knows nothing of Prometheus: it returns a ProbeResult and
the caller decides what to record.

Rules a reader of the metrics can rely on:
- a phase's duration is recorded only when that phase succeeded, and only up
  to the first failure: after a failure everything is cleanup, never timed;
- a failure names the phase and one reason from `Reason`;
- whatever was created is removed, whatever failed (stop with grace, then a
  forced remove); a cleanup that fails is reported as `reason="cleanup"`;
- a backend call that hangs is abandoned at its timeout; if a `create` or
  `start` that was abandoned finishes later, its sandbox is removed then.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import structlog

from exporter.backends.base import (
    CREATED_LABEL,
    INSTANCE_LABEL,
    MANAGED_LABEL,
    NAME_PREFIX,
    TARGET_LABEL,
    Backend,
    BackendUnavailable,
    ExecResult,
    SandboxSpec,
)
from exporter.config import Target

T = TypeVar("T")


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


class PhaseTimeout(Exception):
    pass


class ExecMismatch(Exception):
    pass


def reason_for(exc: BaseException) -> Reason:
    """The one place an exception becomes a metric label."""
    if isinstance(exc, PhaseTimeout):
        return Reason.TIMEOUT
    if isinstance(exc, BackendUnavailable):
        return Reason.UNAVAILABLE
    if isinstance(exc, ExecMismatch):
        return Reason.EXEC_MISMATCH
    return Reason.ERROR


def describe(exc: BaseException) -> str:
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


class _Call:
    """One backend call on its own thread, so a hang cannot hold the run past its timeout."""

    def __init__(self, fn: Callable[[], Any], name: str, on_late: Callable[[], None] | None):
        self._fn = fn
        self._on_late = on_late
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        self.value: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def _work(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - carried to the waiting thread
            self.error = exc
        with self._lock:
            self._done.set()
            late = self._abandoned
        if late and self._on_late is not None:
            self._on_late()

    def wait(self, timeout: float) -> bool:
        """Start, wait up to `timeout`; False (and abandoned) if it is still running."""
        self._thread.start()
        finished = self._done.wait(timeout)
        with self._lock:
            if not finished and not self._done.is_set():
                self._abandoned = True
                return False
        return True


class LifecycleRunner:
    """Runs one lifecycle of one target on its backend. Reusable; not re-entrant."""

    def __init__(
        self,
        backend: Backend,
        target: Target,
        instance: str,
        *,
        logger: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.target = target
        self.instance = instance
        self._log = logger if logger is not None else structlog.get_logger("exporter.lifecycle")
        self._clock = clock
        self._wall = wall_clock

    def run(self, cancel: threading.Event | None = None, logger: Any = None) -> ProbeResult:
        target = self.target
        run_id = uuid.uuid4().hex[:12]
        name = f"{NAME_PREFIX}{target.name}-{run_id[:8]}"
        log = (logger or self._log).bind(
            run_id=run_id, target=target.name, backend=target.backend, sandbox=name
        )
        result = ProbeResult(
            target=target.name,
            backend=target.backend,
            run_id=run_id,
            sandbox=name,
            started_at=self._wall(),
        )
        cancel = cancel or threading.Event()
        created = started = False
        try:
            if not self._check_backend(result, log) or not self._ensure_image(result, log):
                return result
            for phase in LIFECYCLE:
                if cancel.is_set():
                    result.cancelled = True
                    log.info("cancelled", before_phase=str(phase))
                    break
                created = created or phase is Phase.CREATE
                started = started or phase is Phase.START
                if not self._phase(result, phase, log):
                    break
            if Phase.REMOVE in result.durations:
                created = False  # removed in the normal way: nothing to clean up
        finally:
            if created:
                failed_early = result.failure is not None and result.failure.phase in TIME_TO_EXEC
                stop_first = started and not result.cancelled and failed_early
                self._cleanup(result, name, stop_first=stop_first, log=log)
            result.finished_at = self._wall()
            log.info(
                "lifecycle",
                success=result.success,
                reason=str(result.reason) if result.reason else None,
                total_seconds=result.total,
                time_to_exec_seconds=result.time_to_exec,
                cancelled=result.cancelled,
            )
        return result

    # -- steps ---------------------------------------------------------------

    def _check_backend(self, result: ProbeResult, log: Any) -> bool:
        try:
            self._call("ping", self.backend.ping, self.target.timeouts.create)
        except BaseException as exc:  # noqa: BLE001 - every failure is a reason
            result.backend_up = False
            result.failure = Failure(Phase.CREATE, Reason.UNAVAILABLE, describe(exc))
            log.warning(
                "backend unreachable", phase="create", reason="unavailable", error=describe(exc)
            )
            return False
        result.backend_up = True
        return True

    def _ensure_image(self, result: ProbeResult, log: Any) -> bool:
        target = self.target
        image = target.image
        try:
            must_pull = target.pull_policy == "always"
            if not must_pull:
                present = self._call(
                    "image-check", lambda: self.backend.image_present(image), target.timeouts.create
                )
                if not present and target.pull_policy == "never":
                    raise LookupError(
                        f"image {image!r} is not present on the {target.backend} engine "
                        "and pull_policy is never"
                    )
                must_pull = not present
            if must_pull:
                began = self._clock()
                self._call("pull", lambda: self.backend.pull_image(image), target.timeouts.pull)
                result.durations[Phase.PULL] = self._clock() - began
                result.pulled = True
                log.info(
                    "pull", phase="pull", image=image, duration_seconds=result.durations[Phase.PULL]
                )
        except BaseException as exc:  # noqa: BLE001
            self._fail(result, Phase.PULL, exc, log)
            return False
        return True

    def _phase(self, result: ProbeResult, phase: Phase, log: Any) -> bool:
        target = self.target
        name = result.sandbox
        backend = self.backend
        work: Callable[[], Any]
        on_late: Callable[[], None] | None = None
        if phase is Phase.CREATE:
            spec = SandboxSpec(
                name=name,
                image=target.image,
                labels={
                    MANAGED_LABEL: "true",
                    TARGET_LABEL: target.name,
                    INSTANCE_LABEL: self.instance,
                    CREATED_LABEL: str(int(self._wall())),
                },
                cpus=target.resources.cpus,
                memory_mb=target.resources.memory_mb,
                pids_limit=target.resources.pids,
            )
            work = lambda: backend.create(spec)  # noqa: E731
            on_late = self._late_remover(name, log)
        elif phase is Phase.START:
            work = lambda: backend.start(name)  # noqa: E731
            on_late = self._late_remover(name, log)
        elif phase is Phase.EXEC:
            work = lambda: self._exec_checked(name, result)  # noqa: E731
        elif phase is Phase.STOP:
            work = lambda: backend.stop(name, target.stop_grace)  # noqa: E731
        else:
            work = lambda: backend.remove(name)  # noqa: E731
        began = self._clock()
        try:
            self._call(str(phase), work, getattr(target.timeouts, str(phase)), on_late)
        except BaseException as exc:  # noqa: BLE001
            self._fail(result, phase, exc, log)
            return False
        duration = self._clock() - began
        result.durations[phase] = duration
        log.info("phase", phase=str(phase), duration_seconds=duration, outcome="ok")
        return True

    def _exec_checked(self, name: str, result: ProbeResult) -> ExecResult:
        answer = self.backend.exec(name, list(self.target.command))
        result.output = answer.output
        expected = self.target.expect_output
        if answer.exit_code != 0:
            raise ExecMismatch(
                f"exit code {answer.exit_code}, expected 0; output {answer.output[:200]!r}"
            )
        if expected is not None and answer.output.strip() != expected.strip():
            raise ExecMismatch(f"output {answer.output[:200]!r}, expected {expected!r}")
        return answer

    def _cleanup(self, result: ProbeResult, name: str, *, stop_first: bool, log: Any) -> None:
        timeouts = self.target.timeouts
        steps: list[tuple[Phase, Callable[[], None], float]] = []
        if stop_first:
            grace = self.target.stop_grace
            steps.append((Phase.STOP, lambda: self.backend.stop(name, grace), timeouts.stop))
        steps.append((Phase.REMOVE, lambda: self.backend.remove(name), timeouts.remove))
        for phase, work, timeout in steps:
            try:
                self._call(f"cleanup-{phase}", work, timeout)
            except BaseException as exc:  # noqa: BLE001
                failure = Failure(phase, Reason.CLEANUP, describe(exc))
                result.cleanup_failures.append(failure)
                log.error(
                    "cleanup failed", phase=str(phase), reason="cleanup", error=failure.message
                )
            else:
                log.info("cleanup", phase=str(phase), outcome="ok")

    # -- helpers -------------------------------------------------------------

    def _fail(self, result: ProbeResult, phase: Phase, exc: BaseException, log: Any) -> None:
        reason = reason_for(exc)
        if reason is Reason.UNAVAILABLE:
            result.backend_up = False
        result.failure = Failure(phase, reason, describe(exc))
        log.warning(
            "phase", phase=str(phase), outcome="failed", reason=str(reason), error=describe(exc)
        )

    def _late_remover(self, name: str, log: Any) -> Callable[[], None]:
        def remove_late() -> None:
            try:
                self.backend.remove(name)
            except Exception as exc:  # noqa: BLE001 - the collector will find it
                log.error("late cleanup failed", error=describe(exc))
            else:
                log.info("late cleanup", outcome="ok")

        return remove_late

    def _call(
        self,
        what: str,
        fn: Callable[[], T],
        timeout: float,
        on_late: Callable[[], None] | None = None,
    ) -> T:
        return call_with_timeout(fn, timeout, name=f"{self.target.name}:{what}", on_late=on_late)


def call_with_timeout(
    fn: Callable[[], T], timeout: float, *, name: str, on_late: Callable[[], None] | None = None
) -> T:
    """Run `fn` on its own thread; PhaseTimeout if it has not returned within `timeout`.

    The thread of a call that timed out is left to finish on its own (a Python
    thread cannot be killed); `on_late` then runs on it.
    """
    call = _Call(fn, name, on_late)
    if not call.wait(timeout):
        raise PhaseTimeout(f"{name.rpartition(':')[2]} did not finish within {timeout:g}s")
    if call.error is not None:
        raise call.error
    value: T = call.value
    return value
