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
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sandbox_exporter.backends.base import (
    Backend,
    BackendError,
    BackendTimeout,
    Deadline,
    ExecResult,
    ManagedSandbox,
    SandboxRef,
    SandboxSpec,
)
from sandbox_exporter.config.durations import format_duration

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


class Calls(ABC):
    """How the runner, the collector and the commands reach a backend: one method per
    backend call, each returning its real type, every one ended at `timeout` seconds
    (PhaseTimeout) or when `interrupt` fires (Interrupted). Where the call runs is the
    subclass's `_dispatch`.

    `sandbox` is what a call that outlives its deadline leaves running, for the
    backend's `kill` (by default the sandbox the call works on). `on_late` gets what
    an abandoned `create` or `start` made once it returns after all."""

    @abstractmethod
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
        """`backend.<method>(*args, deadline)`, its value as the backend returned it."""

    @abstractmethod
    def close_when_idle(self) -> None:
        """Close the backend once no call is in flight (waits for that)."""

    @abstractmethod
    def close(self) -> None:
        """Close the backend now (shutdown)."""

    def ping(
        self,
        *,
        timeout: float,
        sandbox: SandboxRef | None = None,
        interrupt: Interrupt | None = None,
    ) -> None:
        self._dispatch("ping", (), timeout=timeout, sandbox=sandbox, interrupt=interrupt)

    def prepare(
        self,
        spec: SandboxSpec,
        *,
        timeout: float,
        sandbox: SandboxRef | None = None,
        interrupt: Interrupt | None = None,
    ) -> None:
        self._dispatch("prepare", (spec,), timeout=timeout, sandbox=sandbox, interrupt=interrupt)

    def describe(self, image: str | None, *, timeout: float) -> dict[str, str]:
        """What the backend says of its engine and of `image` (versions, digests), for
        `bench --json`; empty when it says nothing (the method is optional)."""
        try:
            found = self._dispatch(
                "describe", (image,), timeout=timeout, sandbox=None, interrupt=None
            )
        except Exception:  # noqa: BLE001 - optional, and only a report's detail
            return {}
        if not isinstance(found, dict):
            return {}
        return {str(k): str(v) for k, v in found.items()}

    def image_present(
        self,
        image: str,
        *,
        timeout: float,
        sandbox: SandboxRef | None = None,
        interrupt: Interrupt | None = None,
    ) -> bool:
        present = self._dispatch(
            "image_present", (image,), timeout=timeout, sandbox=sandbox, interrupt=interrupt
        )
        return bool(_expect("image_present", present, bool))

    def pull_image(
        self,
        image: str,
        *,
        timeout: float,
        sandbox: SandboxRef | None = None,
        interrupt: Interrupt | None = None,
    ) -> None:
        self._dispatch(
            "pull_image", (image,), timeout=timeout, sandbox=sandbox, interrupt=interrupt
        )

    def import_image(self, rootfs: bytes, image: str, path: str, *, timeout: float) -> None:
        self._dispatch(
            "import_image", (rootfs, image, path), timeout=timeout, sandbox=None, interrupt=None
        )

    def create(
        self,
        spec: SandboxSpec,
        *,
        timeout: float,
        interrupt: Interrupt | None = None,
        on_late: Callable[[SandboxRef], None] | None = None,
    ) -> SandboxRef:
        """The handle of the sandbox made; `kill` gets the spec's name at the deadline."""
        late = None if on_late is None else _late(on_late)
        made = self._dispatch(
            "create",
            (spec,),
            timeout=timeout,
            sandbox=SandboxRef(spec.name),
            interrupt=interrupt,
            on_late=late,
        )
        return _expect("create", made, SandboxRef)

    def start(
        self,
        sandbox: SandboxRef,
        *,
        timeout: float,
        interrupt: Interrupt | None = None,
        on_late: Callable[[], None] | None = None,
    ) -> None:
        late = None if on_late is None else (lambda _: on_late())
        self._dispatch(
            "start", (sandbox,), timeout=timeout, sandbox=sandbox, interrupt=interrupt, on_late=late
        )

    def exec(
        self,
        sandbox: SandboxRef,
        command: Sequence[str],
        *,
        timeout: float,
        interrupt: Interrupt | None = None,
    ) -> ExecResult:
        answer = self._dispatch(
            "exec", (sandbox, command), timeout=timeout, sandbox=sandbox, interrupt=interrupt
        )
        return _expect("exec", answer, ExecResult)

    def stop(
        self,
        sandbox: SandboxRef,
        grace_seconds: float,
        *,
        timeout: float,
        interrupt: Interrupt | None = None,
    ) -> None:
        self._dispatch(
            "stop", (sandbox, grace_seconds), timeout=timeout, sandbox=sandbox, interrupt=interrupt
        )

    def remove(
        self, sandbox: SandboxRef, *, timeout: float, interrupt: Interrupt | None = None
    ) -> None:
        self._dispatch("remove", (sandbox,), timeout=timeout, sandbox=sandbox, interrupt=interrupt)

    def list_managed(self, target: str, *, timeout: float) -> list[ManagedSandbox]:
        found = _expect(
            "list_managed",
            self._dispatch(
                "list_managed", (target,), timeout=timeout, sandbox=None, interrupt=None
            ),
            list,
        )
        return [_expect("list_managed", item, ManagedSandbox) for item in found]


