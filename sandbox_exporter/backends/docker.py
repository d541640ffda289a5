"""Docker Engine backend, through the docker SDK.

Phase mapping: create = `POST /containers/create` (image present);
start = `POST /containers/{id}/start`, which returns once the container's process
runs (one that then exits at once fails the exec: "container ... is not running");
exec = exec create + start, output read, exit code inspected;
stop = `POST /containers/{id}/stop?t=<grace>` (returns once exited);
remove = `DELETE /containers/{id}?force=1&v=1`.

The container runs a keep-alive that exits at once on SIGTERM, so `stop`
measures the engine, not a grace-period timeout.

Every request carries a timeout no longer than its call's remaining deadline.
The SDK reads its client's `timeout` attribute for each request; here that
attribute is per thread and set from the deadline around each call, so a probe
and a collection running at once each keep their own.

The exec's output is read here, not by the SDK. Its `exec_start` (and
`exec_run`) parse the answer's headers through http.client's buffered reader,
then read the output from the raw socket beneath it, so a frame the engine sent
right behind the headers is lost: a quick `echo` on a loaded host came back
empty, exit code 0 (docker/docker-py#3332). Here the answer is a streamed
response read through that buffer, each read bounded by the deadline, and kept
where `kill` can shut its connection down, which ends a command that outlived
its deadline (and the thread that waits for it) at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import Field

from sandbox_exporter.backends.base import (
    MANAGED_LABEL,
    READ_SIZE,
    TARGET_LABEL,
    BackendError,
    BackendKind,
    BackendOptions,
    BackendUnavailable,
    Capabilities,
    Deadline,
    ExecResult,
    Found,
    Images,
    ManagedSandbox,
    NotFound,
    Output,
    SandboxRef,
    SandboxSpec,
    why_unreachable,
)
from sandbox_exporter.config.settings import Timeouts

DOCKER_SOCKET = "/var/run/docker.sock"
DEFAULT_KEEPALIVE = ("sh", "-c", "trap 'exit 0' TERM; sleep 2147483647 & wait")


def docker_url(environ: Mapping[str, str] | None = None) -> str:
    """The engine the Docker CLI would use: DOCKER_HOST, else the default socket."""
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or f"unix://{DOCKER_SOCKET}"


def ping_unix_socket(path: str, timeout: float = 1.0) -> str | None:
    """None when an HTTP `GET /_ping` over the Unix socket at `path` gets a 200, else
    why not. A raw socket rather than the SDK: `targets: auto` must import nothing heavy."""
    try:
        head = _ping_head(path, timeout)
    except OSError as exc:
        return why_unreachable(exc)
    if head.startswith(b"HTTP/1.") and b" 200 " in head[:16]:
        return None
    return f"GET /_ping answered {head[:32]!r}"


def _ping_head(path: str, timeout: float) -> bytes:
    """The status line and headers of the answer to `GET /_ping` over the Unix socket
    at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: localhost\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.partition(b"\r\n\r\n")[0]


def api_version(base_url: str, timeout: float) -> str:
    """The API version to speak to the engine at `base_url`: the one its `/_ping` names
    (`Api-Version`), as the Docker CLI negotiates it, on a Unix socket; else "auto": the
    SDK asks `GET /version`, which Podman answers far more slowly than `/_ping`
    (BENCHMARKS.md, "Costs the code relies on")."""
    if base_url.startswith("unix://"):
        try:
            head = _ping_head(base_url.removeprefix("unix://"), timeout)
        except OSError:
            return "auto"  # the SDK's own attempt says why
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"api-version" and value.strip():
                return value.strip().decode(errors="replace")
    return "auto"


def find_engine(url: str, engine: str) -> Found | NotFound:
    """`targets: auto` for a Docker-API engine at `url`."""
    if not url.startswith("unix://"):
        return NotFound(f"{url} is not a unix:// socket; name it in a config to probe it")
    why = ping_unix_socket(url.removeprefix("unix://"))
    if why is None:
        return Found({"base_url": url}, url)
    return NotFound(f"{engine} does not answer at {url}: {why}")


