"""Messages between the exporter and its web process, over a Unix stream socket.

A message is a JSON header (a dict) and a body of bytes, each preceded by its
length: `>II` (header length, body length), header, body. The body stays raw
bytes, so a /metrics page of megabytes is not re-encoded on its way.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

_LENGTHS = struct.Struct(">II")
MAX_HEADER = 1 << 20
MAX_BODY = 1 << 30


class FrameError(Exception):
    """The peer sent something that is not a message."""


def send(sock: socket.socket, header: dict[str, Any], body: bytes = b"") -> None:
    """One message; callers sharing a socket between threads hold a lock around it."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    sock.sendall(_LENGTHS.pack(len(encoded), len(body)) + encoded)
    if body:
        sock.sendall(body)


def receive(sock: socket.socket) -> tuple[dict[str, Any], bytes] | None:
    """The next message, or None when the peer closed the connection between messages."""
    lengths = _read(sock, _LENGTHS.size, eof_ok=True)
    if lengths is None:
        return None
    header_length, body_length = _LENGTHS.unpack(lengths)
    if header_length > MAX_HEADER or body_length > MAX_BODY:
        raise FrameError(f"message too large: header {header_length}, body {body_length} bytes")
    header = json.loads(_read(sock, header_length) or b"{}")
    if not isinstance(header, dict):
        raise FrameError("a message header is not a JSON object")
    return header, _read(sock, body_length) or b""


def _read(sock: socket.socket, size: int, *, eof_ok: bool = False) -> bytes | None:
    view = memoryview(bytearray(size))
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0 and eof_ok:
                return None
            raise FrameError(f"connection closed in the middle of a message ({got}/{size} bytes)")
        got += n
    return bytes(view)
