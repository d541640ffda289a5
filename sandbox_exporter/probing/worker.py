"""Backend calls in a worker process, for a backend whose calls cannot run on the
exporter's threads (an in-process native library that may hold the interpreter):
`ProcessCalls` on the exporter's side, and `python -m sandbox_exporter.probing.worker
FD PARENT_PID` on the worker's.

On the connection at FD the worker first receives what to build, `(module, options,
timeouts)`, then runs one call at a time: `(method, args, deadline)` in,
`(True, value)` or `(False, error)` out; `None` in closes the backend and ends it.

At a call's deadline the worker is killed with its process group, which ends the
call whatever it was doing and leaves nothing behind; the next call starts a new
worker. The kernel kills the worker when the exporter dies (PR_SET_PDEATHSIG), even
while it is frozen in a native call that holds its interpreter.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import multiprocessing.connection
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar, cast

from sandbox_exporter.backends.base import BackendError, BackendOptions, Deadline, SandboxRef
from sandbox_exporter.config.durations import format_duration
from sandbox_exporter.config.settings import Timeouts
from sandbox_exporter.probing.calls import Calls, Interrupt, PhaseTimeout, outcome, stopped

T = TypeVar("T")

PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the exporter went before the request took hold
        os._exit(1)


def serve(connection: Connection) -> None:
    module, options, timeouts = connection.recv()
    backend: Any = None
    try:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return  # the exporter is gone
            if message is None:
                return
            method, args, deadline_at = message
            try:
                if backend is None:
                    backend = importlib.import_module(module).KIND.build(options, timeouts)
                value = getattr(backend, method)(*args, Deadline(deadline_at))
            except BaseException as exc:  # noqa: BLE001 - every error goes back to the caller
                connection.send((False, portable(exc)))
            else:
                connection.send((True, value))
    finally:
        if backend is not None:
            backend.close()


# -- the exporter's side ----------------------------------------------------


class _Spawner:
    """Starts worker processes from one thread that lives as long as the exporter.

    A worker asks the kernel to kill it when its parent goes (PR_SET_PDEATHSIG),
    so that a killed exporter leaves no worker behind; the kernel means the parent
    *thread*, and the threads that run probes come and go."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]]]
        self._requests = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, start: Callable[[], T]) -> T:
        """`start()` on the spawner thread; its value, or its exception raised here."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="worker-spawner", daemon=True
                )
                self._thread.start()
        answer: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._requests.put((start, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        return cast(T, value)

    def _serve(self) -> None:
        while True:
            start, answer = self._requests.get()
            try:
                answer.put((True, start()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                answer.put((False, exc))


_SPAWNER = _Spawner()


class _Worker:
    def __init__(self, process: subprocess.Popen[bytes], connection: Connection) -> None:
        self.process = process
        self.connection = connection

    def kill(self) -> None:
        """The worker and its process group (what it ran), at once; reaped."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.kill()
        self.process.wait()
        self.connection.close()


class ProcessCalls(Calls):
    """Calls in a worker process (see the module docstring). One call at a time."""

    def __init__(self, module: str, options: BackendOptions, timeouts: Timeouts, label: str):
        self._module = module
        self._options = options
        self._timeouts = timeouts
        self._label = label
        self._lock = threading.Lock()
        self._worker: _Worker | None = None

    @property
    def worker_pid(self) -> int | None:
        """The worker's, while one runs."""
        worker = self._worker
        return worker.process.pid if worker is not None else None

    def _dispatch(
        self,
        method: str,
        args: tuple[object, ...],
        *,
        timeout: float,
        sandbox: SandboxRef | None,
        interrupt: Interrupt | None,
        on_late: Callable[[object], None] | None = None,
    ) -> object:
        deadline = Deadline.after(timeout)
        if not self._lock.acquire(timeout=deadline.remaining()):
            raise PhaseTimeout(
                f"{method} waited {format_duration(timeout)} for the worker "
                "process, busy with another call"
            )
        try:
            worker = self._worker or self._start()
            try:
                worker.connection.send((method, args, deadline.at))
            except (OSError, ValueError) as exc:
                raise self._died(worker, method, exc) from exc
            waiting: list[Any] = [worker.connection]
            if interrupt is not None:
                waiting.append(interrupt.fileno())
            ready = multiprocessing.connection.wait(waiting, deadline.remaining())
            if worker.connection not in ready:
                self._worker = None
                worker.kill()
                raise stopped(method, timeout, interrupt)
            try:
                ok, payload = worker.connection.recv()
            except (EOFError, OSError) as exc:
                raise self._died(worker, method, exc) from exc
            if ok:
                return payload
            raise outcome(method, timeout, payload, deadline)
        finally:
            self._lock.release()

    def _start(self) -> _Worker:
        """A new worker: `python -m sandbox_exporter.probing.worker` in a session of its own
        (its process group is what a timeout kills), told what to build."""
        ours, theirs = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "sandbox_exporter.probing.worker",
            str(theirs.fileno()),
            str(os.getpid()),
        ]
        # the backend module may be found only through this process's path (tests)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                command,
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        try:
            process = _SPAWNER.run(start)
        except OSError as exc:
            ours.close()
            raise BackendError(f"cannot start a worker process for {self._label}: {exc}") from exc
        finally:
            theirs.close()
        connection = Connection(ours.detach())
        worker = _Worker(process, connection)
        try:
            connection.send((self._module, self._options, self._timeouts))
        except OSError as exc:
            raise self._died(worker, "start-up", exc) from exc
        self._worker = worker
        return worker

    def _died(self, worker: _Worker, method: str, exc: BaseException) -> BackendError:
        self._worker = None
        worker.kill()
        return BackendError(
            f"the worker process of {self._label} died during {method} "
            f"(exit status {worker.process.returncode}): {exc or type(exc).__name__}"
        )

    def close_when_idle(self) -> None:
        with self._lock:
            self._stop_worker()

    def close(self) -> None:
        if self._lock.acquire(timeout=1.0):
            try:
                self._stop_worker()
            finally:
                self._lock.release()
        elif (worker := self._worker) is not None:
            self._worker = None
            worker.kill()  # a call is still in the worker at shutdown: it goes with it

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        with contextlib.suppress(OSError, ValueError):
            worker.connection.send(None)  # the worker closes its backend and exits
        try:
            worker.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            worker.kill()
        worker.connection.close()


def portable(error: BaseException) -> BaseException:
    """`error` if it survives pickling (to cross from a worker), else a BackendError
    with its message."""
    try:
        pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, just made
    except Exception:  # noqa: BLE001 - any failure to pickle
        return BackendError(str(error) or type(error).__name__)
    return error


# -- the worker's side ------------------------------------------------------


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the exporter decides when it stops
    serve(Connection(fd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
