"""An aiohttp application served on loopback from a thread of its own: what the API
doubles (fake_kubernetes.py, fake_nomad.py) share, so that a real client library in
the test's thread talks to them over real sockets.

A subclass builds its routes in `_app()`, sets up its state, then calls `_start()`.
`stop()` takes the server down (connections refused), `restart()` brings it back on
the same port with its state kept, `close()` ends the loop and its thread.

`Commands` runs what their execs are asked to, for real, on this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


class LoopbackApp:
    _ssl: ssl.SSLContext | None = None  # serve HTTPS (and WSS) with it

    def _app(self) -> web.Application:
        raise NotImplementedError

    def _start(self) -> None:
        self.commands = Commands()
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
        self._on_loop(self._stop())

    async def _stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def restart(self) -> None:
        """Bring the server back on the same port, its state kept."""
        self._on_loop(self._listen(self.port))

    def running_commands(self) -> list[int]:
        """The pids of the exec commands still running (see `Commands`)."""
        return self._on_loop(self._commands_running())

    async def _commands_running(self) -> list[int]:
        return self.commands.pids()

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        """`work` run on the server's loop, from another thread; its value."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._on_loop(self.commands.end_all())
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _spawn(self, work: Any) -> None:
        """Run `work` (a coroutine) on the server's loop, keeping it referenced."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


READ_SIZE = 32 * 1024  # what one read of a command's pipe gives (Go's io.Copy buffer)


class Commands:
    """The commands of the doubles' execs, run for real on this host, where the
    container's process would run: their stdout and stderr sent as they come, a
    piece at a time, each once the one before it is sent (a client that reads slowly
    slows the command down, at a full pipe). As in a container, a command goes on
    when the client that started it goes away, its output dropped, until it ends or
    its sandbox (`owner`) does."""

    def __init__(self) -> None:
        self._running: dict[str, set[asyncio.subprocess.Process]] = {}
        self._draining: set[asyncio.Future[Any]] = set()

    async def run(
        self, owner: str, command: Sequence[str], send: Callable[[str, bytes], Awaitable[None]]
    ) -> int:
        """Run `command`; `send(stream, data)` its output (stream "stdout" or "stderr");
        its exit code, 127 when there is no such program (said on stdout, as shells do)."""
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError:
            await send("stdout", f"{command[0]}: not found\n".encode())
            return 127
        self._running.setdefault(owner, set()).add(process)
        pieces: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(maxsize=1)

        async def pump(stream: str, pipe: asyncio.StreamReader | None) -> None:
            assert pipe is not None
            while data := await pipe.read(READ_SIZE):
                await pieces.put((stream, data))

        async def pumps() -> None:
            await asyncio.gather(pump("stdout", process.stdout), pump("stderr", process.stderr))
            await pieces.put(None)

        async def drop() -> None:
            while await pieces.get() is not None:
                pass
            await process.wait()
            self._running.get(owner, set()).discard(process)

        reading = asyncio.ensure_future(pumps())
        sent = False
        try:
            while (piece := await pieces.get()) is not None:
                await send(*piece)
            sent = True
        finally:
            if not sent:  # the client went away: the rest is dropped
                for task in (reading, asyncio.ensure_future(drop())):
                    self._draining.add(task)
                    task.add_done_callback(self._draining.discard)
        code = await process.wait()
        self._running.get(owner, set()).discard(process)
        return code

    async def end(self, owner: str) -> None:
        """The sandbox `owner` is gone: what still runs in it is killed."""
        for process in self._running.pop(owner, set()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def end_all(self) -> None:
        for owner in list(self._running):
            await self.end(owner)

    def pids(self) -> list[int]:
        """The commands still running, in any sandbox (on the double's loop)."""
        return [p.pid for group in self._running.values() for p in group if p.returncode is None]
