"""Firecracker micro-VMs: the real VMM over its API socket, commands over vsock (extra
`[firecracker]`: httpcore).

Phases, with `start_mode: boot` (the default):

create = the VM's work directory (its record, the root drive), the VMM spawned
         (`firecracker --api-sock api.sock --id <vm> --level Warning`, or the jailer
         around it) and configured over its API: boot-source, the root drive,
         machine-config, vsock;
start  = `InstanceStart`, then until the guest's listener accepts on the vsock port
         (`CONNECT <port>` answered `OK`);
exec   = the command through the guest's listener (docs/firecracker-guest.md: the
         exact bytes), its output and exit status;
stop   = `SendCtrlAltDel`, until the VMM process exits; SIGKILL after the grace
         period (logged: a guest that ignores Ctrl-Alt-Del is a broken guest);
remove = the VMM killed if still there and reaped, its work directory (sockets,
         log, drive) and jail gone.

With `start_mode: snapshot` (the warm path sandbox providers use): at set-up
(`prepare`, untimed, before the first run and again if the target's resources
change) one VM is booted until its guest answers, paused and snapshotted
(`PUT /snapshot/create`, a full snapshot, into the state directory). Then create =
the work directory and a fresh VMM, not configured; start = `PUT /snapshot/load`
with `resume_vm`, until the guest answers; exec, stop and remove as above. Every
path the VMM is given for the drive and the vsock socket is relative to its working
directory (the VM's own), and a snapshot keeps them as given, so restored VMs do not
collide.

Waits nothing announces are polled every 0.5 ms (a refused connect costs
microseconds): the API socket after the spawn (as Firecracker's own Go SDK does) and
the guest's listener (each attempt bounded by `vsock_attempt`, because a connection
made before the guest's vsock driver is up is accepted and then answered by nothing).
The VMM's exit is waited for on a pidfd, woken the moment it happens.

Unix socket paths are limited to 108 bytes and state directories can be deep, so the
exporter reaches a VM's sockets through `/proc/self/fd/<fd of its directory>/...`.

Why httpcore and not a Firecracker SDK: no maintained Python SDK exists; httpcore
(the HTTP engine under httpx) speaks HTTP/1.1 over a Unix socket with a timeout per
request, and its network backend is pluggable, so each connection checks that its
peer is the VM's own VMM before a byte is sent (`_PeerChecked`). The vsock handshake and the guest
protocol are a few lines over a plain socket, written here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field, model_validator

from sandbox_exporter.backends.base import (
    BackendError,
    BackendKind,
    BackendOptions,
    BackendTimeout,
    BackendUnavailable,
    Capabilities,
    Deadline,
    ExecResult,
    Found,
    Images,
    ManagedSandbox,
    NotFound,
    SandboxRef,
    SandboxSpec,
)
from sandbox_exporter.backends.state import StateDirectory, default_root
from sandbox_exporter.config.settings import PhaseDuration, StrictModel, Timeouts

DEFAULT_BOOT_ARGS = (
    "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd quiet"
)
API_SOCKET = "api.sock"
VSOCK_SOCKET = "v.sock"
ROOT_DRIVE = "rootfs.ext4"
LOG_FILE = "vmm.log"
SNAPSHOT_STATE, SNAPSHOT_MEMORY = "vmstate", "memory"
SNAPSHOT_PREFIX, SNAPSHOT_LOCK = (
    ".snapshot-",
    "lock",
)  # a directory per snapshot, locked by its maker
MAX_OUTPUT = 1 << 20  # bytes of command output read (docs/firecracker-guest.md)
MAX_ID = 64  # Firecracker's and the jailer's limit on --id
KVM_DEVICE = "/dev/kvm"
KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_API_VERSION = 0xAE00, 0xAE01, 12
FICLONE = 0x40049409
# where scripts/build-firecracker-guest.sh puts a guest by default (`targets: auto` looks)
GUEST_DIR = Path("/var/lib/sandbox-exporter/firecracker")
GUEST_FILES = {"kernel": "vmlinux", "initrd": "initrd.cpio", "rootfs": "rootfs.ext4"}
DEATH_WAIT = 0.5  # seconds to let a VMM whose connection just broke finish dying
COPY_CHUNK = 8 << 20
STALE_SNAPSHOT = 60.0  # seconds: a snapshot directory this old with a free lock is a leftover
POLL = 0.0005  # seconds between two looks at a socket the VMM or the guest is about to open
REPORT_MARGIN = 0.05  # seconds kept at the end of a wait to report why it failed

log = structlog.get_logger("sandbox_exporter.backends.firecracker")


class JailerOptions(StrictModel):
    binary: str = Field("jailer", min_length=1)  # a name looked up on PATH, or a path
    uid: int = Field(ge=0)
    gid: int = Field(ge=0)
    chroot_base: str = Field("/srv/jailer", min_length=1)


class FirecrackerOptions(BackendOptions):
    binary: str = Field("firecracker", min_length=1)  # a name looked up on PATH, or a path
    kernel: str = Field(min_length=1)  # an uncompressed ELF vmlinux
    initrd: str | None = None
    rootfs: str = Field(min_length=1)  # an ext4 image holding the guest (the guest contract)
    rootfs_mode: Literal["read_only", "copy"] = "read_only"
    boot_args: str = DEFAULT_BOOT_ARGS
    guest_cid: int = Field(3, ge=3, lt=2**32 - 1)
    guest_port: int = Field(52, ge=1, lt=2**32 - 1)
    start_mode: Literal["boot", "snapshot"] = "boot"
    vsock_attempt: PhaseDuration = 1.0  # how long one CONNECT may wait for the guest's OK
    state_dir: str | None = None
    jailer: JailerOptions | None = None

    @model_validator(mode="after")
    def _jailed_snapshots(self) -> FirecrackerOptions:
        if self.jailer is not None and self.start_mode == "snapshot":
            raise ValueError("start_mode: snapshot cannot be used with jailer (not supported yet)")
        return self


def vm_shape(spec: SandboxSpec) -> tuple[int, int]:
    """The VM's vCPUs (the spec's CPUs rounded up, at least 1) and MiB of memory."""
    return max(1, math.ceil(spec.cpus)), spec.memory_mb


def vm_id(name: str) -> str:
    """The VMM's `--id` for sandbox `name`: its letters, digits and '-', at most 64."""
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    if len(cleaned) <= MAX_ID:
        return cleaned
    return f"{cleaned[: MAX_ID - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def resolve_binary(binary: str) -> str:
    """The path of `binary` (a path, or a name on PATH); BackendUnavailable if none."""
    path = shutil.which(binary)
    if path is None:
        where = "does not exist or is not executable" if "/" in binary else "is not on PATH"
        raise BackendUnavailable(f"firecracker: {binary} {where}")
    return os.path.abspath(path)


