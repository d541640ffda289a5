"""HTTP: /metrics, /probe, /-/healthy, /-/ready, /-/reload and a landing page.

`create_app` builds a WSGI app from what it shows (an ExporterState), so
tests call it without a socket; HttpServer puts it on a threaded server.
"""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from exporter.landing import landing_page
from exporter.probe_endpoint import handle_probe
from exporter.webconfig import WebConfig

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from exporter.prober import Prober


class ExporterState(Protocol):
    """What the HTTP pages show and do; the Daemon is one."""

    def exposition(self) -> bytes: ...

    def current_probers(self) -> Sequence[Prober]: ...

    def ready(self) -> bool: ...

    def health(self) -> str | None:
        """None when healthy, else why not."""

    def reload(self) -> list[str]:
        """Re-read the config; the problems that kept it out (empty: reloaded)."""


class RenderCache:
    """One rendering of /metrics serves every scrape within `max_age` seconds, and only
    one rendering runs at a time: a flood of scrapes costs one render a second, not
    one per request, and leaves the CPU to the probes whose timing it would skew."""

    def __init__(self, render: Callable[[], bytes], max_age: float = 1.0) -> None:
        self._render = render
        self._max_age = max_age
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._at = 0.0

    def get(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            if self._body is None or now - self._at >= self._max_age:
                self._body = self._render()
                self._at = now
            return self._body


def create_app(state: ExporterState, metrics_max_age: float = 1.0) -> WSGIApplication:
    rendered = RenderCache(state.exposition, metrics_max_age)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/-/reload":
            if method not in ("POST", "PUT"):
                return _not_allowed(start_response, method, "POST, PUT")
            problems = state.reload()
            if problems:
                return _text(start_response, "500 Internal Server Error",
                             "config not reloaded; the running one is kept:\n"
                             + "\n".join(problems) + "\n")  # fmt: skip
            return _text(start_response, "200 OK", "config reloaded\n")
        if method not in ("GET", "HEAD"):
            return _not_allowed(start_response, method, "GET, HEAD")
        if path == "/metrics":
            return _metrics(rendered.get(), environ, start_response)
        if path == "/probe":
            probers = {p.target.name: p for p in state.current_probers()}
            status, headers, body = handle_probe(environ, probers)
            start_response(status, [*headers, ("Content-Length", str(len(body)))])
            return [body]
        if path == "/-/healthy":
            problem = state.health()
            if problem is None:
                return _text(start_response, "200 OK", "Healthy\n")
            return _text(start_response, "503 Service Unavailable", f"Unhealthy: {problem}\n")
        if path == "/-/ready":
            if state.ready():
                return _text(start_response, "200 OK", "Ready\n")
            return _text(start_response, "503 Service Unavailable", "Not ready\n")
        if path == "/":
            body = landing_page(state.current_probers()).encode()
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])  # fmt: skip
            return [body]
        return _text(start_response, "404 Not Found", f"no such page: {path}\n")

    return app


def _not_allowed(start_response: StartResponse, method: str, allowed: str) -> list[bytes]:
    return _text(start_response, "405 Method Not Allowed", f"{method} not allowed\n",
                 [("Allow", allowed)])  # fmt: skip


def _metrics(body: bytes, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    headers = [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)]
    if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
        body = gzip.compress(body, compresslevel=6)
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Length", str(len(body))))
    start_response("200 OK", headers)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def _text(
    start_response: StartResponse,
    status: str,
    body: str,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = body.encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    start_response(status, headers + (extra or []))
    return [data]


class _QuietHandler(WSGIRequestHandler):
    # A client that sends nothing (or trickles) gives up its thread after this.
    timeout = 30.0

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    web_config: WebConfig | None = None
    handshake_timeout = 10.0

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's own thread: TLS handshake with the settings current now."""
        settings = self.web_config.current() if self.web_config is not None else None
        if settings is not None and settings.ssl_context is not None:
            request.settimeout(self.handshake_timeout)
            try:
                request = settings.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                request.close()
                return
            request.settimeout(None)
        super().finish_request(request, client_address)


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


def parse_listen_address(address: str) -> tuple[str, int]:
    """`:9878`, `127.0.0.1:9878`, `[::1]:9878` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected [host]:port such as :9878 or 127.0.0.1:9878, got {address!r}")
    return host.strip("[]"), int(port)


def require_auth(app: WSGIApplication, web_config: WebConfig) -> WSGIApplication:
    """Basic auth on every path, with the users of the current web config."""

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if web_config.current().authorized(environ.get("HTTP_AUTHORIZATION")):
            return app(environ, start_response)
        return _text(start_response, "401 Unauthorized", "Unauthorized\n",
                     [("WWW-Authenticate", 'Basic realm="sandbox-exporter"')])  # fmt: skip

    return guarded


class HttpServer:
    """The app on a threaded server in a background thread, TLS and auth per web config."""

    def __init__(
        self, app: WSGIApplication, address: str, web_config: WebConfig | None = None
    ) -> None:
        host, port = parse_listen_address(address)
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        if web_config is not None:
            app = require_auth(app, web_config)
        self._server = make_server(
            host or "0.0.0.0",  # noqa: S104 - an exporter listens on all interfaces by default
            port,
            app,
            server_class=server_class,
            handler_class=_QuietHandler,
        )
        self._server.web_config = web_config
        self.tls = web_config is not None and web_config.current().ssl_context is not None
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
