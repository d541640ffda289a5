"""HTTP: /metrics, /probe, /-/healthy, /-/ready, /-/reload and a landing page.

`create_app` builds a WSGI app from what it shows (an ExporterState), so
tests call it without a socket. Sockets are the web process's job
(http_child.py, started by http_parent.py): it answers clients and forwards to
this app what only the probing process can answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs

import sandbox_exporter
from sandbox_exporter.web import responses
from sandbox_exporter.web.landing import DEFAULT_REFRESH_SECONDS, About, landing_page
from sandbox_exporter.web.probe_endpoint import handle_probe

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from sandbox_exporter.config import Config
    from sandbox_exporter.probing.prober import Prober


class ExporterState(Protocol):
    """What the HTTP pages show and do; the Daemon is one."""

    def exposition(self, fmt: str) -> bytes:
        """/metrics in `fmt`: "text" (0.0.4) or "openmetrics"."""

    def current_probers(self) -> Sequence[Prober]: ...

    @property
    def config(self) -> Config:
        """The running config: the landing page shows its instance and file."""

    @property
    def started_at(self) -> float:
        """When the exporter started (wall clock): the landing page shows its uptime."""

    def ready(self) -> bool: ...

    def health(self) -> str | None:
        """None when healthy, else why not."""

    def reload(self) -> list[str]:
        """Re-read the config; the problems that kept it out (empty: reloaded)."""


MAX_REFRESH_SECONDS = 86400


def create_app(state: ExporterState, metrics_max_age: float = 1.0) -> WSGIApplication:
    rendered = responses.MetricsCache(state.exposition, metrics_max_age)
    version = str(sandbox_exporter.__version__)  # importlib.metadata: once, not per page

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/-/reload":
            if method not in ("POST", "PUT"):
                return _not_allowed(start_response, method, "POST, PUT")
            problems = state.reload()
            if problems:
                return responses.text(
                    start_response,
                    "500 Internal Server Error",
                    "config not reloaded; the running one is kept:\n" + "\n".join(problems) + "\n",
                )
            return responses.text(start_response, "200 OK", "config reloaded\n")
        if method not in ("GET", "HEAD"):
            return _not_allowed(start_response, method, "GET, HEAD")
        if path == "/metrics":
            fmt = responses.metrics_format(environ.get("HTTP_ACCEPT", ""))
            return responses.metrics(rendered.get(fmt), fmt, environ, start_response)
        if path == "/probe":
            probers = {p.target.name: p for p in state.current_probers()}
            status, headers, body = handle_probe(environ, probers, state.config)
            start_response(status, [*headers, ("Content-Length", str(len(body)))])
            return [body]
        if path == "/-/healthy":
            problem = state.health()
            if problem is None:
                return responses.text(start_response, "200 OK", "Healthy\n")
            return responses.text(
                start_response, "503 Service Unavailable", f"Unhealthy: {problem}\n"
            )
        if path == "/-/ready":
            if state.ready():
                return responses.text(start_response, "200 OK", "Ready\n")
            return responses.text(start_response, "503 Service Unavailable", "Not ready\n")
        if path == "/":
            try:
                refresh = _refresh(environ.get("QUERY_STRING", ""))
            except ValueError as exc:
                return responses.text(start_response, "400 Bad Request", f"{exc}\n")
            config = state.config
            about = About(config.instance, config.source, version, state.started_at)
            page = landing_page(
                state.current_probers(),
                about,
                now=time.time(),
                refresh=refresh,
                not_found=config.not_found,
            )
            body = page.encode()
            start_response(
                "200 OK",
                [
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Cache-Control", "no-store"),
                    ("Content-Length", str(len(body))),
                ],
            )
            return [body]
        return responses.text(start_response, "404 Not Found", f"no such page: {path}\n")

    return app


def _refresh(query: str) -> int:
    """`/?refresh=SECONDS`: how often the landing page refreshes (0: never)."""
    values = parse_qs(query).get("refresh")
    if not values:
        return DEFAULT_REFRESH_SECONDS
    value = values[-1]
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_REFRESH_SECONDS:
        raise ValueError(
            f"refresh: expected whole seconds from 0 (never) to {MAX_REFRESH_SECONDS}, "
            f"got {value!r}"
        )
    return int(value)


def _not_allowed(start_response: StartResponse, method: str, allowed: str) -> list[bytes]:
    return responses.text(
        start_response, "405 Method Not Allowed", f"{method} not allowed\n", [("Allow", allowed)]
    )


def parse_listen_address(address: str) -> tuple[str, int]:
    """`:9878`, `127.0.0.1:9878`, `[::1]:9878` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected [host]:port such as :9878 or 127.0.0.1:9878, got {address!r}")
    return host.strip("[]"), int(port)
