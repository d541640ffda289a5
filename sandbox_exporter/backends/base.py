"""The contract a backend meets: everything a new backend's author needs.

A backend is one module of `sandbox_exporter/backends/` with one line in the registry
(`sandbox_exporter/backends/__init__.py`). At its top level the module declares, and
imports no client library while doing so (importing it must cost nothing):

- its options model: a `BackendOptions` subclass, the target's `<name>:` block;
- `KIND = BackendKind(...)`: its name and aliases, its options model, its
  capabilities, the factory that builds it, and, for `targets: auto`, how to
  find it on this machine.

The factory is called with the target's options and `Timeouts` and may import the
SDK then. The object it returns meets `Backend` (and `ImageStore` when its images
are pulled by the exporter). It is synchronous and does the work of one call;
it never times a phase (the runner does) and never sleeps to wait for a state:
it blocks on the engine's own "until" or on a condition, and every call is given
its `Deadline`, which bounds all of its I/O (a socket timeout, a child's timeout,
a watch's timeout: never longer than `deadline.remaining()`).

Where calls run, and what a timeout kills:

- `thread_safe=True`: each call runs on a thread of the exporter. At the deadline
  the runner stops waiting, calls `kill(sandbox)` (end what the call left
  running for that sandbox: a child process, a connection) and goes on to
  clean up; if the abandoned call returns later, what it made is removed then.
- `thread_safe=False` (an in-process native library whose calls may hold the
  interpreter, or anything that cannot be abandoned safely): the backend object
  lives in a worker process and each call is a message to it. At the deadline
  the worker and its process group are killed, which ends the call whatever it
  was doing; the next call gets a new worker. Options, handles, arguments,
  results and errors must then pickle.

Sandboxes: `create(spec)` returns a handle the backend defines (a subclass of
`SandboxRef` carrying, say, a container id, a VMM pid and socket paths, an
allocation id); `start`, `exec` and `stop` take it. `remove` and `kill` take any
`SandboxRef`: the handle, or a bare `SandboxRef(name)` when `create` failed or
timed out before returning, or a `ManagedSandbox` found by `list_managed`. So a
backend must be able to find a sandbox from its name alone (the name is chosen
by the runner before `create`): from the engine (labels, names) or, for local
backends, from the records they keep through `sandbox_exporter.backends.state`. Handles
are immutable values; live state (processes, library objects) stays in the
backend, keyed by name.

Output: `exec` returns the command's output, stdout and stderr together, and reads
at most `MAX_OUTPUT` bytes of it (1 MiB). A command that prints more fails `exec`
with `BackendError("output too large (over 1048576 bytes)")`, found out while reading,
before the rest is read: a probe checks a short answer, and a sandbox that prints
without end must not fill the exporter's memory. `Output` keeps the count (a frame
whose header announces more is refused before it is read); `read_output` reads a
child's pipe into one, within the deadline.

Errors: raise `BackendUnavailable` when the engine cannot be reached at all
(`sandbox_backend_up` 0), `BackendTimeout` when what a call waits for did not come
by its deadline (a timeout of the phase, in the backend's words), `BackendError`
with the engine's own words for everything else. Never catch and hide one: the
runner decides what it means.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any, Generic, Protocol, TypeVar

from sandbox_exporter.config.settings import StrictModel, Timeouts

MANAGED_LABEL = "sandbox-exporter.io/managed"
TARGET_LABEL = "sandbox-exporter.io/target"
INSTANCE_LABEL = "sandbox-exporter.io/instance"
CREATED_LABEL = "sandbox-exporter.io/created-at"
EXPIRES_LABEL = "sandbox-exporter.io/expires-at"
NAME_PREFIX = "sandbox-exporter-"


MAX_OUTPUT = 1 << 20  # bytes of a command's output `exec` reads (see the module docstring)
READ_SIZE = 1 << 16  # bytes asked for in one read of a command's output


class BackendError(Exception):
    """A backend call failed; the message is the engine's own words."""


class BackendTimeout(BackendError):
    """What the call waits for did not come by its deadline; the message says what. A
    backend that keeps a moment at the end of a wait to say why raises this, and the
    runner counts it as the phase's timeout."""


class BackendUnavailable(BackendError):
    """The engine could not be reached at all (socket refused, daemon down)."""

    @classmethod
    def at(cls, engine: str, address: str, exc: BaseException) -> BackendUnavailable:
        """`cannot reach <engine> at <address>: <why>`, the why in plain words when the
        root cause is a socket error the client library wrapped (often twice)."""
        return cls(f"cannot reach {engine} at {address}: {why_unreachable(exc)}")


