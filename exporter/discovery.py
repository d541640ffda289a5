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
PODMAN_SOCKET = "/run/podman/podman.sock"


def docker_url(environ: dict[str, str] | None = None) -> str:
    """The engine the Docker CLI would use: DOCKER_HOST, else the default socket."""
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or f"unix://{DOCKER_SOCKET}"


def podman_url(environ: dict[str, str] | None = None) -> str:
    """Podman's API socket: CONTAINER_HOST, else rootful as root, else the user's rootless one."""
    env = os.environ if environ is None else environ
    if env.get("CONTAINER_HOST", "").startswith("unix://"):
        return env["CONTAINER_HOST"]
    if os.geteuid() == 0:
        return f"unix://{PODMAN_SOCKET}"
    runtime_dir = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"unix://{runtime_dir}/podman/podman.sock"


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
    """Target dicts for every backend found: Docker and Podman if their sockets answer
    (Podman once, when DOCKER_HOST already points at it), namespace on Linux."""
    found: list[dict[str, Any]] = []
    for name, url in (("docker", docker_url()), ("podman", podman_url())):
        if any(t[t["backend"]]["base_url"] == url for t in found):
            continue
        if url.startswith("unix://") and unix_socket_answers_ping(url.removeprefix("unix://")):
            found.append({"name": name, "backend": name, name: {"base_url": url}})
    if namespace_available():
        found.append({"name": "namespace", "backend": "namespace"})
    return found
