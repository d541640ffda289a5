"""Serving HTTP in the exporter's own process: a threaded WSGI server on the listening
socket, TLS and basic auth from the web config, /metrics paced and every other path
rationed (429 beyond the rate), in front of the app that tests call directly."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import structlog

from exporter.web.front_process import FrontServer, Pacer, RequestBudget, require_auth
from exporter.web.front_supervisor import ServingOptions, listen
from exporter.web.responses import text

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from exporter.web.webconfig import WebConfig


RETRY = [("Retry-After", "1")]


def rationed(app: WSGIApplication, options: ServingOptions) -> WSGIApplication:
    """/metrics answers paced (a flood waits its turn, as latency); every other path
    at most `forwarded_per_second` (bursts of `forwarded_burst`, `forwarded_in_flight`
    at once); beyond either, 429 with Retry-After."""
    pacer = Pacer(options.scrapes_per_second)
    budget = RequestBudget(
        options.forwarded_per_second, options.forwarded_burst, options.forwarded_in_flight
    )

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics":
            if not pacer.admit():
                return text(start_response, "429 Too Many Requests",
                            "too many scrapes; try again shortly\n", RETRY)  # fmt: skip
            return app(environ, start_response)
        if not budget.acquire():
            return text(start_response, "429 Too Many Requests",
                        "too many requests; try again shortly\n", RETRY)  # fmt: skip
        try:
            return list(app(environ, start_response))
        finally:
            budget.release()

    return guarded


class InlineServer:
    def __init__(
        self,
        app: WSGIApplication,
        address: str,
        web_config: WebConfig | None = None,
        options: ServingOptions | None = None,
        logger: Any = None,
    ) -> None:
        options = options or ServingOptions()
        self._log = logger or structlog.get_logger("exporter")
        self._listener = listen(address)
        self.tls = web_config is not None and web_config.current().ssl_context is not None
        served = rationed(app, options)
        if web_config is not None:
            served = require_auth(served, web_config)
        self._server = FrontServer(self._listener, web_config, options.read_timeout)
        self._server.set_app(served)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        daemon=True)  # fmt: skip
        self.pid = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