def _expect(method: str, value: object, kind: type[T]) -> T:
    """`value`, which `method` must have returned as a `kind`: a backend that broke its
    contract is an error of the call, not a crash further on."""
    if not isinstance(value, kind):
        raise BackendError(f"{method} returned {type(value).__name__}, not {kind.__name__}")
    return value


def _late(on_late: Callable[[SandboxRef], None]) -> Callable[[object], None]:
    def late(value: object) -> None:
        if isinstance(value, SandboxRef):
            on_late(value)

    return late


def outcome(method: str, timeout: float, error: BaseException, deadline: Deadline) -> BaseException:
    """What a failed call raises: its error, or PhaseTimeout if it failed at its deadline."""
    timed_out = deadline.expired or isinstance(error, BackendTimeout)
    if timed_out and not isinstance(error, PhaseTimeout | Interrupted):
        return PhaseTimeout(f"{method} did not finish within {format_duration(timeout)}: {error}")
    return error


def stopped(method: str, timeout: float, interrupt: Interrupt | None) -> Exception:
    if interrupt is not None and interrupt.is_set():
        return Interrupted(f"{method} cut short: the exporter is shutting down")
    return PhaseTimeout(f"{method} did not finish within {format_duration(timeout)}")


class _ThreadCall:
    """One call on its own thread; the waiter may give up on it."""

    def __init__(
        self,
        fn: Callable[[], Any],
        name: str,
        on_late: Callable[[Any], None] | None,
        on_end: Callable[[], None],
    ) -> None:
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


class ThreadCalls(Calls):
    """Calls on threads (see the module docstring)."""

    def __init__(self, backend: Backend[Any], label: str) -> None:
        self.backend = backend
        self._label = label
        self._busy = 0
        self._idle = threading.Condition()

    def kill(self, sandbox: SandboxRef) -> None:
        """End what a call on `sandbox` left running (the backend's `kill`)."""
        self.backend.kill(sandbox)

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
        fn = getattr(self.backend, method)
        with self._idle:
            self._busy += 1
        call = _ThreadCall(
            lambda: fn(*args, deadline), f"{self._label}:{method}", on_late, self._ended
        )
        if not call.run(deadline, interrupt):
            if sandbox is not None:
                with contextlib.suppress(Exception):  # best effort; the timeout is the news
                    self.kill(sandbox)
            raise stopped(method, timeout, interrupt)
        if call.error is not None:
            raise outcome(method, timeout, call.error, deadline)
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
