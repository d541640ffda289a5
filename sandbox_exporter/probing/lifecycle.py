"""Drive one sandbox through create, start, exec, stop, remove, and time it.

The runner owns the clock, the per-phase timeouts and the cleanup; backends
only do the work, through `Calls` (calls.py). It knows nothing of Prometheus:
it returns a ProbeResult and the caller decides what to record.

Rules a reader of the metrics can rely on:
- a phase's duration is recorded only when that phase succeeded, and only up
  to the first failure: after a failure everything is cleanup, never timed;
- a failure names the phase and one reason from `Reason`;
- whatever was created is removed, whatever failed (stop with grace, then a
  forced remove); a cleanup that fails is reported as `reason="cleanup"`;
- a backend call that outlives its timeout is ended (calls.py says how); if an
  abandoned `create` or `start` still finishes, its sandbox is removed then.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import structlog

from sandbox_exporter.backends.base import (
    CREATED_LABEL,
    EXPIRES_LABEL,
    INSTANCE_LABEL,
    MANAGED_LABEL,
    NAME_PREFIX,
    TARGET_LABEL,
    BackendUnavailable,
    ExecResult,
    Images,
    SandboxRef,
    SandboxSpec,
)
from sandbox_exporter.config.targets import Target
from sandbox_exporter.logs import Logger
from sandbox_exporter.probing.calls import Calls, Interrupt, Interrupted, PhaseTimeout
from sandbox_exporter.results import (
    LIFECYCLE,
    TIME_TO_EXEC,
    Failure,
    Phase,
    ProbeResult,
    Reason,
    error_message,
)

NO_REGISTRY_HINT = (
    "; without a registry, `sandbox-exporter image build` makes a probe image from this "
    "machine's static busybox: then set image: sandbox-exporter/busybox:local and "
    "pull_policy: never"
)


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


class Unreachable:
    """What a target's engine said when it last could not be reached, so that an engine
    that stays down is logged once (then at debug, run after run), and a new message, or
    the engine answering again, once more. Metrics count every run regardless."""

    def __init__(self) -> None:
        self._said: str | None = None
        self._lock = threading.Lock()

    def failed(self, log: Logger, message: str) -> None:
        with self._lock:
            repeated, self._said = message == self._said, message
        if repeated:
            log.debug("backend still unreachable", phase="create", reason="unavailable")
        else:
            log.warning("backend unreachable", phase="create", reason="unavailable", error=message)

    def answered(self, log: Logger) -> None:
        with self._lock:
            was, self._said = self._said, None
        if was is not None:
            log.info("backend reachable again")


class LifecycleRunner:
    """Runs one lifecycle of one target through its backend's calls. Reusable; not
    re-entrant."""

    def __init__(
        self,
        calls: Calls,
        target: Target,
        instance: str,
        *,
        logger: Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        unreachable: Unreachable | None = None,
    ) -> None:
        """`unreachable`: the target's, kept across runs by its prober."""
        self.unreachable = unreachable or Unreachable()
        self.calls = calls
        self.target = target
        self.instance = instance
        self._log = logger if logger is not None else structlog.get_logger("sandbox_exporter")
        self.clock = clock  # times the phases
        self.wall_clock = wall_clock  # stamps results and labels

    def run(
        self,
        cancel: threading.Event | None = None,
        logger: Logger | None = None,
        interrupt: Interrupt | None = None,
        *,
        preflight: bool = True,
        launch: Callable[[], None] | None = None,
    ) -> ProbeResult:
        """One lifecycle. `cancel`: stop at the next phase boundary (and clean up);
        `interrupt`: cut the call in flight short too (and clean up by its `until`).
        `preflight=False` skips the engine and image checks (a burst makes them once for
        all its sandboxes); `launch` is called just before create is sent and returns
        at the moment it should be (a burst's start line, a stagger's offset)."""
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
            started_at=self.wall_clock(),
        )
        run = _Run(self, result, log, cancel or threading.Event(), interrupt, launch)
        try:
            run.through_phases(preflight)
        finally:
            run.clean_up()
            result.finished_at = self.wall_clock()
            log.info(
                "lifecycle",
                success=result.success,
                reason=str(result.reason) if result.reason else None,
                total_seconds=result.total,
                time_to_exec_seconds=result.time_to_exec,
                cancelled=result.cancelled,
            )
        return result

    def preflight(
        self,
        cancel: threading.Event | None = None,
        logger: Logger | None = None,
        interrupt: Interrupt | None = None,
    ) -> ProbeResult:
        """The engine and image checks alone (what `run(preflight=False)` leaves out): a
        result with no sandbox, failed or cancelled when they did not pass."""
        log = (logger or self._log).bind(target=self.target.name, backend=self.target.backend)
        result = ProbeResult(self.target.name, self.target.backend, "", "", self.wall_clock())
        run = _Run(self, result, log, cancel or threading.Event(), interrupt)
        if run._check_backend():
            run._check_image()
        result.finished_at = self.wall_clock()
        return result

    def spec(self, name: str) -> SandboxSpec:
        target = self.target
        now = int(self.wall_clock())
        return SandboxSpec(
            name=name,
            labels={
                MANAGED_LABEL: "true",
                TARGET_LABEL: target.name,
                INSTANCE_LABEL: self.instance,
                CREATED_LABEL: str(now),
                # when the run that made it is over whatever happens: from then on any
                # exporter may collect it (collector.py)
                EXPIRES_LABEL: str(now + int(target.timeouts.whole_run) + 1),
            },
            image=target.image,
            pull_policy=target.pull_policy,
            cpus=target.resources.cpus,
            memory_mb=target.resources.memory_mb,
            pids_limit=target.resources.pids,
            stop_grace=target.stop_grace,
        )


