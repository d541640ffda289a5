"""`/-/healthy`: is every target being run? A wedged scheduler or a target not run for
three intervals says so."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.probing.scheduler import STAGGER_WINDOW_SECONDS


def unhealthy(probers: Sequence[Prober], scheduler_running: bool) -> str | None:
    """None when healthy, else why not."""
    if not scheduler_running:
        return "the scheduler is not running"
    now = time.monotonic()
    for prober in probers:
        target = prober.target
        since = prober.last_attempt or prober.created
        allowed = 3 * (target.interval + target.jitter_seconds) + STAGGER_WINDOW_SECONDS
        if now - since > allowed:
            return (
                f"target {target.name} has not been run for {now - since:.0f}s "
                f"(interval {target.interval:g}s)"
            )
    return None
