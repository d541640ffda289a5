"""WSGI responses both HTTP sides send: plain text, /metrics (OpenMetrics, the text
format or protobuf, gzip when asked), and the cache that lets a flood of scrapes cost one
rendering a second per format.

Light on purpose: the web process imports it, and nothing of the probing side.
"""

from __future__ import annotations

import functools
import gzip
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


# prometheus_client's and metrics/protobuf.py's (tests check they agree), written out so
# that the web process imports neither prometheus_client nor protobuf
CONTENT_TYPES = {
    "text": "text/plain; version=0.0.4; charset=utf-8",
    "openmetrics": "application/openmetrics-text; version=1.0.0; charset=utf-8",
    "protobuf": "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; "
    "encoding=delimited",
}
PROTOBUF_PARAMETERS = {"proto": "io.prometheus.client.MetricFamily", "encoding": "delimited"}


def _offered(media: str, params: dict[str, str]) -> str | None:
    """The format an item of Accept asks for, if it is one this exporter writes."""
    if media == "application/vnd.google.protobuf":
        wanted = all(params.get(k) == v for k, v in PROTOBUF_PARAMETERS.items())
        return "protobuf" if wanted else None
    if media == "application/openmetrics-text":
        version = params.get("version", "")
        try:
            if not version or tuple(int(n) for n in version.split(".")) >= (1, 0, 0):
                return "openmetrics"
        except ValueError:
            return None
        return None
    return "text" if media in ("text/plain", "*/*", "text/*") else None


def metrics_format(accept: str) -> str:
    """The format of the highest `q` the scraper accepts (the first listed, on a tie):
    "protobuf" (`application/vnd.google.protobuf`, delimited `MetricFamily`
    messages: what Prometheus asks for when it wants native histograms),
    "openmetrics" (version 1.0.0 or later, or none given) or "text", which is also
    the answer when nothing listed is known. Without `q` values it decides as
    prometheus_client's `choose_encoder` does, which a test checks."""
    best, best_q = "text", -1.0
    for item in accept.split(","):
        media, *rest = (part.strip() for part in item.split(";"))
        params = {}
        for part in rest:
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            continue
        fmt = _offered(media.lower(), params)
        if fmt is not None and q > best_q and q > 0:
            best, best_q = fmt, q
    return best


class Rendered:
    """One rendering of /metrics, and its gzip form, compressed once when first asked."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._gzipped: bytes | None = None
        self._lock = threading.Lock()

    def gzipped(self) -> bytes:
        with self._lock:
            if self._gzipped is None:
                self._gzipped = gzip.compress(self.body, compresslevel=6)
            return self._gzipped


class RenderCache:
    """One rendering serves every scrape within `max_age` seconds, and only one
    rendering runs at a time: a flood of scrapes costs one render a second, not one
    per request. (One cache per format.)"""

    def __init__(self, render: Callable[[], bytes], max_age: float = 1.0) -> None:
        self._render = render
        self._max_age = max_age
        self._lock = threading.Lock()
        self._rendered: Rendered | None = None
        self._at = 0.0

    def get(self) -> Rendered:
        with self._lock:
            now = time.monotonic()
            if self._rendered is None or now - self._at >= self._max_age:
                self._rendered = Rendered(self._render())
                self._at = now
            return self._rendered


class MetricsCache:
    """A RenderCache for each format, `render(fmt)` making the page."""

    def __init__(self, render: Callable[[str], bytes], max_age: float = 1.0) -> None:
        self._caches = {
            fmt: RenderCache(functools.partial(render, fmt), max_age) for fmt in CONTENT_TYPES
        }

    def get(self, fmt: str) -> Rendered:
        return self._caches[fmt].get()


def metrics(
    rendered: Rendered, fmt: str, environ: WSGIEnvironment, start_response: StartResponse
) -> list[bytes]:
    headers = [("Content-Type", CONTENT_TYPES[fmt])]
    body = rendered.body
    if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
        body = rendered.gzipped()
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Length", str(len(body))))
    start_response("200 OK", headers)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def text(
    start_response: StartResponse,
    status: str,
    body: str,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = body.encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    start_response(status, headers + (extra or []))
    return [data]
