"""The running exporter: metrics, one prober per target, the scheduler, the HTTP
server; reloads, health, signals and shutdown."""

from __future__ import annotations

import hashlib
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from exporter.backends.base import Backend
from exporter.config import Config, ConfigError, Target
from exporter.metrics import Metrics
from exporter.prober import Prober
from exporter.scheduler import STAGGER_WINDOW_SECONDS, ProbeScheduler
from exporter.server import create_app
from exporter.web_process import ServingOptions, WebProcess
from exporter.webconfig import WebConfig


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
        loader: Callable[[], Config] | None = None,
        web_config: WebConfig | None = None,
        serving: ServingOptions | None = None,
    ) -> None:
        """`loader` re-reads the config for a reload (none: reload is refused).
        `listen_address` None: no HTTP at all (tests call `app` directly)."""
        self.config = config
        self.log = logger or structlog.get_logger("exporter")
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.metrics.config_loaded(True, time.time())
        self.stopping = threading.Event()
        self._backends = dict(backends or {})
        self._loader = loader
        self._reload_lock = threading.Lock()
        self._started = False
        self._serving = False
        self.probers = [self._prober(target) for target in config.targets]
        self.scheduler = ProbeScheduler(self.probers)
        self.app = create_app(self)
        self.web_config = web_config
        self.http: WebProcess | None = None
        if listen_address is not None:
            self.http = WebProcess(self.app, self.exposition, listen_address, web_config, serving,
                                   self.log, on_restart=self.metrics.web_restarts.inc)  # fmt: skip

    # -- what the HTTP pages ask -------------------------------------------------

    def exposition(self) -> bytes:
        return self.metrics.exposition()

    def current_probers(self) -> Sequence[Prober]:
        return list(self.probers)

    def ready(self) -> bool:
        return self.scheduler.running and not self.stopping.is_set()

    def health(self) -> str | None:
        if not self._started or self.stopping.is_set():
            return None
        if not self.scheduler.running:
            return "the scheduler is not running"
        now = time.monotonic()
        for prober in self.probers:
            target = prober.target
            since = prober.last_attempt or prober.created
            allowed = 3 * (target.interval + target.jitter_seconds) + STAGGER_WINDOW_SECONDS
            if now - since > allowed:
                return (
                    f"target {target.name} has not been run for {now - since:.0f}s "
                    f"(interval {target.interval:g}s)"
                )
        return None

    def reload(self) -> list[str]:
        """Re-read the config; apply it, or keep the running one and say why not."""
        with self._reload_lock:
            if self._loader is None:
                return ["this exporter was started without a config file; nothing to re-read"]
            try:
                new = self._loader()
            except ConfigError as exc:
                self.metrics.config_loaded(False, time.time())
                self.log.error("config reload failed; the running config is kept",
                               problems=exc.problems)  # fmt: skip
                return exc.problems
            changes = self._apply(new)
            self.metrics.config_loaded(True, time.time())
            self.log.info("config reloaded", config=new.source, **changes)
            return []

    # -- lifecycle -----------------------------------------------------------------

    def serve(self) -> None:
        """Start answering HTTP (start() does this too, if it has not been done)."""
        if self.http is not None and not self._serving:
            self.http.start()
            self._serving = True
            host, port = self.http.address
            self.log.info("listening", address=f"{host}:{port}", tls=self.http.tls)

    def start(self) -> None:
        self.serve()
        self.scheduler.start()
        self._started = True
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

    def run_until_signal(self, auto_reload_interval: float | None = None) -> int:
        """Serve until SIGTERM or SIGINT; SIGHUP reloads. The exit status.

        Signal handlers only wake the main loop (through set_wakeup_fd); the
        work happens here, outside any handler.
        """
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)
        watched = _FileWatch(Path(self.config.source)) if auto_reload_interval else None
        self.start()
        try:
            while True:
                readable, _, _ = select.select([wake_read], [], [], auto_reload_interval)
                received = [signal.Signals(b) for b in wake_read.recv(64)] if readable else []
                if any(s in (signal.SIGTERM, signal.SIGINT) for s in received):
                    self.log.info("signal received", signal=received[-1].name)
                    break
                if signal.SIGHUP in received:
                    self.log.info("signal received", signal="SIGHUP")
                    self.reload()
                elif watched is not None and watched.changed():
                    self.log.info("config file changed", config=self.config.source)
                    self.reload()
        finally:
            signal.set_wakeup_fd(-1)
            wake_read.close()
            wake_write.close()
        return 0 if self.shutdown() else 1

    # -- internals -----------------------------------------------------------------

    def _prober(self, target: Target, guard: threading.Lock | None = None) -> Prober:
        return Prober(
            target,
            self.config.instance,
            self.metrics,
            stopping=self.stopping,
            backend=self._backends.get(target.name),
            logger=self.log,
            guard=guard,
        )

    def _apply(self, new: Config) -> dict[str, list[str]]:
        """Swap in `new`: unchanged targets keep their prober and schedule untouched."""
        same_instance = new.instance == self.config.instance
        self.config = new
        old = {p.target.name: p for p in self.probers}
        probers: list[Prober] = []
        changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
        for target in new.targets:
            previous = old.pop(target.name, None)
            if previous is not None and previous.target == target and same_instance:
                probers.append(previous)
                continue
            if previous is None:
                prober = self._prober(target)
                self.scheduler.add(prober)
                changes["added"].append(target.name)
            else:
                relabelled = (previous.target.backend, previous.target.buckets) != (
                    target.backend,
                    target.buckets,
                )
                self._retire(previous, drop_series=relabelled)
                prober = self._prober(target, guard=previous.guard)
                self.scheduler.replace(prober)
                changes["changed"].append(target.name)
            probers.append(prober)
        for previous in old.values():
            self.scheduler.remove(previous.target.name)
            self._retire(previous, drop_series=True)
            changes["removed"].append(previous.target.name)
        self.probers = probers
        return changes

    def _retire(self, prober: Prober, *, drop_series: bool) -> None:
        """Take `prober` out of service; a run it has in flight finishes under its config."""
        if drop_series:
            prober.record_results = False
            self.metrics.remove_target(prober.target)

        def close_when_idle() -> None:
            prober.wait_idle(shutdown_bound(prober.target))
            prober.close()

        threading.Thread(
            target=close_when_idle, name=f"retire:{prober.target.name}", daemon=True
        ).start()


class _FileWatch:
    """Notices when a file's content changes (for --config.auto-reload-interval)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest = self._read()

    def _read(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def changed(self) -> bool:
        digest = self._read()
        if digest is None or digest == self._digest:
            return False
        self._digest = digest
        return True
