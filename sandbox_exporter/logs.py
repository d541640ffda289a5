"""structlog set-up: JSON (default), logfmt or console lines on stderr."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "logfmt", "console"]
LEVELS = ("debug", "info", "warning", "error")
_current: tuple[str, LogFormat] = ("info", "json")


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
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def current_logging() -> tuple[str, LogFormat]:
    """The level and format last configured, for a child process to log alike."""
    return _current
