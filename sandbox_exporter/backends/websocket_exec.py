"""The exec websocket Kubernetes and Nomad share: connected within a deadline, kept
where `kill` can abort it from another thread, closed after.

Both APIs run a command over a websocket; their clients (the kubernetes client's
`stream()`, python-nomad, which has none) cannot bound the connect or each read by
a deadline, so both backends open it with websocket-client themselves, the library
`stream()` uses. Each backend builds its URL, headers and TLS options, and says in
its own words what a refused handshake and an unreachable server mean. An exec that
fails while reading (its output past the cap, say) drops the connection at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from sandbox_exporter.backends.base import BackendError


class ExecSockets:
    """The exec websockets open now, by sandbox name."""

    def __init__(self) -> None:
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connect(
        self,
        name: str,
        url: str,
        *,
        sslopt: dict[str, Any],
        refused: Callable[[Any], BackendError],
        unreachable: Callable[[Exception], BackendError],
        close_timeout: float,
        **options: Any,
    ) -> Iterator[Any]:
        """A websocket to `url` for sandbox `name`, connected with `options` (its
        `header`, its `timeout`: the deadline's). `refused(exc)` says what a handshake
        answered with an error status means, `unreachable(exc)` what any other failure
        to connect does."""
        import websocket

        ws = websocket.WebSocket(sslopt=sslopt, skip_utf8_validation=True)
        with self._lock:
            self._open[name] = ws
        try:
            try:
                ws.connect(url, **options)  # type: ignore[no-untyped-call]
            except websocket.WebSocketBadStatusException as exc:
                raise refused(exc) from exc
            except (websocket.WebSocketException, OSError) as exc:
                raise unreachable(exc) from exc
            yield ws
        except BaseException:
            # dropped at once: no closing handshake behind what is still coming (a flood)
            ws.shutdown()  # type: ignore[no-untyped-call]
            raise
        finally:
            with self._lock:
                self._open.pop(name, None)
            ws.close(timeout=close_timeout)

    def abort(self, name: str) -> None:
        """Abort the sandbox's open exec, if any: its reads end at once."""
        with self._lock:
            ws = self._open.get(name)
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.abort()