_UNREACHABLE_WORDS: tuple[tuple[type[OSError], str], ...] = (
    (FileNotFoundError, "no such socket (is the service running?)"),
    (PermissionError, "permission denied (the exporter's user may not open the socket)"),
    (ConnectionRefusedError, "connection refused (nothing listens there)"),
    (TimeoutError, "no answer in time"),
    (socket.gaierror, "the host name does not resolve"),
)


def why_unreachable(exc: BaseException) -> str:
    """Why a connection failed, in plain words where the cause is a known socket error
    (looked for through the causes, contexts and arguments the client libraries wrap)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        current = todo.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        for kind, words in _UNREACHABLE_WORDS:
            if isinstance(current, kind):
                return words
        todo.extend([current.__cause__, current.__context__, *current.args])
        todo.extend(getattr(current, attr, None) for attr in ("reason", "original_error"))
    return str(exc) or type(exc).__name__


class Deadline:
    """When a call must be over, on the monotonic clock (the same in every process
    of this machine, so a deadline can be sent to a worker process)."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def __reduce__(self) -> tuple[type[Deadline], tuple[float]]:
        return (Deadline, (self.at,))

    def __repr__(self) -> str:
        return f"Deadline(in {self.at - time.monotonic():.3f}s)"


@dataclass(frozen=True)
class SandboxRef:
    """A sandbox known by its name. Backends subclass it for their handles."""

    name: str


@dataclass(frozen=True)
class ManagedSandbox(SandboxRef):
    """A sandbox found on the engine carrying the exporter's labels."""

    target: str = ""
    instance: str = ""
    created_at: float | None = None
    expires_at: float | None = None

    @classmethod
    def from_labels(cls, name: str, labels: Mapping[str, str]) -> ManagedSandbox:
        """From the labels (or metadata) the runner gave the sandbox."""

        def stamp(label: str) -> float | None:
            value = labels.get(label, "")
            return float(value) if value.isdigit() else None

        return cls(
            name=name,
            target=labels.get(TARGET_LABEL, ""),
            instance=labels.get(INSTANCE_LABEL, ""),
            created_at=stamp(CREATED_LABEL),
            expires_at=stamp(EXPIRES_LABEL),
        )


def is_managed(labels: Mapping[str, str], target: str) -> bool:
    """The labels of a sandbox an exporter made for `target` (any instance)."""
    return labels.get(MANAGED_LABEL) == "true" and labels.get(TARGET_LABEL) == target


@dataclass(frozen=True)
class SandboxSpec:
    """What the runner asks a backend to create."""

    name: str
    labels: dict[str, str]
    image: str
    pull_policy: str  # if_not_present | always | never: for engines that pull themselves
    cpus: float
    memory_mb: int
    pids_limit: int
    stop_grace: float  # seconds between the stop signal and a kill


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str


