"""A scriptable in-process backend for testing the runner, metrics and scheduler.

It is not a stand-in for any engine (those are tested for real); it lets a
test say "create takes 1.5 s" (on a FakeClock), "start hangs", "exec answers
'nope'".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox_exporter.backends.base import (
    BackendError,
    Deadline,
    ExecResult,
    ManagedSandbox,
    SandboxRef,
    SandboxSpec,
)
from sandbox_exporter.config import Target
from sandbox_exporter.probing.calls import ThreadCalls
from sandbox_exporter.probing.fleet import BackendFactory


class FakeClock:
    """A monotonic clock that only moves when a test (or the fake backend) says so."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@dataclass
class FakeBackend:
    clock: FakeClock | None = None
    costs: dict[str, float] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    exec_result: ExecResult = field(default_factory=lambda: ExecResult(0, "hello\n"))
    images: set[str] = field(default_factory=lambda: {"busybox:1.36"})
    received: list[tuple[str, str]] = field(default_factory=list)
    existing: set[str] = field(default_factory=set)
    orphans: list[ManagedSandbox] = field(default_factory=list)
    on_call: Callable[[str], None] | None = None
    release: threading.Event = field(default_factory=threading.Event)
    entered: dict[str, threading.Event] = field(default_factory=dict)
    deadlines: dict[str, Deadline] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.costs and self.clock is None:
            raise ValueError("costs are seconds on a FakeClock: give the clock too")

    def _do(self, method: str, arg: str, deadline: Deadline) -> None:
        self.received.append((method, arg))
        self.deadlines[method] = deadline
        self.entered.setdefault(method, threading.Event()).set()
        if self.on_call is not None:
            self.on_call(method)
        if method in self.hang:
            self.release.wait(timeout=60)
        if self.clock is not None and method in self.costs:
            self.clock.advance(self.costs[method])
        if method in self.errors:
            raise self.errors[method]

    def called(self, method: str) -> list[str]:
        return [arg for m, arg in self.received if m == method]

    def ping(self, deadline: Deadline) -> None:
        self._do("ping", "", deadline)

    def image_present(self, image: str, deadline: Deadline) -> bool:
        self._do("image_present", image, deadline)
        return image in self.images

    def pull_image(self, image: str, deadline: Deadline) -> None:
        self._do("pull_image", image, deadline)
        self.images.add(image)

    def create(self, spec: SandboxSpec, deadline: Deadline) -> SandboxRef:
        self._do("create", spec.name, deadline)
        self.existing.add(spec.name)
        return SandboxRef(spec.name)

    def start(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        self._do("start", sandbox.name, deadline)

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> ExecResult:
        self._do("exec", sandbox.name, deadline)
        return self.exec_result

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        self._do("stop", sandbox.name, deadline)

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        self._do("remove", sandbox.name, deadline)
        self.existing.discard(sandbox.name)
        self.orphans = [o for o in self.orphans if o.name != sandbox.name]

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        self._do("list_managed", target, deadline)
        return [o for o in self.orphans if o.target == target]

    def kill(self, sandbox: SandboxRef) -> None:
        self.received.append(("kill", sandbox.name))

    def close(self) -> None:
        self.received.append(("close", ""))
        self.release.set()


def failing(message: str = "engine said no") -> BackendError:
    return BackendError(message)


def by_name(backends: Mapping[str, Any]) -> BackendFactory:
    """A daemon's backend factory that reads `backends` (target name -> object) each
    time a prober is made, so a test may change it between reloads."""
    return lambda target: backends.get(target.name)


def thread_calls(backend: Any, target: Target | None = None) -> ThreadCalls:
    """`backend`'s calls as the runner makes them (on threads)."""
    return ThreadCalls(backend, target.name if target is not None else "fake")