class _Run:
    """The state of one lifecycle while it runs."""

    def __init__(
        self,
        runner: LifecycleRunner,
        result: ProbeResult,
        log: Logger,
        cancel: threading.Event,
        interrupt: Interrupt | None,
        launch: Callable[[], None] | None = None,
    ) -> None:
        self.launch = launch
        self.runner = runner
        self.target = runner.target
        self.calls = runner.calls
        self.result = result
        self.log = log
        self.cancel = cancel
        self.interrupt = interrupt
        self.ref = SandboxRef(result.sandbox)
        self.handle: SandboxRef | None = None  # what create returned
        self.created = self.started = False

    @property
    def sandbox(self) -> SandboxRef:
        """The handle create returned, or the name it was asked for until then."""
        return self.handle or self.ref

    def through_phases(self, preflight: bool = True) -> None:
        if preflight and (not self._check_backend() or not self._check_image()):
            return
        if self.launch is not None:
            self.launch()
        for phase in LIFECYCLE:
            if self.cancel.is_set() or (self.interrupt and self.interrupt.is_set()):
                self.result.cancelled = True
                self.log.info("cancelled", before_phase=str(phase))
                return
            self.created = self.created or phase is Phase.CREATE
            self.started = self.started or phase is Phase.START
            if not self._phase(phase):
                return

    # -- steps ---------------------------------------------------------------

    def _check_backend(self) -> bool:
        """Ping the engine (and let it prepare): False, with the failure recorded in the
        result, when it does not answer."""
        result, timeout = self.result, self.target.timeouts.create
        try:
            self.calls.ping(timeout=timeout, sandbox=self.sandbox, interrupt=self.interrupt)
            if self.target.kind.capabilities.prepares:
                spec = self.runner.spec(self.result.sandbox)
                self.calls.prepare(
                    spec, timeout=timeout, sandbox=self.sandbox, interrupt=self.interrupt
                )
        except Interrupted:
            result.cancelled = True
            return False
        except Exception as exc:  # noqa: BLE001 - every failure is a reason
            result.backend_up = False
            result.failure = Failure(Phase.CREATE, Reason.UNAVAILABLE, error_message(exc))
            self.runner.unreachable.failed(self.log, error_message(exc))
            return False
        result.backend_up = True
        self.runner.unreachable.answered(self.log)
        return True

    def _check_image(self) -> bool:
        """Make sure the image is on the engine (pulled, and timed, if it must be):
        False, with the failure recorded in the result, when it is not."""
        target, result = self.target, self.result
        if target.kind.capabilities.images is not Images.EXPORTER:
            return True  # no image, or the engine pulls it inside `start`
        image = target.image
        try:
            must_pull = target.pull_policy == "always"
            if not must_pull:
                present = self.calls.image_present(
                    image,
                    timeout=target.timeouts.create,
                    sandbox=self.sandbox,
                    interrupt=self.interrupt,
                )
                if not present and target.pull_policy == "never":
                    raise LookupError(
                        f"image {image!r} is not present on the {target.backend} engine "
                        "and pull_policy is never"
                    )
                must_pull = not present
            if must_pull:
                began = self.runner.clock()
                self.calls.pull_image(
                    image,
                    timeout=target.timeouts.pull,
                    sandbox=self.sandbox,
                    interrupt=self.interrupt,
                )
                result.durations[Phase.PULL] = self.runner.clock() - began
                result.pulled = True
                self.log.info(
                    "pull", phase="pull", image=image, duration_seconds=result.durations[Phase.PULL]
                )
        except Interrupted:
            result.cancelled = True
            return False
        except Exception as exc:  # noqa: BLE001
            self._fail(Phase.PULL, exc, NO_REGISTRY_HINT)
            return False
        return True

    def _phase(self, phase: Phase) -> bool:
        target, result = self.target, self.result
        timeout = getattr(target.timeouts, str(phase))
        clock = self.runner.clock
        began = clock()
        if phase is Phase.CREATE:
            result.launched_at = began
        try:
            self._call(phase, timeout)
        except Interrupted:
            result.cancelled = True
            self.log.info("interrupted", phase=str(phase))
            return False
        except Exception as exc:  # noqa: BLE001
            self._fail(phase, exc)
            return False
        ended = clock()
        duration = ended - began
        result.durations[phase] = duration
        if phase is Phase.EXEC:
            result.ready_at = ended
        self.log.info("phase", phase=str(phase), duration_seconds=duration, outcome="ok")
        return True

    def _call(self, phase: Phase, timeout: float) -> None:
        calls, target, interrupt = self.calls, self.target, self.interrupt
        if phase is Phase.CREATE:
            self.handle = calls.create(
                self.runner.spec(self.result.sandbox),
                timeout=timeout,
                interrupt=interrupt,
                on_late=self._remove_late,
            )
            return
        sandbox = self.sandbox
        if phase is Phase.START:
            calls.start(
                sandbox,
                timeout=timeout,
                interrupt=interrupt,
                on_late=lambda: self._remove_late(sandbox),
            )
        elif phase is Phase.EXEC:
            self._check(calls.exec(sandbox, target.command, timeout=timeout, interrupt=interrupt))
        elif phase is Phase.STOP:
            calls.stop(sandbox, target.stop_grace, timeout=timeout, interrupt=interrupt)
        else:
            calls.remove(sandbox, timeout=timeout, interrupt=interrupt)

    def _check(self, answer: ExecResult) -> None:
        self.result.output = answer.output
        expected = self.target.expect_output
        if answer.exit_code != 0:
            raise ExecMismatch(
                f"exit code {answer.exit_code}, expected 0; output {answer.output[:200]!r}"
            )
        if expected is not None and answer.output.strip() != expected.strip():
            raise ExecMismatch(f"output {answer.output[:200]!r}, expected {expected!r}")

    def clean_up(self) -> None:
        """Whatever was created goes, unless the remove phase already took it."""
        result = self.result
        if not self.created or Phase.REMOVE in result.durations:
            return
        timeouts = self.target.timeouts
        failed_early = result.failure is not None and result.failure.phase in TIME_TO_EXEC
        steps = [Phase.REMOVE]
        if self.started and failed_early and not result.cancelled:
            steps.insert(0, Phase.STOP)
        sandbox = self.sandbox
        for phase in steps:
            timeout = getattr(timeouts, str(phase))
            if self.interrupt is not None and self.interrupt.until is not None:
                timeout = min(timeout, max(self.interrupt.until - time.monotonic(), 0.001))
            try:
                # not interruptible: the removal is what a shutdown waits for
                if phase is Phase.STOP:
                    self.calls.stop(sandbox, self.target.stop_grace, timeout=timeout)
                else:
                    self.calls.remove(sandbox, timeout=timeout)
            except Exception as exc:  # noqa: BLE001
                failure = Failure(phase, Reason.CLEANUP, error_message(exc))
                result.cleanup_failures.append(failure)
                self.log.error(
                    "cleanup failed", phase=str(phase), reason="cleanup", error=failure.message
                )
            else:
                self.log.info("cleanup", phase=str(phase), outcome="ok")

    # -- helpers -------------------------------------------------------------

    def _fail(self, phase: Phase, exc: BaseException, hint: str = "") -> None:
        reason = reason_for(exc)
        if reason is Reason.UNAVAILABLE:
            self.result.backend_up = False
        message = error_message(exc) + hint
        self.result.failure = Failure(phase, reason, message)
        self.log.warning(
            "phase", phase=str(phase), outcome="failed", reason=str(reason), error=message
        )

    def _remove_late(self, sandbox: SandboxRef) -> None:
        """An abandoned create or start finished after all: remove what it made."""
        try:
            self.calls.remove(sandbox, timeout=self.target.timeouts.remove)
        except Exception as exc:  # noqa: BLE001 - the collector will find it
            self.log.error("late cleanup failed", error=error_message(exc))
        else:
            self.log.info("late cleanup", outcome="ok")
