"""`sandbox-exporter probe`: one lifecycle of a target now, from a shell."""

from __future__ import annotations

import sys
import threading

from prometheus_client import CollectorRegistry

from sandbox_exporter.config import Config
from sandbox_exporter.config.discovery import missing_backend
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.probing.report import as_json as render_json
from sandbox_exporter.probing.report import as_table


def probe_once(config: Config, name: str, *, as_json: bool = False) -> int:
    """One lifecycle of target `name`; exit status 0 only on success."""
    try:
        target = config.target(name)
    except KeyError:
        names = ", ".join(t.name for t in config.targets)
        why = missing_backend(config, name)
        if why is not None:
            print(f"--target: no target {name!r}: {why}; found: {names}", file=sys.stderr)
        else:
            print(f"--target: unknown target {name!r}; configured: {names}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    prober = Prober(
        target,
        config.instance,
        Metrics(CollectorRegistry()),
        stopping=stopping,
        sweep_at_start=False,
    )  # a daemon of this instance may be probing now
    try:
        result = prober.run_now()
    except KeyboardInterrupt:
        stopping.set()
        raise
    finally:
        prober.close()
    assert result is not None  # a fresh prober is never busy
    sys.stdout.write(render_json(result) + "\n" if as_json else as_table(result))
    return 0 if result.success else 1
