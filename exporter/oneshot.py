"""`sandbox-exporter probe` and `sandbox-exporter gc`: the daemon's work, once, from a shell."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from exporter.config import Config
from exporter.lifecycle import describe
from exporter.metrics import Metrics
from exporter.probe_report import as_json as render_json
from exporter.probe_report import as_table
from exporter.prober import Prober


def _probers(config: Config) -> list[Prober]:
    metrics = Metrics(CollectorRegistry())
    stopping = threading.Event()
    return [Prober(t, config.instance, metrics, stopping=stopping) for t in config.targets]


def probe_once(config: Config, name: str, *, as_json: bool = False) -> int:
    """One lifecycle of target `name`; exit status 0 only on success."""
    try:
        target = config.target(name)
    except KeyError:
        names = ", ".join(t.name for t in config.targets)
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


def collect_garbage(config: Config, *, dry_run: bool) -> int:
    """List (and unless dry, remove) this instance's sandboxes older than each target's max_age."""
    failed = False
    total = 0
    for prober in _probers(config):
        target = prober.target
        try:
            found = prober.collect_garbage(dry_run=dry_run)
        except Exception as exc:  # noqa: BLE001 - one target's engine being down is reported
            print(f"{target.name}: cannot list sandboxes: {describe(exc)}", file=sys.stderr)
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
    print(f"{total} sandbox(es) {'older than max_age' if dry_run else 'removed'} "
          f"for instance {config.instance}")  # fmt: skip
    return 1 if failed else 0
