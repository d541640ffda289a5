"""A logger that keeps a run's log lines (for `/probe?debug=true`) and still logs them."""

from __future__ import annotations

from typing import Any

from sandbox_exporter.logs import timestamp


class CapturingLogger:
    """Forwards every line to `inner` and appends it, as a dict, to `lines`."""

    def __init__(self, inner: Any, lines: list[dict[str, Any]], context: dict[str, Any]) -> None:
        self._inner = inner
        self.lines = lines
        self._context = context

    @classmethod
    def around(cls, inner: Any) -> CapturingLogger:
        return cls(inner, [], {})

    def bind(self, **values: Any) -> CapturingLogger:
        return CapturingLogger(self._inner.bind(**values), self.lines, {**self._context, **values})

    def _log(self, level: str, event: str, **values: Any) -> None:
        self.lines.append(
            {"ts": timestamp(), "level": level, "event": event, **self._context, **values}
        )
        getattr(self._inner, level)(event, **values)

    def debug(self, event: str, **values: Any) -> None:
        self._log("debug", event, **values)

    def info(self, event: str, **values: Any) -> None:
        self._log("info", event, **values)

    def warning(self, event: str, **values: Any) -> None:
        self._log("warning", event, **values)

    def error(self, event: str, **values: Any) -> None:
        self._log("error", event, **values)
