"""The exporter's (the parent's) side of its web process; http_child.py is the child's,
and says why there is one.

WebProcess binds the listening socket here, so a bad address fails at start-up
with the exporter's own error, and hands it to a child process that serves it.
The child forwards what only the exporter can answer over the bridge (bridge.py: a
multiprocessing Connection on a socket pair); each question is answered on its
own thread by the same WSGI app the tests call. A child that dies is started
again (the socket stays bound, so clients wait in the backlog rather than being
refused); the child exits when the exporter does.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import structlog

from sandbox_exporter.logs import Logger, current_logging
from sandbox_exporter.web import bridge
from sandbox_exporter.web.app import parse_listen_address
from sandbox_exporter.web.serving import ServingOptions

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from sandbox_exporter.web.webconfig import WebConfig

JSONHeaders = list[list[str]]
RESTART_BACKOFF_MAX = 30.0


def listen(address: str) -> socket.socket:
    host, port = parse_listen_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # an exporter listens on all interfaces by default
        sock.bind((host or "0.0.0.0", port))  # noqa: S104
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class WebProcess:
    def __init__(
        self,
        app: WSGIApplication,
        exposition: Callable[[str], bytes],
        address: str,
        web_config: WebConfig | None = None,
        options: ServingOptions | None = None,
        logger: Logger | None = None,
        on_restart: Callable[[], None] = lambda: None,
    ) -> None:
        self._app = app
        self._exposition = exposition
        self._options = options or ServingOptions()
        self._web_config = web_config
        self.tls = web_config is not None and web_config.current().ssl_context is not None
        self._log = logger or structlog.get_logger("sandbox_exporter")
        self._on_restart = on_restart
        self._listener = listen(address)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._bridge: socket.socket | None = None
        self._supervisor = threading.Thread(target=self._supervise, name="web", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def pid(self) -> int | None:
        """The web process's, while one runs."""
        with self._lock:
            return self._process.pid if self._process is not None else None

    def start(self) -> None:
        self._supervisor.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process, ours = self._process, self._bridge
        if ours is not None:
            _shut(ours)  # the web process exits when its end closes
        if process is not None:
            _reap(process, timeout=5)
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=10)
        self._listener.close()

    # -- the child -------------------------------------------------------------------

    def _command(self, bridge_fd: int) -> list[str]:
        level, fmt = current_logging()
        command = [
            sys.executable,
            "-m",
            "sandbox_exporter.web.http_child",
            "--listen-fd",
            str(self._listener.fileno()),
            "--bridge-fd",
            str(bridge_fd),
            "--serving",
            self._options.to_json(),
            "--log-level",
            level,
            "--log-format",
            fmt,
        ]
        if self._web_config is not None:
            command += ["--web-config", str(self._web_config.path)]
        return command

    def _spawn(self) -> tuple[subprocess.Popen[bytes], socket.socket]:
        """The child, and our end of the bridge (shut down to make it exit)."""
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                self._command(theirs.fileno()),
                pass_fds=(self._listener.fileno(), theirs.fileno()),
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        return process, ours

    def _supervise(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                process, ours = self._spawn()
            except OSError as exc:
                self._log.error("web process could not start", error=str(exc))
            else:
                with self._lock:
                    if self._stopping.is_set():
                        _shut(ours)
                        _reap(process, timeout=5)
                        return
                    self._process, self._bridge = process, ours
                with Connection(os.dup(ours.fileno())) as channel:
                    self._answer(channel)  # until the web process closes its end
                _shut(ours)
                status = _reap(process, timeout=5)
                with self._lock:
                    self._process = self._bridge = None
                if self._stopping.is_set():
                    return
                self._on_restart()
                self._log.error("web process exited; starting another", exit_status=status)
            failures = failures + 1 if time.monotonic() - began < 60 else 1
            self._stopping.wait(min(0.5 * 2 ** (failures - 1), RESTART_BACKOFF_MAX))

    # -- answering it ----------------------------------------------------------------

    def _answer(self, channel: Connection) -> None:
        send_lock = threading.Lock()
        try:
            while (message := bridge.receive(channel)) is not None:
                threading.Thread(
                    target=self._reply,
                    args=(channel, send_lock, *message),
                    name="web-request",
                    daemon=True,
                ).start()
        except (OSError, bridge.BridgeError) as exc:
            if not self._stopping.is_set():
                self._log.warning("web process bridge broke", error=str(exc))

    def _reply(
        self, channel: Connection, send_lock: threading.Lock, header: dict[str, Any], body: bytes
    ) -> None:
        try:
            answer, payload = self._handle(header, body)
        except Exception as exc:  # noqa: BLE001 - a page's failure is that page's 500, only
            self._log.error("web request failed", error=str(exc) or type(exc).__name__)
            answer = {
                "status": "500 Internal Server Error",
                "headers": [["Content-Type", "text/plain; charset=utf-8"]],
            }
            payload = b"internal error; see the exporter's log\n"
        answer["id"] = header.get("id")
        try:
            with send_lock:
                bridge.send(channel, answer, payload)
        except OSError:
            pass  # the web process went away, and its client with it

    def _handle(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        if header.get("kind") == "metrics":
            return {"status": "200 OK", "headers": []}, self._exposition(
                header.get("format", "text")
            )
        environ: dict[str, Any] = {
            **header["environ"],
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        started: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            started["status"], started["headers"] = status, headers
            return lambda data: None

        chunks = self._app(environ, start_response)
        try:
            payload = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        headers: JSONHeaders = [[k, v] for k, v in started["headers"]]
        return {"status": started["status"], "headers": headers}, payload


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _reap(process: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
