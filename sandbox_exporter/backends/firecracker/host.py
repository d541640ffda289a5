"""What the backend asks of the host: its binaries, KVM, file copies and locks, the
VMM's exit and its log."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import shutil
import subprocess
from pathlib import Path

from sandbox_exporter.backends.base import BackendTimeout, BackendUnavailable, Deadline

KVM_DEVICE = "/dev/kvm"
KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_API_VERSION = 0xAE00, 0xAE01, 12
FICLONE = 0x40049409
COPY_CHUNK = 8 << 20


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


def link_or_copy(source: Path, target: Path, deadline: Deadline) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy_file(source, target, deadline)


def hold_lock(path: Path) -> int:
    """An exclusive lock on `path` (made if missing), held while the descriptor is open;
    BlockingIOError when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


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
