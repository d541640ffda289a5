"""Durations, ages and times as the landing page writes them."""

from __future__ import annotations

from datetime import UTC, datetime


def duration(seconds: float) -> str:
    """A measured duration: `12.3 ms` below a second, `2.41 s` from one."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def age(seconds: float) -> str:
    """How long ago, or for how long, to the precision a reader wants: `42 s`,
    `4 min 12 s`, `2 h 5 min`, `3 d 4 h`."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m} min"
    d, h = divmod(h, 24)
    return f"{d} d {h} h"


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
