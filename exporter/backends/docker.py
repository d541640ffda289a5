"""Docker Engine backend, through the docker SDK.

Phase mapping: create = `POST /containers/create` (image present);
start = `POST /containers/{id}/start`, then inspect until the state is
running; exec = exec create + start, output read, exit code inspected;
stop = `POST /containers/{id}/stop?t=<grace>` (returns once exited);
remove = `DELETE /containers/{id}?force=1`.

The container runs a keep-alive that exits at once on SIGTERM, so `stop`
measures the engine, not a grace-period timeout.
"""

from __future__ import annotations

import math
from typing import Any

import docker
import docker.errors
import requests.exceptions

from exporter.backends.base import (
    CREATED_LABEL,
    INSTANCE_LABEL,
    MANAGED_LABEL,
    TARGET_LABEL,
    BackendError,
    BackendUnavailable,
    ExecResult,
    ManagedSandbox,
    SandboxSpec,
)
from exporter.config import DockerOptions, Target

_UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ConnectionError,
    FileNotFoundError,
)


def _engine_error(exc: Exception) -> BackendError:
    """The engine's own message, classed as unreachable or as an error."""
    if isinstance(exc, _UNREACHABLE) or (
        isinstance(exc, docker.errors.DockerException) and isinstance(exc.__cause__, _UNREACHABLE)
    ):
        return BackendUnavailable(f"cannot reach the Docker engine: {exc}")
    if isinstance(exc, docker.errors.APIError):
        explanation = exc.explanation
        if isinstance(explanation, bytes):
            explanation = explanation.decode(errors="replace")
        status = exc.status_code
        return BackendError(f"Docker engine answered {status}: {explanation or exc}")
    return BackendError(str(exc) or type(exc).__name__)


class DockerBackend:
    """A Docker-compatible engine reached through the docker SDK."""

    kind = "docker"

    def __init__(self, target: Target) -> None:
        options = target.options
        assert isinstance(options, DockerOptions)
        self.options = options
        timeouts = target.timeouts
        # The HTTP timeout bounds every socket read, so a call the runner has
        # abandoned (frozen engine) still ends and frees its thread.
        self._http_timeout = max(timeouts.create, timeouts.start, timeouts.exec, timeouts.remove)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = docker.DockerClient(
                    base_url=self.options.base_url, timeout=self._http_timeout, version="auto"
                )
            except Exception as exc:
                raise _engine_error(exc) from exc
            if self.options.base_url.startswith("unix://"):
                # No proxy applies to a Unix socket; without this, requests scans the
                # environment for proxy settings on every call (about 0.5 ms each).
                self._client.api.trust_env = False
        return self._client

    def _api(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _engine_error(exc) from exc

    def ping(self) -> None:
        self._api(lambda: self.client.api.ping())

    def image_present(self, image: str) -> bool:
        try:
            self.client.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return False
        except Exception as exc:
            raise _engine_error(exc) from exc
        return True

    def pull_image(self, image: str) -> None:
        repository, tag = _split_image(image)
        self._api(self.client.api.pull, repository, tag=tag)

    def create(self, spec: SandboxSpec) -> None:
        options = self.options
        host_config = self.client.api.create_host_config(
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=spec.pids_limit,
            mem_limit=f"{spec.memory_mb}m",
            memswap_limit=f"{spec.memory_mb}m",
            nano_cpus=int(spec.cpus * 1e9),
            runtime=options.runtime,
            tmpfs={"/tmp": f"rw,noexec,nosuid,size={options.tmpfs_mb}m"}
            if options.tmpfs_mb
            else None,
        )
        self._api(
            self.client.api.create_container,
            spec.image,
            command=list(options.keepalive),
            name=spec.name,
            labels=spec.labels,
            user=options.user,
            host_config=host_config,
            network_disabled=True,
            stop_signal="SIGTERM",
        )

    def start(self, name: str) -> None:
        api = self.client.api
        self._api(api.start, name)
        state = self._api(api.inspect_container, name)["State"]
        if not state.get("Running"):
            raise BackendError(
                f"container is {state.get('Status')!r} right after start "
                f"(exit code {state.get('ExitCode')}, error {state.get('Error')!r})"
            )

    def exec(self, name: str, command: list[str]) -> ExecResult:
        api = self.client.api
        exec_id = self._api(api.exec_create, name, command, stdout=True, stderr=True)["Id"]
        output = self._api(api.exec_start, exec_id)
        exit_code = self._api(api.exec_inspect, exec_id)["ExitCode"]
        text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
        return ExecResult(exit_code=int(exit_code if exit_code is not None else -1), output=text)

    def stop(self, name: str, grace_seconds: float) -> None:
        self._api(self.client.api.stop, name, timeout=max(math.ceil(grace_seconds), 0))

    def remove(self, name: str) -> None:
        try:
            self.client.api.remove_container(name, force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                return
            raise _engine_error(exc) from exc
        except Exception as exc:
            raise _engine_error(exc) from exc

    def list_managed(self, instance: str, target: str) -> list[ManagedSandbox]:
        filters = {
            "label": [
                f"{MANAGED_LABEL}=true",
                f"{INSTANCE_LABEL}={instance}",
                f"{TARGET_LABEL}={target}",
            ]
        }
        found = self._api(self.client.api.containers, all=True, filters=filters)
        out = []
        for item in found:
            labels = item.get("Labels") or {}
            names = item.get("Names") or [item["Id"]]
            created = labels.get(CREATED_LABEL)
            out.append(
                ManagedSandbox(
                    name=names[0].lstrip("/"),
                    target=labels.get(TARGET_LABEL, ""),
                    instance=labels.get(INSTANCE_LABEL, ""),
                    created_at=float(created) if created and created.isdigit() else None,
                )
            )
        return out

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _split_image(image: str) -> tuple[str, str | None]:
    """`repo[:tag][@digest]` -> (repo, tag or digest); a port in the host is not a tag."""
    if "@" in image:
        repository, _, digest = image.partition("@")
        return repository, digest
    head, _, last = image.rpartition("/")
    if ":" in last:
        name, _, tag = last.rpartition(":")
        return (f"{head}/{name}" if head else name), tag
    return image, "latest"
