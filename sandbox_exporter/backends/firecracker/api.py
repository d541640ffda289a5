"""The VMM's HTTP API over its Unix socket, through httpcore (the module is passed in:
it is imported only when a target uses this backend): the client of a VM, one call,
the wait for the socket, the configuration of a VM to boot."""

from __future__ import annotations

import json
import time
from types import ModuleType
from typing import Any

from sandbox_exporter.backends.base import BackendError, BackendTimeout, Deadline
from sandbox_exporter.backends.firecracker.jail import for_vmm
from sandbox_exporter.backends.firecracker.options import FirecrackerOptions
from sandbox_exporter.backends.firecracker.vm import (
    API_SOCKET,
    POLL,
    ROOT_DRIVE,
    VSOCK_SOCKET,
    Vm,
    check_peer,
    for_reporting,
)


class _PeerChecked:
    """httpcore's network backend for one VM's API socket: each new connection checks
    its peer is the VMM before a byte is sent."""

    def __init__(self, inner: Any, vm: Vm) -> None:
        self._inner = inner
        self._vm = vm

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> Any:
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        try:
            check_peer(stream.get_extra_info("socket"), self._vm, "API")
        except BaseException:
            stream.close()
            raise
        return stream

    def connect_tcp(self, *args: Any, **kwargs: Any) -> Any:
        raise BackendError("firecracker: the API is reached over its Unix socket only")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def open_client(httpcore: ModuleType, vm: Vm) -> None:
    """`vm.client`: a connection pool over the VM's API socket, its peer checked."""
    checked: Any = _PeerChecked(httpcore.SyncBackend(), vm)  # a NetworkBackend
    vm.client = httpcore.ConnectionPool(uds=vm.path(API_SOCKET), network_backend=checked)


def wait_for_api(httpcore: ModuleType, vm: Vm, deadline: Deadline) -> None:
    """Until `GET /` answers on the API socket (polled: the VMM makes it when ready,
    in ~3 ms; a failed connect costs microseconds)."""
    deadline = for_reporting(deadline)
    while True:
        why = vm.died("before its API socket answered")
        if why is not None:
            raise BackendError(why)
        try:
            _request(vm, "GET", "/", None, deadline)
            return
        except httpcore.NetworkError as exc:
            if deadline.expired:
                raise BackendTimeout(f"the VMM's API socket did not answer: {exc}") from exc
        time.sleep(POLL)


def call(
    httpcore: ModuleType, vm: Vm, method: str, path: str, body: dict[str, Any], deadline: Deadline
) -> None:
    """One API call; BackendError with Firecracker's fault_message when refused."""
    try:
        response = _request(vm, method, path, body, deadline)
    except httpcore.TimeoutException as exc:
        raise BackendError(f"Firecracker did not answer {method} {path} in time") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        why = vm.died_after_drop(f"at {method} {path}", deadline)
        raise BackendError(why or f"{method} {path}: the API socket failed: {exc}") from exc
    if response.status < 300:
        return
    text = response.content.decode(errors="replace")
    try:
        fault = json.loads(text).get("fault_message") or text
    except (ValueError, AttributeError):
        fault = text
    raise BackendError(f"Firecracker refused {method} {path}: {fault}")


def _request(
    vm: Vm, method: str, path: str, body: dict[str, Any] | None, deadline: Deadline
) -> Any:
    """One request on the VM's pool, every step bounded by what is left."""
    left = max(deadline.remaining(), 0.001)
    content = json.dumps(body).encode() if body is not None else b""
    headers = [(b"Host", b"localhost"), (b"Accept", b"application/json")]
    if body is not None:
        headers += [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(len(content)).encode()),
        ]
    timeouts = {"connect": left, "read": left, "write": left, "pool": left}
    url = f"http://localhost{path}"
    extensions = {"timeout": timeouts}
    return vm.client.request(
        method, url, headers=headers, content=content or None, extensions=extensions
    )


def configure(
    httpcore: ModuleType,
    vm: Vm,
    options: FirecrackerOptions,
    shape: tuple[int, int],
    deadline: Deadline,
) -> None:
    """boot-source, the root drive, machine-config (`shape`: vCPUs, MiB) and vsock."""
    boot = {"kernel_image_path": for_vmm(options, options.kernel), "boot_args": _boot_args(options)}
    if options.initrd:
        boot["initrd_path"] = for_vmm(options, options.initrd)
    call(httpcore, vm, "PUT", "/boot-source", boot, deadline)
    drive = {
        "drive_id": "rootfs",
        "path_on_host": ROOT_DRIVE,
        "is_root_device": True,
        "is_read_only": options.rootfs_mode == "read_only",
    }
    call(httpcore, vm, "PUT", "/drives/rootfs", drive, deadline)
    machine = {"vcpu_count": shape[0], "mem_size_mib": shape[1]}
    call(httpcore, vm, "PUT", "/machine-config", machine, deadline)
    vsock = {"guest_cid": options.guest_cid, "uds_path": VSOCK_SOCKET}
    call(httpcore, vm, "PUT", "/vsock", vsock, deadline)


def _boot_args(options: FirecrackerOptions) -> str:
    args = options.boot_args
    if "sandbox_guest.port=" not in args and options.guest_port != 52:
        args += f" sandbox_guest.port={options.guest_port}"
    return args
