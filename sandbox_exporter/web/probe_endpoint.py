"""`/probe?target=NAME[&record=true][&debug=true]`: one lifecycle now, its figures back.

The run takes the target's no-overlap guard, like a scheduled run: a busy
target answers 409 rather than starting a second sandbox. The request waits
at most Prometheus's scrape timeout (`X-Prometheus-Scrape-Timeout-Seconds`,
less half a second), a `timeout` parameter, or the longest a run can take;
past that it answers 504 and the run goes on to its cleanup in the background.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import structlog
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from sandbox_exporter.config.discovery import missing_backend
from sandbox_exporter.config.durations import parse_duration
from sandbox_exporter.metrics.single_run import exposition
from sandbox_exporter.probing.report import as_dict
from sandbox_exporter.results import ProbeResult
from sandbox_exporter.web.capture import CapturingLogger

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from sandbox_exporter.config import Config
    from sandbox_exporter.probing.prober import Prober

Response = tuple[str, list[tuple[str, str]], bytes]
TEXT = [("Content-Type", "text/plain; charset=utf-8")]
SCRAPE_MARGIN_SECONDS = 0.5


def _plain(status: str, text: str) -> Response:
    return status, TEXT, text.encode()


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    value = query.get(name, ["false"])[-1].lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    return value in ("true", "1")


def _timeout(environ: WSGIEnvironment, query: Mapping[str, list[str]], prober: Prober) -> float:
    if "timeout" in query:
        return parse_duration(query["timeout"][-1])
    header = environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS")
    if header:
        try:
            return max(float(header) - SCRAPE_MARGIN_SECONDS, 0.1)
        except ValueError:
            pass
    return prober.target.timeouts.whole_run


def handle_probe(
    environ: WSGIEnvironment, probers: Mapping[str, Prober], config: Config | None = None
) -> Response:
    """`config`: the running one, to say why a backend's name is not a target."""
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    configured = ", ".join(sorted(probers)) or "(none)"
    name = query.get("target", [""])[-1]
    if not name:
        return _plain("400 Bad Request", f"target: required; configured: {configured}\n")
    prober = probers.get(name)
    if prober is None:
        why = missing_backend(config, name) if config is not None else None
        if why is not None:
            return _plain(
                "404 Not Found", f"target: no target {name!r}: {why}; configured: {configured}\n"
            )
        return _plain(
            "404 Not Found", f"target: unknown target {name!r}; configured: {configured}\n"
        )
    try:
        record = _flag(query, "record")
        debug = _flag(query, "debug")
        timeout = _timeout(environ, query, prober)
    except ValueError as exc:
        return _plain("400 Bad Request", f"{exc}\n")

    logger = CapturingLogger.around(structlog.get_logger("sandbox_exporter").bind(via="/probe"))
    outcome: list[ProbeResult | None] = []
    done = threading.Event()

    def work() -> None:
        try:
            outcome.append(prober.run_now(record=record, logger=logger))
        finally:
            done.set()

    threading.Thread(target=work, name=f"probe:{name}", daemon=True).start()
    if not done.wait(timeout):
        return _plain(
            "504 Gateway Timeout",
            f"the run of {name} did not finish within {timeout:g}s; it goes on and cleans up\n",
        )
    result = outcome[0] if outcome else None
    if result is None:
        return _plain(
            "409 Conflict",
            f"target {name} is busy: a run is in progress; try again once it has finished\n",
        )
    if debug:
        lines = [json.dumps(line, default=str) for line in logger.lines]
        lines.append(json.dumps({"event": "result", **as_dict(result)}))
        return "200 OK", TEXT, ("\n".join(lines) + "\n").encode()
    return "200 OK", [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)], exposition(result)
