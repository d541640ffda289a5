"""Doubles of the Hyperlight SDK's `Sandbox` (built with keyword arguments; `run`,
`snapshot`, `restore`), named by tests through the backend's `sandbox_class` option so
that they are built in the worker process too. Each call is appended, with its pid, to
the file `$HL_DOUBLE_RECORD` when that is set."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any

TRIVIAL = "pass"


@dataclass
class Result:
    stdout: str
    stderr: str
    exit_code: int


class Sandbox:
    """A guest that runs: `print('hello')` prints hello."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.received: list[str] = []
        self._record(f"built:{kwargs.get('module')}")

    def _record(self, what: str) -> None:
        self.received.append(what)
        path = os.environ.get("HL_DOUBLE_RECORD")
        if path:
            with open(path, "a") as record:
                record.write(f"{what} {os.getpid()}\n")

    def run(self, code: str) -> Result:
        self._record("run:trivial" if code == TRIVIAL else "run:code")
        return self.guest(code)

    def guest(self, code: str) -> Result:
        return Result("hello\n" if code == "print('hello')" else "", "", 0)

    def snapshot(self) -> str:
        self._record("snapshot")
        return "snap"

    def restore(self, snapshot: Any) -> None:
        self._record(f"restore:{snapshot}")


class GuestError(Sandbox):
    def guest(self, code: str) -> Result:
        if code == TRIVIAL:
            return Result("", "", 0)
        return Result("", "Traceback (most recent call last):\nValueError: boom\n", 1)


class NoHypervisor(Sandbox):
    def guest(self, code: str) -> Result:
        raise RuntimeError(
            "Failed to create sandbox: failed to build ProtoWasmSandbox: "
            "No Hypervisor was found for Sandbox"
        )


class BrokenGuest(Sandbox):
    def guest(self, code: str) -> Result:
        raise RuntimeError("Failed to create sandbox: guest module is corrupt")


class Held(Sandbox):
    """The configured code's run holds the interpreter lock for 60 s (libc's sleep
    called through PyDLL), as a hung native call would."""

    def guest(self, code: str) -> Result:
        if code != TRIVIAL:
            ctypes.PyDLL(None).sleep(60)
        return Result("hello\n", "", 0)


class Flood(Sandbox):
    """The configured code prints 8 MiB (the SDK hands a run's output over whole)."""

    def guest(self, code: str) -> Result:
        return Result("" if code == TRIVIAL else "x" * (8 << 20), "", 0)
