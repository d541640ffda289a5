"""`sandbox-exporter bench --concurrency N`: each iteration is one burst of N sandboxes
per backend, run by the daemon's BurstRunner on the target with a `burst` block.

`run_bench` runs the iterations as it does single lifecycles; BurstBackendRun says
what one is and reads the figures over the bursts. Nothing here times anything.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from sandbox_exporter.commands.bench import BackendRun, BenchError, Outcome
from sandbox_exporter.config import Target
from sandbox_exporter.config.messages import field_problem
from sandbox_exporter.config.settings import Burst
from sandbox_exporter.probing.burst import BurstRunner
from sandbox_exporter.probing.calls import Calls
from sandbox_exporter.probing.percentiles import nearest_rank
from sandbox_exporter.results import BurstResult, ProbeResult


def burst_settings(concurrency: int | None, stagger: str | None) -> Burst | None:
    """`--concurrency N [--stagger 200ms]` as the config's `burst` block; None without
    --concurrency. Errors name the flag."""
    if concurrency is None:
        if stagger is not None:
            raise BenchError("--stagger: needs --concurrency (the sandboxes of a burst)")
        return None
    fields: dict[str, object] = {"concurrency": concurrency}
    if stagger is not None:
        fields |= {"mode": "staggered", "stagger": stagger}
    try:
        return Burst.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise BenchError(f"--{error['loc'][0]}: {field_problem(error)}") from None


def with_burst(targets: Iterable[Target], burst: Burst) -> list[Target]:
    """The targets, each with `burst`, refused as the config refuses it."""
    out: list[Target] = []
    for target in targets:
        copy = target.model_copy(update={"burst": burst})
        try:
            copy.check_burst()
        except ValueError as exc:
            raise BenchError(f"--concurrency: {target.name}: {exc}") from None
        out.append(copy)
    return out


@dataclass
class BurstBackendRun(BackendRun):
    """One backend's bursts; `results` holds every sandbox of them, in launch order."""

    bursts: list[BurstResult] = field(default_factory=list)

    def measure(self, calls: Calls, instance: str, cancel: threading.Event) -> Outcome:
        return BurstRunner(calls, self.target, instance).run(cancel)

    def add(self, outcome: Outcome) -> None:
        assert isinstance(outcome, BurstResult)
        self.bursts.append(outcome)
        self.results.extend(outcome.results)

    @property
    def failures(self) -> list[ProbeResult]:
        """Every sandbox that failed, and the engine or image check of a burst that
        failed and so launched none."""
        checks = [b.preflight for b in self.bursts if b.preflight and b.preflight.failure]
        return [*checks, *super().failures]

    def first_ready(self, p: float) -> float | None:
        return self._over(lambda b: b.time_to_first_ready, p)

    def all_ready(self, p: float) -> float | None:
        return self._over(lambda b: b.time_to_all_ready, p)

    def skew(self, p: float | None) -> float | None:
        """The launch skew's percentile over the bursts; p None: the largest."""
        return self._over(lambda b: b.launch_skew, p)

    def _over(self, figure: Callable[[BurstResult], float | None], p: float | None) -> float | None:
        """A burst figure's nearest-rank percentile over the bursts that have it."""
        values = [v for b in self.bursts if (v := figure(b)) is not None]
        if not values:
            return None
        return max(values) if p is None else nearest_rank(values, p)

    def quarters(self) -> list[float | None]:
        """The median time to exec of each launch quarter (BurstResult.quarters), over
        the successful sandboxes of every burst."""
        out: list[float | None] = []
        for index in range(4):
            values = [
                tte
                for b in self.bursts
                for r in b.quarters()[index]
                if (tte := r.time_to_exec) is not None
            ]
            out.append(statistics.median(values) if values else None)
        return out
