"""`targets: auto`: which backends answer on this machine right now.

Uses raw sockets rather than any SDK, so discovery imports nothing heavy.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from typing import Any

DOCKER_SOCKET = "/var/run/docker.sock"


def docker_url(environ: dict[str, str] | None = None) -> str:
    """The engine the Docker CLI would use: DOCKER_HOST, else the default socket."""
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or f"unix://{DOCKER_SOCKET}"


def unix_socket_answers_ping(path: str, timeout: float = 1.0) -> bool:
    """True when an HTTP `GET /_ping` over the Unix socket at `path` gets a 200."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
            head = sock.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.") and b" 200 " in head[:16]


def namespace_available() -> bool:
    return sys.platform.startswith("linux") and all(
        shutil.which(tool) for tool in ("unshare", "nsenter")
    )


def discover_targets() -> list[dict[str, Any]]:
    """Target dicts for every backend found: Docker if its socket answers, namespace on Linux."""
    found: list[dict[str, Any]] = []
    url = docker_url()
    if url.startswith("unix://") and unix_socket_answers_ping(url.removeprefix("unix://")):
        found.append({"name": "docker", "backend": "docker", "docker": {"base_url": url}})
    if namespace_available():
        found.append({"name": "namespace", "backend": "namespace"})
    return found
