"""A burst: N sandboxes of one target launched together (or `stagger` apart), each
through its whole lifecycle, as an agent platform fans one task out to N agents.

The engine and image checks are made once, before the launch, so that they do not
spread the creates; then N threads, started first, wait at one start line and each
sends its create at its offset. What the runners record (the clock when each create
was sent and when each exec answered) gives the burst's figures: time to first and
to all ready from the launch, the launch-order effect, and the launch skew, how far
the creates actually sent strayed from their planned instants (the exporter's own
distortion: a large skew says the measurement is not the engine's).

Each sandbox is a LifecycleRunner run like any other: it removes its sandbox in its
`finally`, and carries the target's labels, so what a crash leaves is collected as
any leftover of the target is.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import structlog

from sandbox_exporter.config.targets import Target
from sandbox_exporter.logs import Logger
from sandbox_exporter.probing.calls import Calls, Interrupt
from sandbox_exporter.probing.lifecycle import LifecycleRunner, Unreachable
from sandbox_exporter.results import BurstResult, ProbeResult


class BurstRunner:
    """Runs one burst of a target through its (thread-safe) backend's calls."""

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
        assert target.burst is not None
        self.unreachable = unreachable or Unreachable()
        self.calls = calls
        self.target = target
        self.burst = target.burst
        self.instance = instance
        self._log = logger if logger is not None else structlog.get_logger("sandbox_exporter")
        self.clock = clock
        self.wall_clock = wall_clock

    def run(
        self, cancel: threading.Event | None = None, interrupt: Interrupt | None = None
    ) -> BurstResult:
        cancel = cancel or threading.Event()
        burst_id = uuid.uuid4().hex[:12]
        log = self._log.bind(
            target=self.target.name, backend=self.target.backend, burst_id=burst_id
        )
        result = BurstResult(
            self.target.name,
            self.target.backend,
            burst_id,
            self.burst.mode,
            self.wall_clock(),
            offsets=self.burst.offsets,
        )
        runner = self._runner(log)
        result.preflight = runner.preflight(cancel, log, interrupt)
        if result.preflight.failure is None and not result.preflight.cancelled:
            self._launch(result, cancel, interrupt, log)
        result.finished_at = self.wall_clock()
        log.info(
            "burst",
            concurrency=len(result.offsets),
            mode=result.mode,
            success=result.success,
            succeeded=sum(r.success for r in result.results),
            time_to_first_ready_seconds=result.time_to_first_ready,
            time_to_all_ready_seconds=result.time_to_all_ready,
            launch_skew_seconds=result.launch_skew,
            cancelled=result.cancelled,
        )
        return result

    def _runner(self, log: Logger) -> LifecycleRunner:
        return LifecycleRunner(
            self.calls,
            self.target,
            self.instance,
            logger=log,
            clock=self.clock,
            wall_clock=self.wall_clock,
            unreachable=self.unreachable,
        )

    def _launch(
        self, result: BurstResult, cancel: threading.Event, interrupt: Interrupt | None, log: Logger
    ) -> None:
        go = threading.Event()
        launch: list[float] = []
        outcomes: list[ProbeResult | None] = [None] * len(result.offsets)

        def gate(offset: float) -> Callable[[], None]:
            def wait() -> None:
                go.wait()
                delay = launch[0] + offset - self.clock()
                if delay > 0:
                    cancel.wait(delay)  # a stagger's offset; the runner sees a cancel next

            return wait

        def one(index: int, offset: float) -> None:
            runner = self._runner(log.bind(launch_index=index))
            outcomes[index] = runner.run(
                cancel, interrupt=interrupt, preflight=False, launch=gate(offset)
            )

        threads = [
            threading.Thread(
                target=one, args=(i, offset), daemon=True, name=f"burst:{self.target.name}:{i}"
            )
            for i, offset in enumerate(result.offsets)
        ]
        for thread in threads:
            thread.start()
        launch.append(self.clock())
        result.launch = launch[0]
        go.set()
        for thread in threads:
            thread.join()  # each run ends by its timeouts, its sandbox removed
        result.results = [r if r is not None else self._lost(i) for i, r in enumerate(outcomes)]

    def _lost(self, index: int) -> ProbeResult:
        """A runner that raised (a bug: runs catch what backends raise) counts as failed."""
        message = f"the run of sandbox {index} gave no result"
        return ProbeResult.not_run(
            self.target.name, self.target.backend, message, self.wall_clock()
        )
