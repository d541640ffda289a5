"""Podman backend, through Podman's Docker-compatible API with the docker SDK.

Why the compatible endpoint and not the `podman` package: every call the
lifecycle needs (create with the same HostConfig hardening, start, exec,
stop, remove, label-filtered listing, ping, pull) exists there with the same
semantics, so the Docker backend's code serves both and is tested on both
engines; the `podman` package would be a second client library, a second
error model and a second set of tests for the same calls.

One difference matters: Podman (4.x) picks the OCI runtime per service
process (`podman --runtime runsc system service`), and silently ignores a
runtime asked for per container, through either API. A target that names a
`runtime` is therefore checked after create against the runtime Podman
actually used (libpod inspect, `OCIRuntime`), and fails with a clear message
when they differ, rather than reporting runc figures as gVisor ones.

Sockets: rootful `unix:///run/podman/podman.sock`, rootless
`unix://$XDG_RUNTIME_DIR/podman/podman.sock` (`podman system service` or the
`podman.socket` unit), or CONTAINER_HOST when it is a unix:// URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field

from sandbox_exporter.backends.base import (
    BackendError,
    BackendKind,
    Capabilities,
    Deadline,
    Images,
    SandboxRef,
    SandboxSpec,
)
from sandbox_exporter.backends.docker import DockerBackend, DockerOptions, find_engine

PODMAN_SOCKET = "/run/podman/podman.sock"
LIBPOD = "/v4.0.0/libpod"  # Podman 4 and 5 serve this prefix


def podman_url(environ: Mapping[str, str] | None = None) -> str:
    """Podman's API socket: CONTAINER_HOST, else rootful as root, else the user's rootless one."""
    env = os.environ if environ is None else environ
    if env.get("CONTAINER_HOST", "").startswith("unix://"):
        return env["CONTAINER_HOST"]
    if os.geteuid() == 0:
        return f"unix://{PODMAN_SOCKET}"
    runtime_dir = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"unix://{runtime_dir}/podman/podman.sock"


class PodmanOptions(DockerOptions):
    """The same options as Docker; the default socket is Podman's (rootful or rootless)."""

    base_url: str = Field(default_factory=podman_url)
    """Podman's API; default: `CONTAINER_HOST` when it is a unix:// URL, else
    /run/podman/podman.sock as root, else the rootless
    $XDG_RUNTIME_DIR/podman/podman.sock.
    """


class PodmanBackend(DockerBackend):
    engine = "Podman"

    def create(self, spec: SandboxSpec, deadline: Deadline) -> SandboxRef:
        sandbox = super().create(spec, deadline)
        wanted = self.options.runtime
        if wanted:
            actual = self.oci_runtime(sandbox, deadline)
            if wanted not in (actual, os.path.basename(actual)):
                raise BackendError(
                    f"Podman created the container under runtime {actual!r}, not {wanted!r}: "
                    "Podman chooses the OCI runtime per service, not per container; point this "
                    f"target at a service started with `podman --runtime {wanted} system service`"
                )
        return sandbox

    def oci_runtime(self, sandbox: SandboxRef, deadline: Deadline) -> str:
        """The OCI runtime Podman gave the container."""
        with self._within(deadline) as api:
            response = api.get(
                f"{api.base_url}{LIBPOD}/containers/{sandbox.name}/json", timeout=api.timeout
            )
        if response.status_code != 200:
            raise BackendError(f"Podman answered {response.status_code}: {response.text[:300]}")
        return str(response.json().get("OCIRuntime", ""))


KIND = BackendKind(
    name="podman",
    options=PodmanOptions,
    factory=PodmanBackend,
    capabilities=Capabilities(
        images=Images.EXPORTER, remote=False, needs_root=False, thread_safe=True
    ),
    extra="podman",
    discover=lambda: find_engine(podman_url(), "Podman"),
    summary="a container per probe on Podman (rootful or rootless; one runtime per service)",
)
