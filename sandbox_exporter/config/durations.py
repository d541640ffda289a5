"""Prometheus-style durations (`500ms`, `30s`, `5m`, `1h30m`) to seconds and back."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
EXAMPLES = "such as 500ms, 30s, 5m or 1h30m"
# the same form as a JSON Schema pattern (config/schema.py)
DURATION_PART = _PART.pattern
DURATION_PATTERN = rf"^\s*({DURATION_PART})+\s*$"


def parse_duration(value: object) -> float:
    """Seconds for a duration string; ValueError with the expected form otherwise.

    A bare number is refused on purpose: `interval: 60` could mean seconds or
    minutes, and a config that guesses is a config that surprises at 3 a.m.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        hint = " (a bare number: add a unit)" if isinstance(value, int | float) else ""
        raise ValueError(f"expected a duration {EXAMPLES}, got {value!r}{hint}")
    text = value.strip()
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"expected a duration {EXAMPLES}, got {value!r}")
    return total


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    if seconds % 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"
