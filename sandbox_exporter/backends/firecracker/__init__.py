"""Firecracker micro-VMs: the real VMM over its API socket, commands over vsock (extra
`[firecracker]`: httpcore).

Phases, with `start_mode: boot` (the default):

create = the VM's work directory (its record, the root drive), the VMM spawned
         (`firecracker --api-sock api.sock --id <vm> --level Warning`, or the jailer
         around it) and configured over its API: boot-source, the root drive,
         machine-config, vsock;
start  = `InstanceStart`, then until the guest's listener accepts on the vsock port
         (`CONNECT <port>` answered `OK`);
exec   = the command through the guest's listener (docs/backends/firecracker-guest.md: the
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
peer is the VM's own VMM before a byte is sent (`_PeerChecked`). The vsock handshake
and the guest protocol are a few lines over a plain socket.

Where each part is: backend.py the backend (its VMs, the phases), api.py the API
client, guest.py the guest's protocol over vsock, jail.py how the VMM runs (jailed or
not) and the files it is given, snapshots.py `start_mode: snapshot`'s snapshot, vm.py
a VM's record, host.py the host (binaries, KVM, copies, locks, the VMM's exit),
options.py the target's options; here, what the registry reads (`KIND`, `find_here`).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sandbox_exporter.backends.base import (
    BackendKind,
    BackendUnavailable,
    Capabilities,
    Found,
    Images,
    NotFound,
)
from sandbox_exporter.backends.firecracker.backend import FirecrackerBackend
from sandbox_exporter.backends.firecracker.guest import run_request
from sandbox_exporter.backends.firecracker.host import check_kvm
from sandbox_exporter.backends.firecracker.options import FirecrackerOptions, JailerOptions
from sandbox_exporter.backends.firecracker.vm import vm_id

__all__ = [
    "KIND",
    "FirecrackerBackend",
    "FirecrackerOptions",
    "JailerOptions",
    "check_kvm",
    "find_here",
    "run_request",
    "vm_id",
]

# where scripts/build-firecracker-guest.sh puts a guest by default (`targets: auto` looks)
GUEST_DIR = Path("/var/lib/sandbox-exporter/firecracker")
GUEST_FILES = {"kernel": "vmlinux", "initrd": "initrd.cpio", "rootfs": "rootfs.ext4"}


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
        return NotFound(
            f"no guest kernel and root drive in {GUEST_DIR}: "
            "scripts/build-firecracker-guest.sh builds them there"
        )
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
