"""A scriptable in-process backend for testing the runner, metrics and scheduler.

It is not a stand-in for any engine (those are tested for real); it lets a
test say "create takes 1.5 s", "start hangs", "exec answers 'nope'".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.backends.base import BackendError, ExecResult, ManagedSandbox, SandboxSpec


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
    calls: list[tuple[str, str]] = field(default_factory=list)
    existing: set[str] = field(default_factory=set)
    orphans: list[ManagedSandbox] = field(default_factory=list)
    on_call: Callable[[str], None] | None = None
    release: threading.Event = field(default_factory=threading.Event)
    entered: dict[str, threading.Event] = field(default_factory=dict)

    def _do(self, method: str, arg: str = "") -> None:
        self.calls.append((method, arg))
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
        return [arg for m, arg in self.calls if m == method]

    def ping(self) -> None:
        self._do("ping")

    def image_present(self, image: str) -> bool:
        self._do("image_present", image)
        return image in self.images

    def pull_image(self, image: str) -> None:
        self._do("pull_image", image)
        self.images.add(image)

    def create(self, spec: SandboxSpec) -> None:
        self._do("create", spec.name)
        self.existing.add(spec.name)

    def start(self, name: str) -> None:
        self._do("start", name)

    def exec(self, name: str, command: list[str]) -> ExecResult:
        self._do("exec", name)
        return self.exec_result

    def stop(self, name: str, grace_seconds: float) -> None:
        self._do("stop", name)

    def remove(self, name: str) -> None:
        self._do("remove", name)
        self.existing.discard(name)
        self.orphans = [o for o in self.orphans if o.name != name]

    def list_managed(self, instance: str, target: str) -> list[ManagedSandbox]:
        self._do("list_managed", target)
        return [o for o in self.orphans if o.instance == instance and o.target == target]

    def close(self) -> None:
        self.release.set()


def failing(message: str = "engine said no") -> BackendError:
    return BackendError(message)
