"""A backend double for the worker process: a native library whose call holds the
interpreter lock, as `ctypes.PyDLL(None).sleep(N)` does (libc's sleep, called with
the lock held). Registered by tests as backend `held`; it records each call and
the pid that made it in `record_dir`, so the test can see what ran where."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path

from sandbox_exporter.backends.base import (
    BackendError,
    BackendKind,
    BackendOptions,
    Capabilities,
    Deadline,
    ExecResult,
    Images,
    ManagedSandbox,
    SandboxRef,
    SandboxSpec,
)
from sandbox_exporter.config.settings import Timeouts


class HeldOptions(BackendOptions):
    record_dir: str
    hold_in: str | None = "start"  # the call that holds the lock
    hold_seconds: int = 60
    crash_in: str | None = None  # the call that kills its own process


class HeldBackend:
    def __init__(self, options: HeldOptions, timeouts: Timeouts) -> None:
        self.options = options

    def _do(self, method: str) -> None:
        with Path(self.options.record_dir, "calls").open("a") as record:
            record.write(f"{method} {os.getpid()}\n")
        if method == self.options.hold_in:
            ctypes.PyDLL(None).sleep(self.options.hold_seconds)  # holds the GIL throughout
        if method == self.options.crash_in:
            os._exit(3)

    def ping(self, deadline: Deadline) -> None:
        self._do("ping")

    def create(self, spec: SandboxSpec, deadline: Deadline) -> SandboxRef:
        self._do("create")
        return SandboxRef(spec.name)

    def start(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        self._do("start")

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> ExecResult:
        self._do("exec")
        if deadline.expired:
            raise BackendError("exec saw its deadline pass")
        return ExecResult(0, "hello\n")

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        self._do("stop")

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        self._do("remove")

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        self._do("list_managed")
        return []

    def kill(self, sandbox: SandboxRef) -> None:
        raise AssertionError("never called: a worker's calls are ended by killing the worker")

    def close(self) -> None:
        self._do("close")


KIND = BackendKind(
    name="held",
    options=HeldOptions,
    factory=HeldBackend,
    capabilities=Capabilities(
        images=Images.NONE, remote=False, needs_root=False, thread_safe=False
    ),
    summary="a test double whose calls hold the interpreter lock",
)
