"""structlog set-up: JSON (default), logfmt or console lines on stderr.

Every line on stderr goes through the same renderer and the same timestamp:
the standard library's records (APScheduler's, the SDKs') are formatted by
structlog's ProcessorFormatter too, so a JSON log is JSON on every line. Their
loggers' chatter below WARNING is kept out unless the level is debug.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, Protocol, TextIO

import structlog

LogFormat = Literal["json", "logfmt", "console"]

LEVELS = ("debug", "info", "warning", "error")


class Logger(Protocol):
    """What the exporter logs through: structlog's bound logger, or one that also keeps
    the lines (/probe?debug=true)."""

    def bind(self, **values: Any) -> Logger: ...

    def debug(self, event: str, **values: Any) -> Any: ...

    def info(self, event: str, **values: Any) -> Any: ...

    def warning(self, event: str, **values: Any) -> Any: ...

    def error(self, event: str, **values: Any) -> Any: ...


_current: tuple[str, LogFormat] = ("info", "json")
# one timestamp format for every line, the daemon's and /probe?debug=true's: ISO 8601, UTC
TIMESTAMPER = structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts")
_handler: logging.Handler | None = None  # ours on the root logger, replaced on reconfiguring


def timestamp() -> str:
    """Now, as every log line writes it."""
    return str(TIMESTAMPER(None, "", {})["ts"])


def configure_logging(
    level: str = "info", fmt: LogFormat = "json", stream: TextIO | None = None
) -> None:
    global _current
    _current = (level, fmt)
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    elif fmt == "logfmt":
        renderer = structlog.processors.LogfmtRenderer(key_order=["ts", "level", "event"])
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            TIMESTAMPER,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(level, renderer, stream)


def _route_standard_logging(level: str, renderer: Any, stream: TextIO | None) -> None:
    global _handler
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                TIMESTAMPER,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    threshold = getattr(logging, level.upper())
    root.setLevel(threshold if level == "debug" else max(threshold, logging.WARNING))


def reset_logging() -> None:
    """Back to structlog's defaults, and the standard library's records to nobody
    (tests that configured logging onto a stream that is going away)."""
    global _handler
    structlog.reset_defaults()
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None


def current_logging() -> tuple[str, LogFormat]:
    """The level and format last configured, for a child process to log alike."""
    return _current