class Output:
    """A command's output as `exec` reads it, refused past `MAX_OUTPUT` bytes."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data = bytearray()

    def room(self) -> int:
        """Bytes that may still come. Ask a reader for at most one more: output past
        the cap is then seen without more of it being read."""
        return MAX_OUTPUT - len(self._data)

    def expect(self, count: int) -> None:
        """`count` more bytes are announced (a frame's header): refused before they
        are read when they would pass the cap."""
        if count > self.room():
            raise BackendError(f"output too large (over {MAX_OUTPUT} bytes)")

    def add(self, data: bytes) -> None:
        self.expect(len(data))
        self._data += data

    def text(self) -> str:
        return self._data.decode(errors="replace")


def version_line(command: Sequence[str], deadline: Deadline) -> str:
    """The first line a `--version` command prints, by `deadline` (a backend's
    `describe`); BackendError when it cannot run or fails."""
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=max(deadline.remaining(), 0.001),
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackendError(f"{' '.join(command)}: {exc}") from exc
    return (done.stdout.strip().splitlines() or [""])[0]


def read_output(stream: IO[bytes], deadline: Deadline, output: Output) -> bool:
    """Read a child's pipe into `output` until the child closes it: False when the
    deadline came first. Raises when the output passes the cap (the child is left
    running for the caller to kill)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while True:
            if not selector.select(timeout=deadline.remaining()):
                return False
            chunk = os.read(stream.fileno(), min(READ_SIZE, output.room() + 1))
            if not chunk:
                return True
            output.add(chunk)


class Images(StrEnum):
    """What `image` and `pull_policy` mean for a backend."""

    NONE = "none"  # no image: the backend ignores both (namespaces, micro-VMs from a rootfs)
    ENGINE = "engine"  # named in the sandbox; the engine pulls it inside `start` (Pods, jobs)
    EXPORTER = "exporter"  # checked and pulled by the runner, timed apart as `pull`


@dataclass(frozen=True)
class Capabilities:
    images: Images
    remote: bool  # reaches a control plane over the network: used only when named
    needs_root: bool  # refuses to run as another user
    thread_safe: bool  # calls may run on threads of the exporter (see the module docstring)
    # `prepare(spec, deadline)` is called after each successful `ping`, untimed and
    # bounded like `create`: set up once what every sandbox of that shape shares (a
    # snapshot to restore from); a failure is reported as the engine being unavailable
    prepares: bool = False


class BackendOptions(StrictModel):
    """A backend's own block in a target (`docker:`, `namespace:`, ...)."""

    def runtime_name(self) -> str | None:
        """The runtime a sandbox runs under, if the backend lets one be chosen
        (shown in `sandbox_target_info`)."""
        return None


Opts = TypeVar("Opts", bound=BackendOptions)
H = TypeVar("H", bound=SandboxRef)


@dataclass(frozen=True)
class Found:
    """`targets: auto`: an engine of this kind answers here."""

    options: dict[str, Any]
    address: str  # where: two kinds found at one address are probed once


@dataclass(frozen=True)
class NotFound:
    """`targets: auto`: none here, and why (names where it looked)."""

    reason: str


@dataclass(frozen=True)
class BackendKind(Generic[Opts]):
    """A backend module's declaration (its `KIND`)."""

    name: str
    options: type[Opts]
    factory: Callable[[Opts, Timeouts], Backend[Any]]
    capabilities: Capabilities
    aliases: tuple[str, ...] = ()
    extra: str | None = None  # the pip extra that installs its SDK, if it needs one
    discover: Callable[[], Found | NotFound] | None = None  # None: only when named
    summary: str = ""  # one line for help texts
    # the options block `init` shows for it when not found: what its required fields
    # usually hold (none needed when every field has a default)
    example: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    def build(self, options: BackendOptions, timeouts: Timeouts) -> Backend[Any]:
        if not isinstance(options, self.options):
            raise TypeError(f"{self.name}: expected {self.options.__name__}, got {options!r}")
        return self.factory(options, timeouts)


class Backend(Protocol[H]):
    """One engine that runs sandboxes. Every call ends by its deadline."""

    def ping(self, deadline: Deadline) -> None:
        """Raise BackendUnavailable when the engine cannot be reached."""

    def create(self, spec: SandboxSpec, deadline: Deadline) -> H:
        """Make the sandbox (image present); return its handle."""

    def start(self, sandbox: H, deadline: Deadline) -> None:
        """Start it and return once it runs (a guest that answers, a Pod Running)."""

    def exec(self, sandbox: H, command: Sequence[str], deadline: Deadline) -> ExecResult:
        """Run `command` inside it; its output (stdout and stderr) and exit code."""

    def stop(self, sandbox: H, grace_seconds: float, deadline: Deadline) -> None:
        """Ask it to stop; kill it after `grace_seconds`; return once it has exited."""

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        """Remove it whatever its state, with everything made for it. A sandbox that
        is not there is not an error."""

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        """Every sandbox labelled as made for `target`, by any exporter instance
        (see `is_managed` and `ManagedSandbox.from_labels`)."""

    def kill(self, sandbox: SandboxRef) -> None:
        """A call on `sandbox` outlived its deadline: end at once what it left
        running (a child process, a connection) so that its thread returns. Must not
        block; nothing to do when every call's I/O is bounded by its deadline."""

    def close(self) -> None:
        """Release clients and local state; called once no call is in flight."""


class ImageStore(Protocol):
    """What a backend whose images are pulled by the exporter (Images.EXPORTER) adds."""

    def image_present(self, image: str, deadline: Deadline) -> bool: ...

    def pull_image(self, image: str, deadline: Deadline) -> None: ...

    def import_image(self, rootfs: bytes, image: str, path: str, deadline: Deadline) -> None:
        """Make `image` from a root filesystem (an uncompressed tar) with PATH=`path`,
        as `docker import` does: for engines that cannot reach a registry."""
