"""The running exporter: metrics, one prober per target, the scheduler, the HTTP server."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from exporter.backends.base import Backend
from exporter.config import Config, Target
from exporter.metrics import Metrics
from exporter.prober import Prober
from exporter.scheduler import ProbeScheduler
from exporter.server import HttpServer, create_app


def shutdown_bound(target: Target) -> float:
    """Longest a probe of `target` can take to wind down once cancelled.

    The call in flight finishes (bounded by its own timeout) and the sandbox is
    then removed (bounded by the remove timeout).
    """
    t = target.timeouts
    return max(t.pull, t.create, t.start, t.exec, t.stop) + t.remove


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        listen_address: str | None = ":9878",
        backends: Mapping[str, Backend] | None = None,
        logger: Any = None,
    ) -> None:
        self.config = config
        self.log = logger or structlog.get_logger("exporter")
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.metrics.config_loaded(True, time.time())
        self.stopping = threading.Event()
        self.probers = [
            Prober(
                target,
                config.instance,
                self.metrics,
                stopping=self.stopping,
                backend=(backends or {}).get(target.name),
                logger=self.log,
            )
            for target in config.targets
        ]
        self.scheduler = ProbeScheduler(self.probers)
        self.app = create_app(self.metrics.exposition, lambda: self.probers, self.ready)
        self.http = HttpServer(self.app, listen_address) if listen_address is not None else None

    def ready(self) -> bool:
        return self.scheduler.running and not self.stopping.is_set()

    def start(self) -> None:
        if self.http is not None:
            self.http.start()
            host, port = self.http.address
            self.log.info("listening", address=f"{host}:{port}")
        self.scheduler.start()
        self.log.info(
            "started",
            config=self.config.source,
            instance=self.config.instance,
            targets=[f"{t.name} ({t.backend})" for t in self.config.targets],
        )

    def shutdown(self) -> bool:
        """Stop scheduling, let running probes clean up, stop serving. True if all finished."""
        self.stopping.set()
        self.scheduler.shutdown()
        deadline = time.monotonic() + max(
            (shutdown_bound(p.target) for p in self.probers), default=0
        )
        clean = True
        for prober in self.probers:
            if not prober.wait_idle(deadline - time.monotonic()):
                clean = False
                self.log.error("probe still running at shutdown", target=prober.target.name)
            prober.close()
        if self.http is not None:
            self.http.stop()
        self.log.info("stopped", clean=clean)
        return clean

    def run_until_signal(self) -> int:
        """Serve until SIGTERM or SIGINT, then shut down; the exit status."""
        received = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.log.info("signal received", signal=signal.Signals(signum).name)
            received.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        self.start()
        received.wait()
        return 0 if self.shutdown() else 1
