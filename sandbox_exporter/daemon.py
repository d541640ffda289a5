"""The running exporter: wiring (metrics, probers, scheduler, HTTP), the signal loop,
reloads, and a shutdown that fits a bound.

Shutdown: scheduling stops and each run in flight is cancelled at its next phase
boundary; the call it is in may run to its timeout, then its sandbox is removed.
With `--shutdown.timeout` (a pod's termination grace period) the whole wait fits
that bound: when waiting any longer would leave no time to remove the sandboxes,
the calls in flight are cut short and the removals get what is left. A second
SIGTERM or SIGINT cuts them short at once; the removals are still attempted.
"""

from __future__ import annotations

import select
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from sandbox_exporter.config import Config, ConfigError
from sandbox_exporter.config.watch import FileWatch
from sandbox_exporter.logs import Logger
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.calls import Interrupt
from sandbox_exporter.probing.fleet import BackendFactory, Fleet
from sandbox_exporter.probing.health import unhealthy
from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.probing.scheduler import ProbeScheduler
from sandbox_exporter.web.app import create_app
from sandbox_exporter.web.http_parent import WebProcess
from sandbox_exporter.web.serving import ServingOptions
from sandbox_exporter.web.webconfig import WebConfig

_FINISHED = b"\0"  # written on the signal wake-up socket when the wind-down is over


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        listen_address: str | None = ":9878",
        backends: BackendFactory | None = None,
        logger: Logger | None = None,
        loader: Any = None,
        web_config: WebConfig | None = None,
        serving: ServingOptions | None = None,
    ) -> None:
        """`loader` re-reads the config for a reload (none: reload is refused).
        `listen_address` None: no HTTP at all (tests call `app` directly).
        `backends`: a backend object to use for a target instead of building one."""
        self.log = logger or structlog.get_logger("sandbox_exporter")
        self.started_at = time.time()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.metrics.config_loaded(True, time.time())
        self.stopping = threading.Event()
        self.interrupt = Interrupt()
        self._loader = loader
        self._reload_lock = threading.Lock()
        self._started = False
        self._serving = False
        self.fleet = Fleet(
            config,
            self.metrics,
            stopping=self.stopping,
            interrupt=self.interrupt,
            backends=backends,
            logger=self.log,
        )
        self.scheduler = ProbeScheduler(self.fleet.probers)
        self.app = create_app(self)
        self.web_config = web_config
        self.http: WebProcess | None = None
        if listen_address is not None:
            self.http = WebProcess(
                self.app,
                self.exposition,
                listen_address,
                web_config,
                serving,
                self.log,
                on_restart=self.metrics.web_restarts.inc,
            )

    @property
    def config(self) -> Config:
        return self.fleet.config

    @property
    def probers(self) -> list[Prober]:
        return self.fleet.probers

    # -- what the HTTP pages ask -------------------------------------------------

    def exposition(self, fmt: str = "text") -> bytes:
        if fmt == "openmetrics":
            return self.metrics.exposition("openmetrics")
        if fmt == "protobuf":
            return self.metrics.exposition("protobuf")
        return self.metrics.exposition("text")

    def current_probers(self) -> list[Prober]:
        return list(self.fleet.probers)

    def ready(self) -> bool:
        return self.scheduler.running and not self.stopping.is_set()

    def health(self) -> str | None:
        if not self._started or self.stopping.is_set():
            return None
        return unhealthy(self.fleet.probers, self.scheduler.running)

    def reload(self) -> list[str]:
        """Re-read the config; apply it, or keep the running one and say why not."""
        with self._reload_lock:
            if self._loader is None:
                return ["this exporter was started without a config file; nothing to re-read"]
            try:
                new = self._loader()
            except ConfigError as exc:
                self.metrics.config_loaded(False, time.time())
                self.log.error(
                    "config reload failed; the running config is kept", problems=exc.problems
                )
                return exc.problems
            before = self.config.not_found
            changes = self.fleet.apply(new, self.scheduler)
            self.metrics.config_loaded(True, time.time())
            self.log.info("config reloaded", config=new.source, **changes)
            if new.not_found != before:  # what the landing page now shows, the log says
                self._log_not_found()
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
            **(
                {"shard": "shard {} of {}".format(*self.config.shard)}
                if self.config.shard[1] > 1
                else {}
            ),
        )
        if not self.config.targets and self.config.shard[1] > 1:
            self.log.warning(
                "no target hashes to this shard; it probes nothing",
                shard="shard {} of {}".format(*self.config.shard),
            )
        self._log_not_found()

    def _log_not_found(self) -> None:
        """Each backend `targets: auto` did not find, and why: the landing page's words."""
        for backend, why in self.config.not_found.items():
            self.log.info("backend not found", backend=backend, reason=why)

    def shutdown_bound(self) -> float:
        """The longest the runs in flight take to wind down, uncut."""
        return max((p.target.timeouts.after_cancel for p in self.fleet.all()), default=0.0)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop scheduling, let the runs in flight clean up within `timeout` (default:
        `shutdown_bound()`), stop serving. True if every run finished."""
        self.begin_shutdown()
        return self.wind_down(
            time.monotonic() + (self.shutdown_bound() if timeout is None else timeout)
        )

    def begin_shutdown(self) -> None:
        self.stopping.set()
        self.scheduler.shutdown()

    def cut_short(self, deadline: float) -> None:
        """Cut the calls in flight short now; their removals get until `deadline`."""
        if not self.interrupt.is_set() and any(p.busy for p in self.fleet.all()):
            left = round(max(deadline - time.monotonic(), 0), 1)
            self.log.warning(
                "cutting short the calls in flight; removing their sandboxes", seconds_left=left
            )
        self.interrupt.fire(deadline)

    def wind_down(self, deadline: float) -> bool:
        """Wait for the runs in flight until `deadline`, cutting them short in time to
        remove their sandboxes; then close the backends and stop serving."""
        probers = self.fleet.all()
        reserve = max((p.target.timeouts.remove for p in probers if p.busy), default=0.0)
        reserve = min(reserve, max(deadline - time.monotonic(), 0.0) / 2)
        idle = all(p.wait_idle(deadline - reserve - time.monotonic()) for p in probers)
        if not idle:
            self.cut_short(deadline)
            idle = all(p.wait_idle(deadline - time.monotonic()) for p in probers)
        for prober in probers:
            if prober.busy:
                self.log.error(
                    "probe still running at shutdown; its sandbox is removed by "
                    "this instance's next start",
                    target=prober.target.name,
                )
            prober.close()
        if self.http is not None:
            self.http.stop()
        self.log.info("stopped", clean=idle)
        return idle

    def run_until_signal(
        self, auto_reload_interval: float | None = None, shutdown_timeout: float | None = None
    ) -> int:
        """Serve until SIGTERM or SIGINT; SIGHUP reloads; a second SIGTERM or SIGINT
        cuts the shutdown short. The exit status.

        Signal handlers only wake this loop (through set_wakeup_fd); the work
        happens here, outside any handler.
        """
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)
        watched = FileWatch(Path(self.config.source)) if auto_reload_interval else None
        stops = (signal.SIGTERM, signal.SIGINT)
        self.start()
        try:
            while True:
                received = _received(wake_read, auto_reload_interval)
                stopping = [s for s in received if s in stops]
                if stopping:
                    self.log.info("signal received", signal=_name(stopping[0]))
                    break
                if signal.SIGHUP in received:
                    self.log.info("signal received", signal="SIGHUP")
                    self.reload()
                elif watched is not None and watched.changed():
                    self.log.info("config file changed", config=self.config.source)
                    self.reload()
            self.begin_shutdown()
            bound = self.shutdown_bound() if shutdown_timeout is None else shutdown_timeout
            deadline = time.monotonic() + bound
            outcome: list[bool] = []

            def wind_down() -> None:
                outcome.append(self.wind_down(deadline))
                wake_write.send(_FINISHED)

            threading.Thread(target=wind_down, name="shutdown", daemon=True).start()
            again = stopping[1:]  # two may come together
            while not outcome:
                if again:
                    self.log.info("signal received again", signal=_name(again[0]))
                    self.cut_short(deadline)
                again = [s for s in _received(wake_read, None) if s in stops]
        finally:
            signal.set_wakeup_fd(-1)
            wake_read.close()
            wake_write.close()
        return 0 if outcome[0] else 1


def _received(wake: socket.socket, timeout: float | None) -> list[int]:
    """Signal numbers (and _FINISHED as 0) written since the last look; waits up to
    `timeout` (None: until something comes)."""
    readable, _, _ = select.select([wake], [], [], timeout)
    return list(wake.recv(64)) if readable else []


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