class DockerOptions(BackendOptions):
    base_url: str = f"unix://{DOCKER_SOCKET}"
    """The engine's API: `unix:///path` or `tcp://host:port`."""
    runtime: str | None = None
    """The OCI runtime the container runs under (e.g. `runsc`, `kata`); null: the engine's
    default.
    """
    user: str | None = Field(
        "65534:65534", description="uid:gid inside the container; null keeps the image's user."
    )
    keepalive: tuple[str, ...] = Field(DEFAULT_KEEPALIVE, min_length=1)
    """What the container runs between start and stop; it must exit at once on SIGTERM."""
    tmpfs_mb: int = Field(
        16,
        ge=0,
        le=4096,
        description="Size of the writable /tmp in MiB, on the read-only root; 0 for none.",
    )

    def runtime_name(self) -> str | None:
        return self.runtime


class DockerBackend:
    """A Docker-compatible engine reached through the docker SDK."""

    engine = "the Docker engine"

    def __init__(self, options: DockerOptions, timeouts: Timeouts) -> None:
        self.options = options
        self._default_timeout = max(
            timeouts.create, timeouts.start, timeouts.exec, timeouts.stop, timeouts.remove
        )
        self._per_thread = threading.local()
        self._client: Any = None
        self._lock = threading.Lock()
        self._exec_streams: dict[str, Any] = {}  # for `kill`
        import docker.errors  # the SDK: only now that a target uses this backend

        self._errors = docker.errors

    # -- plumbing ------------------------------------------------------------------

    def _api_client(self) -> Any:
        with self._lock:
            if self._client is None:
                base_url = self.options.base_url
                self._client = _client_class()(
                    self._per_thread,
                    self._default_timeout,
                    base_url=base_url,
                    version=api_version(base_url, self._per_thread.timeout),
                )
                if self.options.base_url.startswith("unix://"):
                    # No proxy applies to a Unix socket; without this, requests scans the
                    # environment for proxy settings on every call (BENCHMARKS.md, 1).
                    self._client.trust_env = False
            return self._client

    @contextlib.contextmanager
    def _within(self, deadline: Deadline) -> Iterator[Any]:
        """The client, its requests bounded by `deadline`; the SDK's errors in the
        engine's words."""
        previous = getattr(self._per_thread, "timeout", None)
        self._per_thread.timeout = max(deadline.remaining(), 0.001)
        try:
            yield self._api_client()
        except BackendError:
            raise
        except Exception as exc:
            raise self._engine_error(exc) from exc
        finally:
            self._per_thread.timeout = previous

    def _engine_error(self, exc: Exception) -> BackendError:
        """The engine's own message, classed as unreachable or as an error."""
        import requests.exceptions

        unreachable = (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            ConnectionError,
            FileNotFoundError,
            TimeoutError,
        )
        if isinstance(exc, unreachable) or (
            isinstance(exc, self._errors.DockerException) and isinstance(exc.__cause__, unreachable)
        ):
            return BackendUnavailable.at(self.engine, self.options.base_url, exc)
        if isinstance(exc, self._errors.APIError):
            explanation = exc.explanation
            if isinstance(explanation, bytes):
                explanation = explanation.decode(errors="replace")
            return BackendError(f"{self.engine} answered {exc.status_code}: {explanation or exc}")
        return BackendError(str(exc) or type(exc).__name__)

    # -- protocol ------------------------------------------------------------------

    def ping(self, deadline: Deadline) -> None:
        with self._within(deadline) as api:
            api.ping()

    def describe(self, image: str | None, deadline: Deadline) -> dict[str, str]:
        """What `bench --json` records of the engine: its version, API and runtimes,
        and the image's id (a digest of its content), for `bench compare`."""
        with self._within(deadline) as api:
            version = api.version()
            info = api.info()
            found = {
                "engine_version": f"{version.get('Version')} (API {version.get('ApiVersion')})",
                "engine_runtimes": ", ".join(sorted(info.get("Runtimes") or {})),
                "runtime_in_use": self.options.runtime or str(info.get("DefaultRuntime") or ""),
            }
            if image is not None:
                try:
                    found["image_id"] = str(api.inspect_image(image).get("Id"))
                except self._errors.ImageNotFound:
                    found["image_id"] = "(not present)"
        return found

    def image_present(self, image: str, deadline: Deadline) -> bool:
        with self._within(deadline) as api:
            try:
                api.inspect_image(image)
            except self._errors.ImageNotFound:
                return False
        return True

    def pull_image(self, image: str, deadline: Deadline) -> None:
        repository, tag = split_image(image)
        with self._within(deadline) as api:
            api.pull(repository, tag=tag)

    def import_image(self, rootfs: bytes, image: str, path: str, deadline: Deadline) -> None:
        repository, tag = split_image(image)
        with self._within(deadline) as api:
            answer = api.import_image_from_data(
                rootfs, repository=repository, tag=tag, changes=[f"ENV PATH={path}"]
            )
            # the id, then tagged by it: Podman 4's compatible endpoint ignores `tag`
            last = json.loads(str(answer).strip().splitlines()[-1])
            if "error" in last:
                raise BackendError(f"{self.engine} refused the import: {last['error']}")
            api.tag(last.get("id") or last["status"], repository, tag)

    def create(self, spec: SandboxSpec, deadline: Deadline) -> SandboxRef:
        options = self.options
        with self._within(deadline) as api:
            host_config = api.create_host_config(
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
            api.create_container(
                spec.image,
                command=list(options.keepalive),
                name=spec.name,
                labels=spec.labels,
                user=options.user,
                host_config=host_config,
                network_disabled=True,
                stop_signal="SIGTERM",
            )
        return SandboxRef(spec.name)  # the name addresses the container in every call

    def start(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        with self._within(deadline) as api:
            api.start(sandbox.name)

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> ExecResult:
        with self._within(deadline) as api:
            exec_id = api.exec_create(sandbox.name, list(command), stdout=True, stderr=True)["Id"]
            stream = self._exec_start(api, exec_id)
            with self._lock:
                self._exec_streams[sandbox.name] = stream
            try:
                output = read_frames(stream.raw)  # within the output cap
            finally:
                with self._lock:
                    self._exec_streams.pop(sandbox.name, None)
                stream.close()
            exit_code = api.exec_inspect(exec_id)["ExitCode"]
        code = int(exit_code if exit_code is not None else -1)
        return ExecResult(exit_code=code, output=output.text())

    def _exec_start(self, api: Any, exec_id: str) -> Any:
        """`POST /exec/{id}/start`, attached: a streamed response whose body is the
        command's multiplexed output, until the engine closes the connection (see the
        module docstring for why not the SDK's `exec_start`). Without an `Upgrade`
        header the engine answers 200 rather than 101, whose body http.client would
        not read."""
        import requests.exceptions

        response = api.post(
            f"{api.base_url}/v{api.api_version}/exec/{exec_id}/start",
            json={"Detach": False, "Tty": False},
            stream=True,
            timeout=api.timeout,
        )
        try:
            response.raise_for_status()
        except requests.exceptions.HTTPError as exc:
            response.close()
            raise self._errors.create_api_error_from_http_exception(exc) from exc
        return response

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        with self._within(deadline) as api:
            api.stop(sandbox.name, timeout=max(math.ceil(grace_seconds), 0))

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        with self._within(deadline) as api:
            try:
                api.remove_container(sandbox.name, force=True, v=True)
            except self._errors.NotFound:
                return
            except self._errors.APIError as exc:
                if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                    return
                raise

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        filters = {"label": [f"{MANAGED_LABEL}=true", f"{TARGET_LABEL}={target}"]}
        with self._within(deadline) as api:
            found = api.containers(all=True, filters=filters)
        return [
            ManagedSandbox.from_labels(
                (item.get("Names") or [item["Id"]])[0].lstrip("/"), item.get("Labels") or {}
            )
            for item in found
        ]

    def kill(self, sandbox: SandboxRef) -> None:
        """Shut down this sandbox's exec stream, if one is open (see the module
        docstring); every other request ends with its own timeout."""
        with self._lock:
            stream = self._exec_streams.get(sandbox.name)
        if stream is not None:
            with (
                contextlib.suppress(OSError, ValueError),  # closed meanwhile: nothing to do
                socket.fromfd(stream.raw.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as dup,
            ):
                dup.shutdown(socket.SHUT_RDWR)  # on the connection itself: the read ends

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


_CLIENT_CLASS: type[Any] | None = None
ONE_POOL = "http+docker://localhost"  # what every request's connection pool is known by


def _client_class() -> type[Any]:
    """The SDK's APIClient with a per-thread request timeout (see the module docstring),
    and, on a Unix socket, one pool of connections for every request.

    The SDK's Unix-socket adapter keys its connection pools by the whole URL, so every
    call naming a new container (create, start, exec, stop, remove: all of them) opened
    a new connection and a new pool, and a dozen queue operations more than a request
    on a kept-alive connection (BENCHMARKS.md, "Measurement overhead")."""
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        import docker
        from docker.transport import UnixHTTPAdapter

        class OnePoolUnixAdapter(UnixHTTPAdapter):  # type: ignore[misc]
            def get_connection(self, url: str, proxies: Any = None) -> Any:
                return super().get_connection(ONE_POOL, proxies)

        class DeadlineAPIClient(docker.APIClient):  # type: ignore[misc]
            def __init__(self, per_thread: threading.local, default: float, **kwargs: Any):
                self._per_thread = per_thread
                self._default_timeout = default
                super().__init__(timeout=default, **kwargs)
                base_url = str(kwargs.get("base_url", ""))
                if base_url.startswith("unix://"):
                    previous = self.adapters.get("http+docker://")
                    socket_url = base_url.replace("unix://", "http+unix://", 1)
                    self.mount("http+docker://", OnePoolUnixAdapter(socket_url, default))
                    if previous is not None:
                        previous.close()

            @property
            def timeout(self) -> float:
                value = getattr(self._per_thread, "timeout", None)
                return self._default_timeout if value is None else float(value)

            @timeout.setter
            def timeout(self, value: float) -> None:
                self._default_timeout = value

        _CLIENT_CLASS = DeadlineAPIClient
    return _CLIENT_CLASS


def read_frames(body: Any) -> Output:
    """The payload of an attached exec's output: frames of an 8-byte header (stream,
    0, 0, 0, big-endian length) and that many bytes, stdout and stderr interleaved,
    until the engine closes the connection. `body` is the response's file object
    (urllib3's), read through its buffer, a bounded piece at a time: a frame that
    would pass the output cap is refused on its header (base.py, "Output")."""
    output = Output()
    while len(header := _read_exactly(body, 8)) == 8:
        _, length = struct.unpack(">BxxxL", header)
        output.expect(length)
        while length:
            chunk = body.read(min(length, READ_SIZE))
            if not chunk:
                return output  # cut short: what came is the output
            output.add(chunk)
            length -= len(chunk)
    return output


def _read_exactly(body: Any, count: int) -> bytes:
    """`count` bytes of `body`, or fewer when it ends first."""
    data = b""
    while len(data) < count:
        chunk = body.read(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def split_image(image: str) -> tuple[str, str | None]:
    """`repo[:tag][@digest]` -> (repo, tag or digest); a port in the host is not a tag."""
    if "@" in image:
        repository, _, digest = image.partition("@")
        return repository, digest
    head, _, last = image.rpartition("/")
    if ":" in last:
        name, _, tag = last.rpartition(":")
        return (f"{head}/{name}" if head else name), tag
    return image, "latest"


KIND = BackendKind(
    name="docker",
    options=DockerOptions,
    factory=DockerBackend,
    capabilities=Capabilities(
        images=Images.EXPORTER, remote=False, needs_root=False, thread_safe=True
    ),
    extra="docker",
    discover=lambda: find_engine(docker_url(), "the Docker engine"),
    summary="a container per probe on a Docker engine (any OCI runtime it knows)",
)
