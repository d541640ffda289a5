"""`start_mode: snapshot`: the snapshot a backend's VMs are restored from, made at set-up
in the state directory from a VM booted until its guest answers, and the snapshots of
exporters killed since, removed."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType

from sandbox_exporter.backends.base import BackendError, BackendTimeout, Deadline
from sandbox_exporter.backends.firecracker.api import call
from sandbox_exporter.backends.firecracker.host import hold_lock
from sandbox_exporter.backends.firecracker.vm import ROOT_DRIVE, Vm
from sandbox_exporter.backends.state import StateDirectory

SNAPSHOT_STATE, SNAPSHOT_MEMORY = "vmstate", "memory"
# a directory per snapshot, locked by its maker
SNAPSHOT_PREFIX, SNAPSHOT_LOCK = ".snapshot-", "lock"
STALE_SNAPSHOT = 60.0  # seconds: a snapshot directory this old with a free lock is a leftover

# A VM named `name` of a shape (vCPUs, MiB), `before_spawn` called with it before its VMM
# starts, booted until its guest answers; its VMM is ended when the block is left.
Boot = Callable[[str, tuple[int, int], Callable[[Vm], None], Deadline], AbstractContextManager[Vm]]


class Snapshots:
    """The snapshot of one backend: made by one set-up at a time, again when the shape
    changes, and held (its lock) while in use."""

    def __init__(self, state: StateDirectory, httpcore: ModuleType, boot: Boot) -> None:
        self.state = state
        self._httpcore = httpcore
        self._boot = boot
        self.path: Path | None = None  # once set up
        self.shape: tuple[int, int] = (0, 0)  # its vCPUs and MiB
        self.owner: int | None = None  # the lock held while the snapshot is in use
        self._lock = threading.Lock()

    def prepare(self, shape: tuple[int, int], deadline: Deadline) -> None:
        """The snapshot of a VM of `shape` (vCPUs, MiB), made once."""
        if not self._lock.acquire(timeout=deadline.remaining()):
            raise BackendTimeout("firecracker: another set-up of the snapshot still runs")
        try:
            if self.path is None or self.shape != shape:
                if self.path is not None:
                    self._drop(self.path)
                    self.path = None
                self.path = self._make(shape, deadline)
                self.shape = shape
        finally:
            self._lock.release()

    def load(self, vm: Vm, deadline: Deadline) -> None:
        """The snapshot loaded into `vm`'s fresh VMM, and resumed."""
        snapshot = self.path
        if snapshot is None:
            raise BackendError("firecracker: no snapshot was made at set-up")
        memory = {"backend_type": "File", "backend_path": str(snapshot / SNAPSHOT_MEMORY)}
        load = {
            "snapshot_path": str(snapshot / SNAPSHOT_STATE),
            "mem_backend": memory,
            "resume_vm": True,
        }
        call(self._httpcore, vm, "PUT", "/snapshot/load", load, deadline)

    def close(self) -> None:
        with self._lock:
            if self.path is not None:
                self._drop(self.path)
                self.path = None

    def remove_stale(self) -> None:
        """Snapshots whose maker is gone (a killed exporter): their lock is free, or was
        never taken, and they are older than a set-up (a maker takes its lock just after
        making the directory). A snapshot is the VM's whole memory; several backends
        may share the state directory."""
        for directory in self.state.root.glob(f"{SNAPSHOT_PREFIX}*"):
            try:
                if time.time() - directory.lstat().st_mtime < STALE_SNAPSHOT:
                    continue
                held = hold_lock(directory / SNAPSHOT_LOCK)
            except (BlockingIOError, FileNotFoundError, NotADirectoryError):
                continue  # in use, just removed, or not ours
            try:
                with contextlib.suppress(BackendError):
                    self.state.remove(directory.name)
            finally:
                os.close(held)

    def _make(self, shape: tuple[int, int], deadline: Deadline) -> Path:
        """Boot one VM until its guest answers, pause it, snapshot it into the state
        directory; the VMM is then ended. Returns the snapshot's directory."""
        self.remove_stale()
        name = f"{SNAPSHOT_PREFIX}{secrets.token_hex(6)}"

        def lock(vm: Vm) -> None:  # before the VMM: its maker holds it from the start
            self.owner = hold_lock(vm.home / SNAPSHOT_LOCK)

        try:
            with self._boot(name, shape, lock, deadline) as vm:
                call(self._httpcore, vm, "PATCH", "/vm", {"state": "Paused"}, deadline)
                create = {
                    "snapshot_type": "Full",
                    "snapshot_path": SNAPSHOT_STATE,
                    "mem_file_path": SNAPSHOT_MEMORY,
                }
                call(self._httpcore, vm, "PUT", "/snapshot/create", create, deadline)
        except BaseException:
            self._drop(self.state.path(name))
            raise
        (vm.home / ROOT_DRIVE).unlink(missing_ok=True)
        return vm.home

    def _drop(self, directory: Path) -> None:
        """Delete a snapshot this backend made, and let go of its lock."""
        with contextlib.suppress(BackendError):
            self.state.remove(directory.name)
        if self.owner is not None:
            os.close(self.owner)
            self.owner = None
