"""Messages between the exporter and its web process, on a multiprocessing Connection
over a socket pair: a JSON header (a dict) and a body of raw bytes, each one message
of the connection, which does the framing. The body is never re-encoded, so a
/metrics page of megabytes crosses as it is; nothing is unpickled.

Light on purpose: the web process imports it, and nothing of the probing side.
"""

from __future__ import annotations

import json
from multiprocessing.connection import Connection
from typing import Any

MAX_HEADER = 1 << 20


class BridgeError(Exception):
    """The peer sent something that is not a message."""


def send(connection: Connection, header: dict[str, Any], body: bytes = b"") -> None:
    """One message; callers sharing a connection between threads hold a lock around it."""
    connection.send_bytes(json.dumps(header, separators=(",", ":")).encode())
    connection.send_bytes(body)


def receive(connection: Connection) -> tuple[dict[str, Any], bytes] | None:
    """The next message, or None when the peer closed the connection."""
    try:
        raw = connection.recv_bytes(MAX_HEADER)
        body = connection.recv_bytes()
    except EOFError:
        return None
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise BridgeError(f"a message header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BridgeError("a message header is not a JSON object")
    return header, body
