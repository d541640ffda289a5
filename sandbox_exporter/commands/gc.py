"""`sandbox-exporter gc`: the collector's work, once, from a shell."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from sandbox_exporter.config import Config
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.results import error_message


def collect_garbage(config: Config, *, dry_run: bool) -> int:
    """List (and unless dry, remove) the sandboxes the periodic collection would take
    (collector.py): this instance's older than each target's max_age, and other
    instances' past their own expiry too."""
    failed = False
    total = 0
    metrics = Metrics(CollectorRegistry())
    stopping = threading.Event()
    for target in config.targets:
        prober = Prober(target, config.instance, metrics, stopping=stopping)
        try:
            found = prober.collect_garbage(dry_run=dry_run)
        except Exception as exc:  # noqa: BLE001 - one target's engine being down is reported
            print(f"{target.name}: cannot list sandboxes: {error_message(exc)}", file=sys.stderr)
            failed = True
            continue
        finally:
            prober.close()
        for sandbox in found:
            when = (
                datetime.fromtimestamp(sandbox.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                if sandbox.created_at
                else "unknown"
            )
            verb = "would remove" if dry_run else "removed"
            print(f"{target.name}: {verb} {sandbox.name} (created {when})")
        total += len(found)
    print(
        f"{total} sandbox(es) {'older than max_age' if dry_run else 'removed'} "
        f"for instance {config.instance}"
    )
    return 1 if failed else 0
