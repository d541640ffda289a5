"""A backend that answers every call at once: measures the exporter, not an engine."""

from __future__ import annotations

from sandbox_exporter.backends.base import ExecResult, ManagedSandbox, SandboxSpec


class InstantBackend:
    def ping(self) -> None:
        pass

    def image_present(self, image: str) -> bool:
        return True

    def pull_image(self, image: str) -> None:
        pass

    def create(self, spec: SandboxSpec) -> None:
        pass

    def start(self, name: str) -> None:
        pass

    def exec(self, name: str, command: list[str]) -> ExecResult:
        return ExecResult(0, "hello\n")

    def stop(self, name: str, grace_seconds: float) -> None:
        pass

    def remove(self, name: str) -> None:
        pass

    def list_managed(self, instance: str, target: str) -> list[ManagedSandbox]:
        return []

    def close(self) -> None:
        pass
