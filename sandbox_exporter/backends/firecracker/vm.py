"""A VM as the backend holds it: its VMM process, its files' names, its connections, its
`--id` and shape, the check that a socket is served by its VMM, and the pace of the
waits on it."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox_exporter.backends.base import BackendError, Deadline, SandboxSpec
from sandbox_exporter.backends.firecracker.host import log_tail, wait_exit

API_SOCKET = "api.sock"
VSOCK_SOCKET = "v.sock"
ROOT_DRIVE = "rootfs.ext4"
LOG_FILE = "vmm.log"
MAX_ID = 64  # Firecracker's and the jailer's limit on --id
DEATH_WAIT = 0.5  # seconds to let a VMM whose connection just broke finish dying
POLL = 0.0005  # seconds between two looks at a socket the VMM or the guest is about to open
REPORT_MARGIN = 0.05  # seconds kept at the end of a wait to report why it failed


def vm_shape(spec: SandboxSpec) -> tuple[int, int]:
    """The VM's vCPUs (the spec's CPUs rounded up, at least 1) and MiB of memory."""
    return max(1, math.ceil(spec.cpus)), spec.memory_mb


def vm_id(name: str) -> str:
    """The VMM's `--id` for sandbox `name`: its letters, digits and '-', at most 64."""
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name)
    if len(cleaned) <= MAX_ID:
        return cleaned
    return f"{cleaned[: MAX_ID - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


@dataclass
class Vm:
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
    # the connections to the guest calls wait on, for `kill` to shut from another thread
    sockets: set[socket.socket] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

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

    def hold(self, sock: socket.socket) -> None:
        """Keep `sock` where `shut` reaches it, until `close`."""
        with self.lock:
            self.sockets.add(sock)

    def close(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(sock)
        sock.close()

    def close_all(self) -> None:
        with self.lock:
            held = list(self.sockets)
        for sock in held:
            self.close(sock)

    def shut(self) -> None:
        """Shut every connection held (from another thread: what waits on it returns)."""
        with self.lock:
            held = list(self.sockets)
        for sock in held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

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


def check_peer(sock: socket.socket | None, vm: Vm, what: str) -> None:
    """The socket's other end is this VM's VMM: a jailed VMM owns the directory its
    sockets are in and could leave a link to another socket there for the exporter."""
    if sock is None:
        return
    pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if vm.process is None or pid != vm.process.pid:
        raise BackendError(f"the {what} socket of {vm.name} is served by pid {pid}, not its VMM")


def for_reporting(deadline: Deadline) -> Deadline:
    """A moment before `deadline`: a wait that ends there can still tell the runner why."""
    return Deadline(deadline.at - min(REPORT_MARGIN, deadline.remaining() / 10))
