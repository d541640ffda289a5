"""Where backend calls run, so that a timeout can end them.

Every call gets a `Deadline`. The caller stops waiting at the deadline (or at
once when an `Interrupt` fires at shutdown), and then:

- `ThreadCalls` (backends whose calls may run on threads): the call ran on a
  thread of its own; it is abandoned, the backend is told to `kill` what it left
  running for the sandbox, and if it returns later, `on_late` gets its value (a
  sandbox made late is removed then). The backend bounds all its I/O by the
  deadline, so the thread ends by itself.
- `ProcessCalls` (an in-process native library, whose calls can hold the
  interpreter and so cannot be abandoned on a thread): the backend lives in a
  worker process (worker.py); the worker and its process group are killed,
  which ends the call whatever it was doing and leaves nothing behind; the next
  call starts a new worker.

A call that fails at or after its deadline counts as timed out, whatever the
backend raised when its own socket timeout fired.
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any, Protocol, TypeVar, cast

from sandbox_exporter.backends.base import (
    Backend,
    BackendError,
    BackendOptions,
    BackendTimeout,
    Deadline,
    SandboxRef,
)
from sandbox_exporter.config.durations import format_duration
from sandbox_exporter.config.settings import Timeouts

T = TypeVar("T")


class PhaseTimeout(Exception):
    """The call did not finish within its deadline."""


class Interrupted(Exception):
    """The call was cut short by an Interrupt (a shutdown that cannot wait any more)."""


class Interrupt:
    """Cuts the calls in flight short, for a shutdown that cannot wait for them.

    `fire(until)` wakes every waiting call at once (they raise Interrupted); the
    runs then clean up, each removal bounded by `until` (monotonic time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fired = threading.Event()
        self._waiters: set[threading.Event] = set()
        self._pipe: tuple[int, int] | None = None
        self.until: float | None = None

    def fire(self, until: float) -> None:
        with self._lock:
            self.until = until if self.until is None else min(until, self.until)
            self._fired.set()
            waiters = list(self._waiters)
            if self._pipe is not None:
                os.write(self._pipe[1], b"!")
        for waiter in waiters:
            waiter.set()

    def is_set(self) -> bool:
        return self._fired.is_set()

    @contextlib.contextmanager
    def waking(self, event: threading.Event) -> Iterator[None]:
        """While inside, firing sets `event` (at once if already fired)."""
        with self._lock:
            self._waiters.add(event)
        if self._fired.is_set():
            event.set()
        try:
            yield
        finally:
            with self._lock:
                self._waiters.discard(event)

    def fileno(self) -> int:
        """A descriptor that becomes readable once fired (for waits on connections)."""
        with self._lock:
            if self._pipe is None:
                self._pipe = os.pipe()
                if self._fired.is_set():
                    os.write(self._pipe[1], b"!")
            return self._pipe[0]


class Calls(Protocol):
    """How the runner, the collector and `bench` reach a backend."""

    def call(
        self,
        method: str,
        *args: Any,
        timeout: float,
        sandbox: SandboxRef | None = None,
        interrupt: Interrupt | None = None,
        on_late: Callable[[Any], None] | None = None,
    ) -> Any:
        """`backend.<method>(*args, deadline)`, ended at `timeout` seconds (PhaseTimeout)
        or when `interrupt` fires (Interrupted). `sandbox`: what the call works on, for
        `kill`. `on_late`: gets the value of a call that returns after being abandoned."""

    def close_when_idle(self) -> None:
        """Close the backend once no call is in flight (waits for that)."""

    def close(self) -> None:
        """Close the backend now (shutdown)."""


def _outcome(
    method: str, timeout: float, error: BaseException, deadline: Deadline
) -> BaseException:
    """What a failed call raises: its error, or PhaseTimeout if it failed at its deadline."""
    timed_out = deadline.expired or isinstance(error, BackendTimeout)
    if timed_out and not isinstance(error, PhaseTimeout | Interrupted):
        return PhaseTimeout(f"{method} did not finish within {format_duration(timeout)}: {error}")
    return error


def _stopped(method: str, timeout: float, interrupt: Interrupt | None) -> Exception:
    if interrupt is not None and interrupt.is_set():
        return Interrupted(f"{method} cut short: the exporter is shutting down")
    return PhaseTimeout(f"{method} did not finish within {format_duration(timeout)}")


class _ThreadCall:
    """One call on its own thread; the waiter may give up on it."""

    def __init__(self, fn: Callable[[], Any], name: str, on_late: Callable[[Any], None] | None,
                 on_end: Callable[[], None]) -> None:  # fmt: skip
        self._fn = fn
        self._on_late = on_late
        self._on_end = on_end
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._finished = False
        self._abandoned = False
        self.value: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def _work(self) -> None:
        try:
            try:
                self.value = self._fn()
            except BaseException as exc:  # noqa: BLE001 - carried to the waiting thread
                self.error = exc
            with self._lock:
                self._finished = True
                late = self._abandoned
            self._wake.set()
            if late and self.error is None and self._on_late is not None:
                self._on_late(self.value)
        finally:
            self._on_end()

    def run(self, deadline: Deadline, interrupt: Interrupt | None) -> bool:
        """Start, wait until done, the deadline or the interrupt; False if given up."""
        self._thread.start()
        with interrupt.waking(self._wake) if interrupt else contextlib.nullcontext():
            self._wake.wait(deadline.remaining())
        with self._lock:
            if not self._finished:
                self._abandoned = True
            return self._finished


class ThreadCalls:
    """Calls on threads (see the module docstring)."""

    def __init__(self, backend: Backend[Any], label: str) -> None:
        self.backend = backend
        self._label = label
        self._busy = 0
        self._idle = threading.Condition()

    def call(
        self,
        method: str,
        *args: Any,
        timeout: float,
        sandbox: SandboxRef | None = None,
        interrupt: Interrupt | None = None,
        on_late: Callable[[Any], None] | None = None,
    ) -> Any:
        deadline = Deadline.after(timeout)
        fn = getattr(self.backend, method)
        with self._idle:
            self._busy += 1
        call = _ThreadCall(lambda: fn(*args, deadline), f"{self._label}:{method}", on_late,
                           self._ended)  # fmt: skip
        if not call.run(deadline, interrupt):
            if sandbox is not None:
                with contextlib.suppress(Exception):  # best effort; the timeout is the news
                    self.backend.kill(sandbox)
            raise _stopped(method, timeout, interrupt)
        if call.error is not None:
            raise _outcome(method, timeout, call.error, deadline)
        return call.value

    def _ended(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def close_when_idle(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0)
        self.close()

    def close(self) -> None:
        self.backend.close()


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
                self._thread = threading.Thread(target=self._serve, name="worker-spawner",
                                                daemon=True)  # fmt: skip
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


class ProcessCalls:
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

    def call(
        self,
        method: str,
        *args: Any,
        timeout: float,
        sandbox: SandboxRef | None = None,
        interrupt: Interrupt | None = None,
        on_late: Callable[[Any], None] | None = None,
    ) -> Any:
        deadline = Deadline.after(timeout)
        if not self._lock.acquire(timeout=deadline.remaining()):
            raise PhaseTimeout(f"{method} waited {format_duration(timeout)} for the worker "
                               "process, busy with another call")  # fmt: skip
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
                raise _stopped(method, timeout, interrupt)
            try:
                ok, payload = worker.connection.recv()
            except (EOFError, OSError) as exc:
                raise self._died(worker, method, exc) from exc
            if ok:
                return payload
            raise _outcome(method, timeout, payload, deadline)
        finally:
            self._lock.release()

    def _start(self) -> _Worker:
        """A new worker: `python -m sandbox_exporter.probing.worker` in a session of its own
        (its process group is what a timeout kills), told what to build."""
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "sandbox_exporter.probing.worker", str(theirs.fileno()),
                   str(os.getpid())]  # fmt: skip
        # the backend module may be found only through this process's path (tests)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(command, pass_fds=(theirs.fileno(),), env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

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
