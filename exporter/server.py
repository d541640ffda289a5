"""HTTP: /metrics, /-/healthy, /-/ready and a landing page, as a WSGI app.

`create_app` takes what it shows as arguments, so tests call it without a
socket; `serve` puts it on a threaded server.
"""

from __future__ import annotations

import gzip
import html
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from exporter import __version__

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from exporter.prober import Prober


def create_app(
    exposition: Callable[[], bytes],
    probers: Callable[[], Sequence[Prober]],
    ready: Callable[[], bool],
) -> WSGIApplication:
    """`exposition` renders /metrics (Metrics.exposition); the others feed the other pages."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", f"{method} not allowed\n",
                         [("Allow", "GET, HEAD")])  # fmt: skip
        if path == "/metrics":
            return _metrics(exposition(), environ, start_response)
        if path == "/-/healthy":
            return _text(start_response, "200 OK", "Healthy\n")
        if path == "/-/ready":
            if ready():
                return _text(start_response, "200 OK", "Ready\n")
            return _text(start_response, "503 Service Unavailable", "Not ready\n")
        if path == "/":
            body = landing_page(probers()).encode()
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])  # fmt: skip
            return [body]
        return _text(start_response, "404 Not Found", f"no such page: {path}\n")

    return app


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


def landing_page(probers: Sequence[Prober]) -> str:
    rows = []
    for prober in probers:
        target = prober.target
        result = prober.last_result
        if result is None:
            outcome, reason, when, figure = "not run yet", "", "", ""
        else:
            outcome = "success" if result.success else "failure"
            failures = [result.failure] if result.failure else result.cleanup_failures
            reason = "; ".join(f"{f.phase} {f.reason}: {f.message}" for f in failures)
            when = datetime.fromtimestamp(result.finished_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            tte = result.time_to_exec
            figure = f"{tte * 1000:.1f} ms" if tte is not None else ""
        cells = (
            target.name,
            target.backend,
            f"{target.interval:g}s",
            outcome,
            figure,
            when,
            reason,
        )
        rows.append(
            f'<tr class="{html.escape(outcome.split()[0])}">'
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sandbox-exporter</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 10px;text-align:left}}
.failure{{color:#b00}} .success{{color:#070}}</style></head>
<body><h1>sandbox-exporter {html.escape(__version__)}</h1>
<p><a href="/metrics">Metrics</a> &middot; <a href="/-/healthy">Health</a>
 &middot; <a href="/-/ready">Readiness</a></p>
<table><tr><th>Target</th><th>Backend</th><th>Interval</th><th>Last result</th>
<th>Time to exec</th><th>Finished</th><th>Failure</th></tr>
{"".join(rows)}
</table></body></html>
"""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


def parse_listen_address(address: str) -> tuple[str, int]:
    """`:9878`, `127.0.0.1:9878`, `[::1]:9878` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected [host]:port such as :9878 or 127.0.0.1:9878, got {address!r}")
    return host.strip("[]"), int(port)


class HttpServer:
    """The app on a threaded server in a background thread."""

    def __init__(self, app: WSGIApplication, address: str) -> None:
        host, port = parse_listen_address(address)
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        self._server = make_server(
            host or "0.0.0.0",  # noqa: S104 - an exporter listens on all interfaces by default
            port,
            app,
            server_class=server_class,
            handler_class=_QuietHandler,
        )
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
