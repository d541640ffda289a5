"""An aiohttp application served on loopback from a thread of its own: what the API
doubles (fake_kubernetes.py, fake_nomad.py) share, so that a real client library in
the test's thread talks to them over real sockets.

A subclass builds its routes in `_app()`, sets up its state, then calls `_start()`.
`stop()` takes the server down (connections refused), `restart()` brings it back on
the same port with its state kept, `close()` ends the loop and its thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from typing import Any

from aiohttp import web


class LoopbackApp:
    _ssl: ssl.SSLContext | None = None  # serve HTTPS (and WSS) with it

    def _app(self) -> web.Application:
        raise NotImplementedError

    def _start(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._changed: asyncio.Condition | None = None  # notified when the state moves
        self._runner: web.AppRunner | None = None
        self.port = 0
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        self.url = f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._changed = asyncio.Condition()
        self._loop.run_until_complete(self._listen(0))
        started.set()
        self._loop.run_forever()

    async def _listen(self, port: int) -> None:
        self._runner = web.AppRunner(self._app(), shutdown_timeout=0.1, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", port, reuse_address=True, ssl_context=self._ssl
        )
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        """Take the server down: open connections are dropped, new ones refused."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    async def _stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def restart(self) -> None:
        """Bring the server back on the same port, its state kept."""
        asyncio.run_coroutine_threadsafe(self._listen(self.port), self._loop).result(10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _spawn(self, work: Any) -> None:
        """Run `work` (a coroutine) on the server's loop, keeping it referenced."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
