"""The web process: answers HTTP clients apart from the probes, so that serving them
never takes the interpreter (or, at its lower priority, the CPU) a probe is timed on.

It serves /metrics from a rendering at most `metrics_max_age` old (fetched from
the exporter at most once in that time, gzipped once), paced to a number of
answers a second; does TLS and basic auth; and forwards every other request to
the exporter, which alone knows its targets. Forwarded requests are rationed (a
rate and a number in flight) so a flood of them cannot reach the probing side
either; beyond that a client gets 429. It exits when the exporter's end of the
bridge closes.

This module is the child's side, run as `python -m sandbox_exporter.web.http_child` by
http_parent.WebProcess, with the listening socket and its end of the bridge (a
multiprocessing Connection, see bridge.py) as inherited file descriptors.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from sandbox_exporter.web import bridge, responses
from sandbox_exporter.web.pacing import Pacer, RequestBudget
from sandbox_exporter.web.serving import ServingOptions

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from sandbox_exporter.web.webconfig import WebConfig

# the parts of a request the exporter's app reads; never the process environment,
# which wsgiref copies into every request's environ
FORWARDED_KEYS = frozenset(
    {
        "REQUEST_METHOD",
        "PATH_INFO",
        "QUERY_STRING",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "wsgi.url_scheme",
    }
)
METRICS_FETCH_TIMEOUT = 10.0


class BridgeClosed(Exception):
    """The exporter is gone (or going): nothing more can be asked of it."""


class UpstreamError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Answer:
    ready: threading.Event = field(default_factory=threading.Event)
    message: tuple[dict[str, Any], bytes] | None = None


class Bridge:
    """Questions to the exporter, each answered by id, from as many threads as ask."""

    def __init__(self, connection: Connection, on_closed: Callable[[], None]) -> None:
        self._connection = connection
        self._on_closed = on_closed
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[int, _Answer] = {}
        self._ids = itertools.count(1)
        self._closed = False
        threading.Thread(target=self._read, name="bridge", daemon=True).start()

    def ask(
        self, header: dict[str, Any], timeout: float | None = None
    ) -> tuple[dict[str, Any], bytes]:
        answer = _Answer()
        with self._lock:
            if self._closed:
                raise BridgeClosed("the exporter has closed the bridge")
            ident = next(self._ids)
            self._pending[ident] = answer
        try:
            try:
                with self._send_lock:
                    bridge.send(self._connection, {**header, "id": ident})
            except OSError as exc:
                raise BridgeClosed(f"the exporter cannot be reached: {exc}") from None
            if not answer.ready.wait(timeout):
                raise TimeoutError(f"the exporter did not answer within {timeout:g}s")
            if answer.message is None:
                raise BridgeClosed("the exporter closed the bridge before answering")
            return answer.message
        finally:
            with self._lock:
                self._pending.pop(ident, None)

    def _read(self) -> None:
        try:
            while (message := bridge.receive(self._connection)) is not None:
                with self._lock:
                    answer = self._pending.get(message[0].get("id", 0))
                if answer is not None:
                    answer.message = message
                    answer.ready.set()
        except (OSError, bridge.BridgeError):
            pass  # a broken bridge is a closed one
        with self._lock:
            self._closed = True
            waiting = list(self._pending.values())
        for answer in waiting:
            answer.ready.set()
        self._on_closed()


def forwarded_environ(environ: WSGIEnvironment) -> dict[str, str]:
    return {
        key: value
        for key, value in environ.items()
        if isinstance(value, str) and (key in FORWARDED_KEYS or key.startswith("HTTP_"))
    }


def front_app(
    exporter: Bridge, budget: RequestBudget, metrics_max_age: float, pacer: Pacer
) -> WSGIApplication:
    def fetch_metrics(fmt: str) -> bytes:
        header, body = exporter.ask({"kind": "metrics", "format": fmt}, METRICS_FETCH_TIMEOUT)
        if not str(header.get("status", "")).startswith("200"):
            raise UpstreamError(str(header.get("status")), body.decode(errors="replace"))
        return body

    cache = responses.MetricsCache(fetch_metrics, metrics_max_age)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics" and environ.get("REQUEST_METHOD") in (
            "GET",
            "HEAD",
        ):
            if not pacer.admit():
                return responses.text(
                    start_response,
                    "429 Too Many Requests",
                    "too many scrapes; try again shortly\n",
                    [("Retry-After", "1")],
                )
            fmt = responses.metrics_format(environ.get("HTTP_ACCEPT", ""))
            try:
                rendered = cache.get(fmt)
            except UpstreamError as exc:
                return responses.text(start_response, exc.status, f"{exc}\n")
            except (BridgeClosed, TimeoutError) as exc:
                return responses.text(start_response, "503 Service Unavailable", f"{exc}\n")
            return responses.metrics(rendered, fmt, environ, start_response)
        if not budget.acquire():
            return responses.text(
                start_response,
                "429 Too Many Requests",
                "too many requests to the exporter; try again shortly\n",
                [("Retry-After", "1")],
            )
        try:
            header, body = exporter.ask({"kind": "request", "environ": forwarded_environ(environ)})
        except BridgeClosed as exc:
            return responses.text(start_response, "503 Service Unavailable", f"{exc}\n")
        finally:
            budget.release()
        start_response(str(header["status"]), [(str(k), str(v)) for k, v in header["headers"]])
        return [body]

    return app


def require_auth(app: WSGIApplication, web_config: WebConfig) -> WSGIApplication:
    """Basic auth on every path, with the users of the current web config."""

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if web_config.current().authorized(environ.get("HTTP_AUTHORIZATION")):
            return app(environ, start_response)
        return responses.text(
            start_response,
            "401 Unauthorized",
            "Unauthorized\n",
            [("WWW-Authenticate", 'Basic realm="sandbox-exporter"')],
        )

    return guarded


class _Handler(WSGIRequestHandler):
    server: FrontServer

    def setup(self) -> None:
        # a client that sends nothing (or trickles) gives up its thread after this
        self.request.settimeout(self.server.read_timeout)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FrontServer(ThreadingMixIn, WSGIServer):
    """A threaded WSGI server on a socket that is already listening (the exporter's)."""

    daemon_threads = True
    handshake_timeout = 10.0

    def __init__(
        self, listener: socket.socket, web_config: WebConfig | None, read_timeout: float
    ) -> None:
        self.address_family = listener.family
        super().__init__(listener.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.server_address = listener.getsockname()
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.web_config = web_config
        self.read_timeout = read_timeout
        self.setup_environ()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's own thread: TLS handshake with the settings current now."""
        settings = self.web_config.current() if self.web_config is not None else None
        if settings is not None and settings.ssl_context is not None:
            request.settimeout(self.handshake_timeout)
            try:
                request = settings.ssl_context.wrap_socket(request, server_side=True)
            except OSError:  # ssl.SSLError among them
                request.close()
                return
            request.settimeout(None)
        super().finish_request(request, client_address)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox_exporter.web.http_child")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--bridge-fd", type=int, required=True)
    parser.add_argument("--web-config")
    parser.add_argument("--serving", type=ServingOptions.from_json, required=True)
    parser.add_argument("--log-level", required=True)
    parser.add_argument("--log-format", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The exporter handles these for both processes (a terminal's Ctrl-C, or systemd
    # stopping the whole cgroup, reaches this one too) and stops this one once it has
    # wound down, by closing the bridge; /metrics is served until then.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    serving: ServingOptions = args.serving
    if serving.nice:
        os.nice(serving.nice)
    listener = socket.socket(fileno=args.listen_fd)

    web_config = None
    if args.web_config:
        from sandbox_exporter.logs import configure_logging
        from sandbox_exporter.web.webconfig import WebConfig

        configure_logging(args.log_level, args.log_format)
        web_config = WebConfig(args.web_config)  # checked by the exporter before it started us
    exporter = Bridge(Connection(args.bridge_fd), on_closed=lambda: os._exit(0))
    budget = RequestBudget(
        serving.forwarded_per_second, serving.forwarded_burst, serving.forwarded_in_flight
    )
    app = front_app(exporter, budget, serving.metrics_max_age, Pacer(serving.scrapes_per_second))
    if web_config is not None:
        app = require_auth(app, web_config)
    server = FrontServer(listener, web_config, serving.read_timeout)
    server.set_app(app)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
