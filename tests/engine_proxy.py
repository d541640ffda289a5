"""A Unix-socket proxy in front of a dockerd that can kill it in the middle of a phase:
after the engine has received the phase's request and done its work, the moment
its answer starts, before a byte of that answer reaches the client.

That is the hardest place for an engine to die: a container may now exist, run
or be gone without the exporter having been told. Requests are recognised by
their request line (`POST /v1.41/containers/create`, ...); everything else
passes through untouched.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

# the request that does each phase's work, as the docker SDK sends it
PHASE_REQUESTS = {
    "create": rb"POST /v[\d.]+/containers/create\b",
    "start": rb"POST /v[\d.]+/containers/[^/ ]+/start\b",
    "exec": rb"POST /v[\d.]+/exec/[^/ ]+/start\b",
    "stop": rb"POST /v[\d.]+/containers/[^/ ]+/stop\b",
    "remove": rb"DELETE /v[\d.]+/containers/[^/ ?]+[ ?]",
}


class KillingProxy:
    def __init__(self, path: Path, engine_socket: Path, kill: Callable[[], None]) -> None:
        """`kill` is called once, when the armed request's answer starts."""
        self.path = path
        self.url = f"unix://{path}"
        self._engine = engine_socket
        self._kill = kill
        self._pattern: re.Pattern[bytes] | None = None
        self._lock = threading.Lock()
        self.struck = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(64)
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    def arm(self, phase: str) -> None:
        with self._lock:
            self._pattern = re.compile(PHASE_REQUESTS[phase])
            self.struck.clear()

    def close(self) -> None:
        self._listener.close()
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            engine.connect(str(self._engine))
        except OSError:
            client.close()  # the engine is down: the client sees its connection refused
            engine.close()
            return
        watched = threading.Event()  # the armed request went through this connection
        threading.Thread(target=self._upstream, args=(client, engine, watched),
                         daemon=True).start()  # fmt: skip
        self._downstream(engine, client, watched)

    def _upstream(
        self, client: socket.socket, engine: socket.socket, watched: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._pattern is not None and self._pattern.search(data):
                        self._pattern = None  # once
                        watched.set()
                engine.sendall(data)
        _close(client, engine)

    def _downstream(
        self, engine: socket.socket, client: socket.socket, watched: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := engine.recv(65536):
                if watched.is_set():  # the answer to the armed request: it never arrives
                    self._kill()
                    self.struck.set()
                    break
                client.sendall(data)
        _close(client, engine)


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