def check_kvm(device: str = KVM_DEVICE) -> None:
    """BackendUnavailable unless `device` opens and makes a VM (what the VMM will do)."""
    try:
        kvm = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise BackendUnavailable(f"firecracker: cannot open {device}: {exc.strerror}") from exc
    try:
        version = fcntl.ioctl(kvm, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            raise BackendUnavailable(f"firecracker: {device} speaks KVM API {version}, not 12")
        os.close(fcntl.ioctl(kvm, KVM_CREATE_VM, 0))
    except OSError as exc:
        raise BackendUnavailable(
            f"firecracker: {device} cannot create a VM: {exc.strerror}"
        ) from exc
    finally:
        os.close(kvm)


def log_tail(path: Path, lines: int = 5, limit: int = 4096) -> str:
    """The last lines of the VMM's log, one line of text ('' if none)."""
    try:
        with path.open("rb") as log_file:
            log_file.seek(max(0, log_file.seek(0, os.SEEK_END) - limit))
            text = log_file.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


def copy_file(source: Path, target: Path, deadline: Deadline) -> None:
    """A copy-on-write clone where the filesystem can (FICLONE), else a full copy, in
    chunks, each started only while the deadline has not passed."""
    with source.open("rb") as src, target.open("wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
                raise
        while chunk := src.read(COPY_CHUNK):
            if deadline.expired:
                raise BackendTimeout(f"copying {source} was not done by the deadline")
            dst.write(chunk)


def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether `process` exited (then reaped) within `timeout`: woken by the exit itself
    through a pidfd, where `Popen.wait(timeout)` polls with sleeps of up to 50 ms."""
    if process.poll() is not None:
        return True
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        process.wait()
        return True
    try:
        exited = bool(select.select([pidfd], [], [], max(timeout, 0.0))[0])
    finally:
        os.close(pidfd)
    if exited:
        process.wait()
    return exited


# -- the guest's side, over vsock (docs/firecracker-guest.md) -------------------------


class _Stream:
    """Lines and counted bytes from a socket, each read bounded by a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self, deadline: Deadline) -> bool:
        self.sock.settimeout(max(deadline.remaining(), 0.001))
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def line(self, deadline: Deadline, limit: int = 256) -> bytes | None:
        """One line without its '\\n'; None at end-of-file."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > limit:
                raise BackendError(f"the guest sent a line over {limit} bytes")
            if not self._fill(deadline):
                return None
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return line

    def exactly(self, count: int, deadline: Deadline) -> bytes | None:
        while len(self.buffer) < count:
            if not self._fill(deadline):
                return None
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data


def run_request(command: Sequence[str]) -> bytes:
    """The `RUN` request for `command`."""
    args = [arg.encode() for arg in command]
    return b"RUN %d\n" % len(args) + b"".join(b"%d\n%s" % (len(arg), arg) for arg in args)


def read_response(stream: _Stream, deadline: Deadline) -> ExecResult:
    """`OUT` frames then `EXIT`; BackendError on anything else."""
    output = bytearray()
    while True:
        line = stream.line(deadline)
        if line is None:
            raise BackendError("the guest closed the connection before EXIT; output so far: "
                               f"{output.decode(errors='replace')[-500:]!r}")  # fmt: skip
        word, _, value = line.decode(errors="replace").partition(" ")
        if word == "OUT" and value.isdigit():
            if len(output) + int(value) > MAX_OUTPUT:
                raise BackendError(f"output too large (over {MAX_OUTPUT} bytes)")
            data = stream.exactly(int(value), deadline)
            if data is None:
                raise BackendError("the guest closed the connection inside an OUT frame")
            output += data
        elif word == "EXIT" and value.isdigit():
            return ExecResult(int(value), output.decode(errors="replace"))
        elif word == "ERR":
            raise BackendError(f"the guest's listener refused the request: {value}")
        else:
            raise BackendError(f"the guest sent {line[:80]!r}, not a frame of the contract")


# -- the VMs -----------------------------------------------------------------------------


@dataclass
class _Vm:
    """A VMM process and where its files are. `root` is its working directory as seen
    from here (the state directory, or the jail's root); `dirfd` reaches it by a
    short path."""

    name: str
    home: Path
    root: Path
    dirfd: int
    process: subprocess.Popen[bytes] | None = None
    client: Any = None  # httpcore.ConnectionPool over the API socket
    booted: bool = False  # InstanceStart (or the snapshot's load) was accepted
    answered: bool = False  # the guest's listener has accepted once
    removed: bool = False  # `remove` took it: a call still running must not spawn
    sockets: set[socket.socket] = field(default_factory=set)

    def __del__(self) -> None:
        # closed when the last user lets go, not at `remove`: a call abandoned at its
        # deadline may still build paths from it, and a reused number would lead it to
        # another VM's sockets
        with contextlib.suppress(OSError):
            os.close(self.dirfd)

    def path(self, name: str) -> str:
        return f"/proc/self/fd/{self.dirfd}/{name}"

    @property
    def log(self) -> Path:
        return self.home / LOG_FILE

    def died_after_drop(self, when: str, deadline: Deadline) -> str | None:
        """`died`, once a dropped connection (often the VMM going) has given the VMM a
        moment to finish dying."""
        if self.process is not None:
            wait_exit(self.process, min(DEATH_WAIT, deadline.remaining()))
        return self.died(when)

    def died(self, when: str) -> str | None:
        """'the VMM exited 1 <when>; its log: <tail>', None while it runs."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"exited {code}"
        tail = log_tail(self.log)
        return f"the VMM {how} {when}" + (f"; its log: {tail}" if tail else "")


class FirecrackerBackend:
    def __init__(self, options: FirecrackerOptions, timeouts: Timeouts) -> None:
        # the extra, imported when a target uses this backend (~0.2 s: not in a create)
        import httpcore

        self._httpcore = httpcore
        self.options = options
        root = Path(options.state_dir) if options.state_dir else default_root("firecracker")
        self.state = StateDirectory(root)
        self._vms: dict[str, _Vm] = {}
        self._lock = threading.Lock()
        self._snapshot: Path | None = None  # start_mode: snapshot, once set up
        self._snapshot_shape: tuple[int, int] = (0, 0)  # its vCPUs and MiB
        self._snapshot_lock = threading.Lock()
        self._snapshot_owner: int | None = None  # the lock held while the snapshot is in use

    # -- protocol ----------------------------------------------------------------

    def ping(self, deadline: Deadline) -> None:
        resolve_binary(self.options.binary)
        if self.options.jailer is not None:
            resolve_binary(self.options.jailer.binary)
            if os.geteuid() != 0:
                raise BackendUnavailable("firecracker: the jailer needs root")
        check_kvm()
        self.state.ensure()
        self._remove_stale_snapshots()

    def prepare(self, spec: SandboxSpec, deadline: Deadline) -> None:
        """`start_mode: snapshot`: the snapshot of a VM of `spec`'s shape, made once."""
        if self.options.start_mode != "snapshot":
            return
        shape = vm_shape(spec)
        if not self._snapshot_lock.acquire(timeout=deadline.remaining()):
            raise BackendTimeout("firecracker: another set-up of the snapshot still runs")
        try:
            if self._snapshot is None or self._snapshot_shape != shape:
                if self._snapshot is not None:
                    self._drop_snapshot(self._snapshot)
                    self._snapshot = None
                self._snapshot = self._make_snapshot(shape, deadline)
                self._snapshot_shape = shape
        finally:
            self._snapshot_lock.release()

    def create(self, spec: SandboxSpec, deadline: Deadline) -> SandboxRef:
        vm = self._launch(spec.name, spec.labels, deadline)
        if self.options.start_mode == "boot":
            self._configure(vm, vm_shape(spec), deadline)
        return SandboxRef(spec.name)

    def start(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        vm = self._get(sandbox.name)
        if self.options.start_mode == "snapshot":
            snapshot = self._snapshot
            if snapshot is None:
                raise BackendError("firecracker: no snapshot was made at set-up")
            self._api(vm, "PUT", "/snapshot/load", {
                "snapshot_path": str(snapshot / SNAPSHOT_STATE),
                "mem_backend": {"backend_type": "File",
                                "backend_path": str(snapshot / SNAPSHOT_MEMORY)},
                "resume_vm": True,
            }, deadline)  # fmt: skip
        else:
            self._api(vm, "PUT", "/actions", {"action_type": "InstanceStart"}, deadline)
        vm.booted = True
        self._wait_for_guest(vm, deadline)

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> ExecResult:
        vm = self._get(sandbox.name)
        sock: socket.socket | None = None
        try:
            sock = self._connect(vm, deadline, deadline)
            if sock is None:
                raise BackendError(self._not_answering(vm, "1 closed the connection without OK"))
            sock.settimeout(max(deadline.remaining(), 0.001))
            sock.sendall(run_request(command))
            return read_response(_Stream(sock), deadline)
        except TimeoutError as exc:
            raise BackendError("the guest did not finish the command within the deadline") from exc
        except (OSError, BackendError) as exc:
            why = vm.died_after_drop("during the command", deadline)
            if why is not None:
                raise BackendError(why) from exc
            if isinstance(exc, BackendError):
                raise
            raise BackendError(f"the connection to the guest failed: {exc}") from exc
        finally:
            if sock is not None:
                self._close(vm, sock)

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        with self._lock:
            vm = self._vms.get(sandbox.name)
        if vm is None or vm.process is None or vm.process.poll() is not None:
            return
        if vm.answered:  # a guest that never answered is not asked: it cannot power off
            try:
                self._api(vm, "PUT", "/actions", {"action_type": "SendCtrlAltDel"}, deadline)
            except BackendError:
                if vm.process.poll() is None:
                    raise
                return  # it went down while being asked to
            if wait_exit(vm.process, min(grace_seconds, deadline.remaining())):
                return
            reason = f"still running {grace_seconds:g}s after SendCtrlAltDel"
            log.warning("vmm killed", sandbox=vm.name, pid=vm.process.pid, reason=reason)
        with contextlib.suppress(ProcessLookupError):
            vm.process.kill()
        if not wait_exit(vm.process, deadline.remaining()):
            raise BackendError(f"the VMM (pid {vm.process.pid}) did not exit after SIGKILL")

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        name = sandbox.name
        with self._lock:
            vm = self._vms.pop(name, None)
            if vm is not None:
                vm.removed = True  # a create still running for it undoes its spawn
        if vm is not None:
            self._end(vm, deadline)
        self._remove_jail(name)
        self.state.remove(name)  # kills what an earlier process of the exporter left, too

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        return self.state.managed(target)

    def kill(self, sandbox: SandboxRef) -> None:
        """A call on this VM outlived its deadline: SIGKILL its VMM (what the call left
        running) and shut the vsock connections it waits on; `remove` reaps and deletes."""
        with self._lock:
            vm = self._vms.get(sandbox.name)
            sockets = list(vm.sockets) if vm else []
        if vm is not None and vm.process is not None and vm.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                vm.process.kill()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            names = list(self._vms)
        for name in names:
            with contextlib.suppress(BackendError):
                self.remove(SandboxRef(name), Deadline.after(5))
        with self._snapshot_lock:
            if self._snapshot is not None:
                self._drop_snapshot(self._snapshot)
                self._snapshot = None

    # -- the VMM -------------------------------------------------------------------

    def _launch(
        self, name: str, labels: dict[str, str], deadline: Deadline,
        before_spawn: Callable[[_Vm], None] | None = None,
    ) -> _Vm:  # fmt: skip
        """The work directory, the root drive in it, the VMM spawned and answering. On
        failure the VMM is ended here (its directory is `remove`'s to delete)."""
        home = self.state.create(name, labels)
        root = home if self.options.jailer is None else self._make_jail(name, deadline)
        try:
            dirfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise BackendError(f"cannot open {root}: {exc.strerror}") from exc
        vm = _Vm(name, home, root, dirfd)
        with self._lock:
            self._vms[name] = vm
        try:
            if before_spawn is not None:
                before_spawn(vm)
            self._place_drive(vm, deadline)
            process = self._spawn(vm)
            with self._lock:
                if vm.removed:  # this call was abandoned and `remove` has run: undo
                    process.kill()
                    process.wait()
                    raise BackendError(f"firecracker: {name} was removed while being created")
                vm.process = process
            self.state.add_process(name, process.pid)
            checked: Any = _PeerChecked(self._httpcore.SyncBackend(), vm)  # a NetworkBackend
            vm.client = self._httpcore.ConnectionPool(uds=vm.path(API_SOCKET),
                                                      network_backend=checked)  # fmt: skip
            self._wait_for_api(vm, deadline)
        except BaseException:
            self._discard(vm, deadline)
            raise
        return vm

    def _discard(self, vm: _Vm, deadline: Deadline) -> None:
        """Forget `vm` and end its VMM (its directory stays for `remove`)."""
        with self._lock:
            if self._vms.get(vm.name) is vm:
                del self._vms[vm.name]
        self._end(vm, deadline)

    def _spawn(self, vm: _Vm) -> subprocess.Popen[bytes]:
        binary = resolve_binary(self.options.binary)
        # warnings and errors only: the log's tail (in failure messages) is then the
        # guest's console and what went wrong, not the API's request chatter
        vmm_args = ["--api-sock", API_SOCKET, "--level", "Warning"]
        jailer = self.options.jailer
        if jailer is None:
            command, cwd = [binary, *vmm_args, "--id", vm_id(vm.name)], vm.root
        else:
            command = [resolve_binary(jailer.binary), "--id", vm_id(vm.name),
                       "--exec-file", binary, "--uid", str(jailer.uid), "--gid", str(jailer.gid),
                       "--chroot-base-dir", jailer.chroot_base, "--", *vmm_args]  # fmt: skip
            # (the jailer passes --id on to the VMM itself)
            cwd = vm.home
        try:
            with vm.log.open("ab") as log_file:
                return subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL,
                                        stdout=log_file, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip
        except OSError as exc:
            raise BackendError(f"cannot run {command[0]}: {exc}") from exc

    def _wait_for_api(self, vm: _Vm, deadline: Deadline) -> None:
        """Until `GET /` answers on the API socket (polled: the VMM makes it when ready,
        in ~3 ms; a failed connect costs microseconds)."""
        deadline = _for_reporting(deadline)
        while True:
            why = vm.died("before its API socket answered")
            if why is not None:
                raise BackendError(why)
            try:
                self._request(vm, "GET", "/", None, deadline)
                return
            except self._httpcore.NetworkError as exc:
                if deadline.expired:
                    raise BackendTimeout(f"the VMM's API socket did not answer: {exc}") from exc
            time.sleep(POLL)

    def _api(
        self, vm: _Vm, method: str, path: str, body: dict[str, Any], deadline: Deadline
    ) -> None:
        """One API call; BackendError with Firecracker's fault_message when refused."""
        httpcore = self._httpcore
        try:
            response = self._request(vm, method, path, body, deadline)
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

    @staticmethod
    def _request(
        vm: _Vm, method: str, path: str, body: dict[str, Any] | None, deadline: Deadline
    ) -> Any:
        """One request on the VM's pool, every step bounded by what is left."""
        left = max(deadline.remaining(), 0.001)
        content = json.dumps(body).encode() if body is not None else b""
        headers = [(b"Host", b"localhost"), (b"Accept", b"application/json")]
        if body is not None:
            headers += [(b"Content-Type", b"application/json"),
                        (b"Content-Length", str(len(content)).encode())]  # fmt: skip
        timeouts = {"connect": left, "read": left, "write": left, "pool": left}
        url = f"http://localhost{path}"
        extensions = {"timeout": timeouts}
        return vm.client.request(method, url, headers=headers, content=content or None,
                                 extensions=extensions)  # fmt: skip

    def _configure(self, vm: _Vm, shape: tuple[int, int], deadline: Deadline) -> None:
        """boot-source, the root drive, machine-config (`shape`: vCPUs, MiB) and vsock."""
        options = self.options
        boot = {"kernel_image_path": self._for_vmm(options.kernel), "boot_args": self._boot_args()}
        if options.initrd:
            boot["initrd_path"] = self._for_vmm(options.initrd)
        self._api(vm, "PUT", "/boot-source", boot, deadline)
        self._api(vm, "PUT", "/drives/rootfs", {
            "drive_id": "rootfs", "path_on_host": ROOT_DRIVE, "is_root_device": True,
            "is_read_only": options.rootfs_mode == "read_only",
        }, deadline)  # fmt: skip
        self._api(vm, "PUT", "/machine-config", {
            "vcpu_count": shape[0], "mem_size_mib": shape[1],
        }, deadline)  # fmt: skip
        self._api(vm, "PUT", "/vsock", {"guest_cid": options.guest_cid, "uds_path": VSOCK_SOCKET},
                  deadline)  # fmt: skip

    def _boot_args(self) -> str:
        args = self.options.boot_args
        if "sandbox_guest.port=" not in args and self.options.guest_port != 52:
            args += f" sandbox_guest.port={self.options.guest_port}"
        return args

    def _for_vmm(self, path: str) -> str:
        """A file the VMM must open, as it sees it (in a jail: copied in by `_make_jail`)."""
        return path if self.options.jailer is None else "/" + Path(path).name

    def _place_drive(self, vm: _Vm, deadline: Deadline) -> None:
        """The root drive as `rootfs.ext4` in the VM's directory: a link to the shared
        image when read-only (unless jailed: a hard link, else a copy), else its own
        copy-on-write clone (or copy)."""
        source = Path(self.options.rootfs).absolute()
        target = vm.root / ROOT_DRIVE
        jailer = self.options.jailer
        try:
            if self.options.rootfs_mode == "copy":
                copy_file(source, target, deadline)
                if jailer is not None:  # the jailed VMM writes it as the jail's user
                    os.chown(target, jailer.uid, jailer.gid)
            elif jailer is None:
                target.symlink_to(source)
            else:
                _link_or_copy(source, target, deadline)
        except OSError as exc:
            raise BackendError(f"cannot place the root drive {source}: {exc}") from exc

    def _jail(self, name: str) -> Path | None:
        """The jail of sandbox `name` (`<chroot_base>/<exec file name>/<id>`, where the
        jailer chroots into `root/`), from the config alone: never from a file a
        record holds, since it is deleted as root."""
        jailer = self.options.jailer
        if jailer is None:
            return None
        return Path(jailer.chroot_base) / Path(self.options.binary).name / vm_id(name)

    def _make_jail(self, name: str, deadline: Deadline) -> Path:
        """The jail's root, owned by the jail's user, with the kernel and initrd in it."""
        jailer, jail = self.options.jailer, self._jail(name)
        assert jailer is not None
        assert jail is not None
        root = jail / "root"
        try:
            root.mkdir(parents=True)
            for path in filter(None, (self.options.kernel, self.options.initrd)):
                _link_or_copy(Path(path).absolute(), root / Path(path).name, deadline)
            os.chown(root, jailer.uid, jailer.gid)
        except OSError as exc:
            raise BackendError(f"cannot make the jail {root}: {exc}") from exc
        return root

    def _remove_jail(self, name: str) -> None:
        """After the VM's processes are gone; a failure keeps the record, for a retry."""
        jail = self._jail(name)
        if jail is None or not jail.exists():
            return
        self.state.kill_processes(name)
        try:
            shutil.rmtree(jail)
        except OSError as exc:
            raise BackendError(f"cannot remove the jail {jail}: {exc}") from exc

    def _end(self, vm: _Vm, deadline: Deadline) -> None:
        """The VMM killed and reaped, its connections and client closed."""
        try:
            for sock in list(vm.sockets):
                self._close(vm, sock)
            process = vm.process
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                if not wait_exit(process, deadline.remaining()):
                    raise BackendError(f"the VMM (pid {process.pid}) did not exit after SIGKILL")
        finally:
            if vm.client is not None:
                vm.client.close()

    # -- the guest -----------------------------------------------------------------

    def _connect(self, vm: _Vm, attempt: Deadline, deadline: Deadline) -> socket.socket | None:
        """A connection to the guest's listener after `CONNECT`/`OK`; None when the
        guest closed it (nothing listens yet); TimeoutError when nothing came by
        `attempt`."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            vm.sockets.add(sock)
        try:
            sock.settimeout(max(min(attempt.remaining(), deadline.remaining()), 0.001))
            sock.connect(vm.path(VSOCK_SOCKET))
            _check_peer(sock, vm, "vsock")
            sock.sendall(b"CONNECT %d\n" % self.options.guest_port)
            stream = _Stream(sock)
            line = stream.line(Deadline(min(attempt.at, deadline.at)))
        except BaseException:
            self._close(vm, sock)
            raise
        if line is None:
            self._close(vm, sock)
            return None
        if not line.startswith(b"OK "):
            self._close(vm, sock)
            raise BackendError(f"the vsock device answered {line[:80]!r} to CONNECT, not OK")
        if stream.buffer:  # the guest never speaks first; keep nothing unread
            self._close(vm, sock)
            raise BackendError("the guest sent bytes before the request")
        return sock

    def _wait_for_guest(self, vm: _Vm, deadline: Deadline) -> None:
        """Until the guest's listener accepts on the port: each attempt bounded by
        `vsock_attempt`, a closed one (nothing listens yet) tried again. A failure says
        what the attempts met, each kind counted, in the order first met."""
        met: Counter[str] = Counter()
        deadline = _for_reporting(deadline)
        while not deadline.expired:
            why = vm.died("while waiting for the guest")
            if why is not None:
                raise BackendError(why)
            try:
                sock = self._connect(vm, Deadline.after(self.options.vsock_attempt), deadline)
            except TimeoutError:
                met["accepted and then nothing came"] += 1
                continue
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                met[f"the vsock socket: {exc.strerror}"] += 1
            except OSError as exc:
                met[f"the vsock socket failed: {exc}"] += 1
            else:
                if sock is not None:
                    self._close(vm, sock)
                    vm.answered = True
                    return
                met["closed the connection without OK"] += 1
            time.sleep(min(POLL, deadline.remaining()))
        attempts = ", ".join(f"{count} {what}" for what, count in met.items())
        raise BackendTimeout(self._not_answering(vm, attempts or "no attempt was made"))

    def _not_answering(self, vm: _Vm, last: str) -> str:
        tail = log_tail(vm.log)
        return (f"guest did not answer on vsock port {self.options.guest_port} "
                f"(attempts: {last})"
                + (f"; its log: {tail}" if tail else ""))  # fmt: skip

    def _close(self, vm: _Vm, sock: socket.socket) -> None:
        with self._lock:
            vm.sockets.discard(sock)
        sock.close()

    # -- snapshots -----------------------------------------------------------------

    def _make_snapshot(self, shape: tuple[int, int], deadline: Deadline) -> Path:
        """Boot one VM until its guest answers, pause it, snapshot it into the state
        directory; the VMM is then ended. Returns the snapshot's directory."""
        self._remove_stale_snapshots()
        name = f"{SNAPSHOT_PREFIX}{secrets.token_hex(6)}"

        def lock(vm: _Vm) -> None:  # before the VMM: its maker holds it from the start
            self._snapshot_owner = _hold_lock(vm.home / SNAPSHOT_LOCK)

        try:
            vm = self._launch(name, {}, deadline, before_spawn=lock)
            try:
                self._configure(vm, shape, deadline)
                self._api(vm, "PUT", "/actions", {"action_type": "InstanceStart"}, deadline)
                vm.booted = True
                self._wait_for_guest(vm, deadline)
                self._api(vm, "PATCH", "/vm", {"state": "Paused"}, deadline)
                self._api(vm, "PUT", "/snapshot/create", {"snapshot_type": "Full",
                          "snapshot_path": SNAPSHOT_STATE, "mem_file_path": SNAPSHOT_MEMORY},
                          deadline)  # fmt: skip
            finally:
                self._discard(vm, deadline)  # the VMM's work is done either way
        except BaseException:
            self._drop_snapshot(self.state.path(name))
            raise
        (vm.home / ROOT_DRIVE).unlink(missing_ok=True)
        return vm.home

    def _drop_snapshot(self, directory: Path) -> None:
        """Delete a snapshot this backend made, and let go of its lock."""
        with contextlib.suppress(BackendError):
            self.state.remove(directory.name)
        if self._snapshot_owner is not None:
            os.close(self._snapshot_owner)
            self._snapshot_owner = None

    def _remove_stale_snapshots(self) -> None:
        """Snapshots whose maker is gone (a killed exporter): their lock is free, or was
        never taken, and they are older than a set-up (a maker takes its lock just after
        making the directory). A snapshot is the VM's whole memory; several backends
        may share the state directory."""
        for directory in self.state.root.glob(f"{SNAPSHOT_PREFIX}*"):
            try:
                if time.time() - directory.lstat().st_mtime < STALE_SNAPSHOT:
                    continue
                held = _hold_lock(directory / SNAPSHOT_LOCK)
            except (BlockingIOError, FileNotFoundError, NotADirectoryError):
                continue  # in use, just removed, or not ours
            try:
                with contextlib.suppress(BackendError):
                    self.state.remove(directory.name)
            finally:
                os.close(held)

    def _get(self, name: str) -> _Vm:
        with self._lock:
            vm = self._vms.get(name)
        if vm is None:
            raise BackendError(f"firecracker: no VM {name!r} here")
        return vm


def _check_peer(sock: socket.socket | None, vm: _Vm, what: str) -> None:
    """The socket's other end is this VM's VMM: a jailed VMM owns the directory its
    sockets are in and could leave a link to another socket there for the exporter."""
    if sock is None:
        return
    pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if vm.process is None or pid != vm.process.pid:
        raise BackendError(f"the {what} socket of {vm.name} is served by pid {pid}, not its VMM")


class _PeerChecked:
    """httpcore's network backend for one VM's API socket: each new connection checks
    its peer is the VMM before a byte is sent."""

    def __init__(self, inner: Any, vm: _Vm) -> None:
        self._inner = inner
        self._vm = vm

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> Any:  # fmt: skip
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        try:
            _check_peer(stream.get_extra_info("socket"), self._vm, "API")
        except BaseException:
            stream.close()
            raise
        return stream

    def connect_tcp(self, *args: Any, **kwargs: Any) -> Any:
        raise BackendError("firecracker: the API is reached over its Unix socket only")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _for_reporting(deadline: Deadline) -> Deadline:
    """A moment before `deadline`: a wait that ends there can still tell the runner why."""
    return Deadline(deadline.at - min(REPORT_MARGIN, deadline.remaining() / 10))


def _hold_lock(path: Path) -> int:
    """An exclusive lock on `path` (made if missing), held while the descriptor is open;
    BlockingIOError when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _link_or_copy(source: Path, target: Path, deadline: Deadline) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy_file(source, target, deadline)


def find_here() -> Found | NotFound:
    """Found where `firecracker` is on PATH, /dev/kvm makes VMs and a guest built by
    scripts/build-firecracker-guest.sh is in its default place."""
    if not sys.platform.startswith("linux"):
        return NotFound(f"needs KVM on Linux; this is {sys.platform}")
    binary = shutil.which("firecracker")
    if binary is None:
        return NotFound("`firecracker` is not on PATH: scripts/fetch-firecracker.sh fetches it")
    try:
        check_kvm()
    except BackendUnavailable as exc:
        return NotFound(str(exc).removeprefix("firecracker: "))
    guest = {key: GUEST_DIR / name for key, name in GUEST_FILES.items()}
    if not (guest["kernel"].is_file() and guest["rootfs"].is_file()):
        return NotFound(f"no guest kernel and root drive in {GUEST_DIR}: "
                        "scripts/build-firecracker-guest.sh builds them there")  # fmt: skip
    options = {key: str(path) for key, path in guest.items() if path.is_file()}
    return Found({"binary": binary, **options}, f"KVM through {binary}")


KIND = BackendKind(
    name="firecracker",
    options=FirecrackerOptions,
    factory=FirecrackerBackend,
    capabilities=Capabilities(
        images=Images.NONE, remote=False, needs_root=False, thread_safe=True, prepares=True
    ),
    extra="firecracker",
    discover=find_here,
    example={key: str(GUEST_DIR / name) for key, name in GUEST_FILES.items()},
    summary="Firecracker micro-VMs over the VMM's API socket, commands over vsock",
)
