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

from exporter.backends.base import BackendError, SandboxSpec
from exporter.backends.docker import DockerBackend

LIBPOD = "/v4.0.0/libpod"  # Podman 4 and 5 serve this prefix


class PodmanBackend(DockerBackend):
    kind = "podman"

    def create(self, spec: SandboxSpec) -> None:
        super().create(spec)
        wanted = self.options.runtime
        if wanted:
            actual = self.oci_runtime(spec.name)
            if wanted not in (actual, os.path.basename(actual)):
                raise BackendError(
                    f"Podman created the container under runtime {actual!r}, not {wanted!r}: "
                    "Podman chooses the OCI runtime per service, not per container; point this "
                    f"target at a service started with `podman --runtime {wanted} system service`"
                )

    def oci_runtime(self, name: str) -> str:
        """The OCI runtime Podman gave container `name`."""
        api = self.client.api
        response = self._api(api.get, f"{api.base_url}{LIBPOD}/containers/{name}/json")
        if response.status_code != 200:
            raise BackendError(f"Podman answered {response.status_code}: {response.text[:300]}")
        return str(response.json().get("OCIRuntime", ""))
