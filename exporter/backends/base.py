"""The contract every backend meets, and the errors it may raise.

Backends are plain synchronous objects. They do the work of one phase and
return; the lifecycle runner around them times each call, enforces its
timeout and decides what a failure means. A backend never sleeps to wait for
a state: it blocks on the engine's own "until" (an API that returns once the
state is reached) or on a condition with its own deadline.

Every sandbox is addressed by the name the runner chose before `create`, so
the runner can clean up even when `create` itself failed half-way or timed out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

MANAGED_LABEL = "sandbox-exporter.io/managed"
TARGET_LABEL = "sandbox-exporter.io/target"
INSTANCE_LABEL = "sandbox-exporter.io/instance"
CREATED_LABEL = "sandbox-exporter.io/created-at"
NAME_PREFIX = "sandbox-exporter-"


class BackendError(Exception):
    """A backend call failed; the message is the engine's own words."""


class BackendUnavailable(BackendError):
    """The engine could not be reached at all (socket refused, daemon down)."""


@dataclass(frozen=True)
class SandboxSpec:
    """What the runner asks a backend to create."""

    name: str
    image: str
    labels: dict[str, str]
    cpus: float
    memory_mb: int
    pids_limit: int


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str


@dataclass(frozen=True)
class ManagedSandbox:
    """A sandbox found on the engine carrying this exporter's labels."""

    name: str
    target: str
    instance: str
    created_at: float | None


@runtime_checkable
class Backend(Protocol):
    """One engine that can run sandboxes. Constructed from its target's options."""

    def ping(self) -> None:
        """Raise BackendUnavailable when the engine cannot be reached."""

    def image_present(self, image: str) -> bool:
        """True when `image` needs no pull (backends without images: always True)."""

    def pull_image(self, image: str) -> None: ...

    def create(self, spec: SandboxSpec) -> None: ...

    def start(self, name: str) -> None:
        """Start the sandbox and return once it is running."""

    def exec(self, name: str, command: list[str]) -> ExecResult: ...

    def stop(self, name: str, grace_seconds: float) -> None:
        """Ask the sandbox to stop; return once it has exited."""

    def remove(self, name: str) -> None:
        """Remove the sandbox whatever its state; a missing sandbox is not an error."""

    def list_managed(self, instance: str, target: str) -> list[ManagedSandbox]:
        """Sandboxes labelled as made by this exporter instance for this target."""

    def close(self) -> None: ...
