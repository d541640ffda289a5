"""Unix-socket proxies in front of a Docker-API engine, for what an engine does only
now and then:

- `KillingProxy` kills it in the middle of a phase: after the engine has received
  the phase's request and done its work, the moment its answer starts, before a
  byte of that answer reaches the client. That is the hardest place for an engine
  to die: a container may now exist, run or be gone without the exporter having
  been told.
- `CoalescingProxy` hands the client the answer to an exec start and the first frame
  of the command's output in one write, as an engine does when the command is
  quicker than the client (a loaded host, a fast `echo`): a client that reads the
  output from the socket under its HTTP parser loses that frame.

Requests are recognised by their request line (`POST /v1.41/containers/create`,
...); everything else passes through untouched.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
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


class _Proxy:
    """Passes every connection through to the engine; `_answer` forwards the engine's
    side of a connection that carried the watched request."""

    def __init__(self, path: Path, engine_socket: Path) -> None:
        self.path = path
        self.url = f"unix://{path}"
        self._engine = engine_socket
        self._pattern: re.Pattern[bytes] | None = None
        self._once = True
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(64)
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    def watch(self, phase: str, *, once: bool) -> None:
        with self._lock:
            self._pattern = re.compile(PHASE_REQUESTS[phase])
            self._once = once

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
        watched = threading.Event()  # the watched request went through this connection
        threading.Thread(target=self._upstream, args=(client, engine, watched), daemon=True).start()
        with contextlib.suppress(OSError):
            self._downstream(engine, client, watched)
        _close(client, engine)

    def _upstream(
        self, client: socket.socket, engine: socket.socket, watched: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._pattern is not None and self._pattern.search(data):
                        if self._once:
                            self._pattern = None
                        watched.set()
                engine.sendall(data)
        _close(client, engine)

    def _downstream(
        self, engine: socket.socket, client: socket.socket, watched: threading.Event
    ) -> None:
        while data := engine.recv(65536):
            if watched.is_set():
                self._answer(data, engine, client)
                return
            client.sendall(data)

    def _answer(self, first: bytes, engine: socket.socket, client: socket.socket) -> None:
        raise NotImplementedError


class KillingProxy(_Proxy):
    def __init__(self, path: Path, engine_socket: Path, kill: Callable[[], None]) -> None:
        """`kill` is called once, when the armed request's answer starts."""
        super().__init__(path, engine_socket)
        self._kill = kill
        self.struck = threading.Event()

    def arm(self, phase: str) -> None:
        self.watch(phase, once=True)
        self.struck.clear()

    def _answer(self, first: bytes, engine: socket.socket, client: socket.socket) -> None:
        self._kill()  # the answer to the armed request: it never arrives
        self.struck.set()


class CoalescingProxy(_Proxy):
    """Every exec start's answer reaches the client with the output's first frame
    behind its headers, in one write."""

    def __init__(self, path: Path, engine_socket: Path) -> None:
        super().__init__(path, engine_socket)
        self.coalesced = 0  # answers handed over with a frame behind their headers
        self.watch("exec", once=False)

    def _answer(self, first: bytes, engine: socket.socket, client: socket.socket) -> None:
        held = first
        while not _has_a_frame(held) and (data := engine.recv(65536)):
            held += data
        if _has_a_frame(held):
            with self._lock:
                self.coalesced += 1
        client.sendall(held)
        while data := engine.recv(65536):
            client.sendall(data)


def _has_a_frame(answer: bytes) -> bool:
    """The headers and, behind them, one whole frame of multiplexed output."""
    _, separator, body = answer.partition(b"\r\n\r\n")
    if not separator or len(body) < 8:
        return False
    length: int = struct.unpack(">BxxxL", body[:8])[1]
    return len(body) >= 8 + length


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
