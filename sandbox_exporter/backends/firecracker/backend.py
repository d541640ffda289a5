"""The backend: its VMs by sandbox name, each phase of the protocol done with the
modules beside it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import structlog

from sandbox_exporter.backends.base import (
    BackendError,
    BackendUnavailable,
    Deadline,
    ExecResult,
    ManagedSandbox,
    SandboxRef,
    SandboxSpec,
    version_line,
)
from sandbox_exporter.backends.firecracker.api import call, configure, open_client, wait_for_api
from sandbox_exporter.backends.firecracker.guest import run, wait_for_guest
from sandbox_exporter.backends.firecracker.host import check_kvm, resolve_binary, wait_exit
from sandbox_exporter.backends.firecracker.jail import make_jail, place_drive, remove_jail, spawn
from sandbox_exporter.backends.firecracker.options import FirecrackerOptions
from sandbox_exporter.backends.firecracker.snapshots import Snapshots
from sandbox_exporter.backends.firecracker.vm import Vm, vm_shape
from sandbox_exporter.backends.state import StateDirectory, default_root
from sandbox_exporter.config.settings import Timeouts

log = structlog.get_logger("sandbox_exporter.backends.firecracker")


class FirecrackerBackend:
    def __init__(self, options: FirecrackerOptions, timeouts: Timeouts) -> None:
        # the extra, imported when a target uses this backend (~0.2 s: not in a create)
        import httpcore

        self._httpcore = httpcore
        self.options = options
        root = Path(options.state_dir) if options.state_dir else default_root("firecracker")
        self.state = StateDirectory(root)
        self._vms: dict[str, Vm] = {}
        self._lock = threading.Lock()
        self._snapshots = Snapshots(self.state, httpcore, self._booted)

    # -- protocol ----------------------------------------------------------------

    def ping(self, deadline: Deadline) -> None:
        resolve_binary(self.options.binary)
        if self.options.jailer is not None:
            resolve_binary(self.options.jailer.binary)
            if os.geteuid() != 0:
                raise BackendUnavailable("firecracker: the jailer needs root")
        check_kvm()
        self.state.ensure()
        self._snapshots.remove_stale()

    def describe(self, image: str | None, deadline: Deadline) -> dict[str, str]:
        """What `bench --json` records of the VMM: its version (`firecracker --version`)
        and how sandboxes start."""
        version = version_line([resolve_binary(self.options.binary), "--version"], deadline)
        found = {"firecracker_version": version, "start_mode": self.options.start_mode}
        for name in ("kernel", "rootfs"):  # the guest's "image": a new one at the same path
            found[f"{name}_sha256"] = _digest(getattr(self.options, name))
        return found

    def prepare(self, spec: SandboxSpec, deadline: Deadline) -> None:
        """`start_mode: snapshot`: the snapshot of a VM of `spec`'s shape, made once."""
        if self.options.start_mode != "snapshot":
            return
        self._snapshots.prepare(vm_shape(spec), deadline)

    def create(self, spec: SandboxSpec, deadline: Deadline) -> SandboxRef:
        vm = self._launch(spec.name, spec.labels, deadline)
        if self.options.start_mode == "boot":
            configure(self._httpcore, vm, self.options, vm_shape(spec), deadline)
        return SandboxRef(spec.name)

    def start(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        vm = self._get(sandbox.name)
        if self.options.start_mode == "snapshot":
            self._snapshots.load(vm, deadline)
        else:
            call(self._httpcore, vm, "PUT", "/actions", {"action_type": "InstanceStart"}, deadline)
        vm.booted = True
        wait_for_guest(vm, self.options, deadline)

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> ExecResult:
        return run(self._get(sandbox.name), self.options.guest_port, command, deadline)

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        with self._lock:
            vm = self._vms.get(sandbox.name)
        if vm is None or vm.process is None or vm.process.poll() is not None:
            return
        if vm.answered:  # a guest that never answered is not asked: it cannot power off
            try:
                ctrl_alt_del = {"action_type": "SendCtrlAltDel"}
                call(self._httpcore, vm, "PUT", "/actions", ctrl_alt_del, deadline)
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
        remove_jail(self.options, self.state, name)
        self.state.remove(name)  # kills what an earlier process of the exporter left, too

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        return self.state.managed(target)

    def kill(self, sandbox: SandboxRef) -> None:
        """A call on this VM outlived its deadline: SIGKILL its VMM (what the call left
        running) and shut the vsock connections it waits on; `remove` reaps and deletes."""
        with self._lock:
            vm = self._vms.get(sandbox.name)
        if vm is None:
            return
        if vm.process is not None and vm.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                vm.process.kill()
        vm.shut()

    def close(self) -> None:
        with self._lock:
            names = list(self._vms)
        for name in names:
            with contextlib.suppress(BackendError):
                self.remove(SandboxRef(name), Deadline.after(5))
        self._snapshots.close()

    # -- the VMM -------------------------------------------------------------------

    def _launch(
        self,
        name: str,
        labels: dict[str, str],
        deadline: Deadline,
        before_spawn: Callable[[Vm], None] | None = None,
    ) -> Vm:
        """The work directory, the root drive in it, the VMM spawned and answering. On
        failure the VMM is ended here (its directory is `remove`'s to delete)."""
        home = self.state.create(name, labels)
        root = home if self.options.jailer is None else make_jail(self.options, name, deadline)
        try:
            dirfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise BackendError(f"cannot open {root}: {exc.strerror}") from exc
        vm = Vm(name, home, root, dirfd)
        with self._lock:
            self._vms[name] = vm
        try:
            if before_spawn is not None:
                before_spawn(vm)
            place_drive(vm, self.options, deadline)
            process = spawn(vm, self.options)
            with self._lock:
                if vm.removed:  # this call was abandoned and `remove` has run: undo
                    process.kill()
                    process.wait()
                    raise BackendError(f"firecracker: {name} was removed while being created")
                vm.process = process
            self.state.add_process(name, process.pid)
            open_client(self._httpcore, vm)
            wait_for_api(self._httpcore, vm, deadline)
        except BaseException:
            self._discard(vm, deadline)
            raise
        return vm

    @contextlib.contextmanager
    def _booted(
        self,
        name: str,
        shape: tuple[int, int],
        before_spawn: Callable[[Vm], None],
        deadline: Deadline,
    ) -> Iterator[Vm]:
        """A VM of `shape` for a snapshot, booted until its guest answers; its VMM
        ended when the block is left."""
        vm = self._launch(name, {}, deadline, before_spawn=before_spawn)
        try:
            configure(self._httpcore, vm, self.options, shape, deadline)
            call(self._httpcore, vm, "PUT", "/actions", {"action_type": "InstanceStart"}, deadline)
            vm.booted = True
            wait_for_guest(vm, self.options, deadline)
            yield vm
        finally:
            self._discard(vm, deadline)  # the VMM's work is done either way

    def _discard(self, vm: Vm, deadline: Deadline) -> None:
        """Forget `vm` and end its VMM (its directory stays for `remove`)."""
        with self._lock:
            if self._vms.get(vm.name) is vm:
                del self._vms[vm.name]
        self._end(vm, deadline)

    def _end(self, vm: Vm, deadline: Deadline) -> None:
        """The VMM killed and reaped, its connections and client closed."""
        try:
            vm.close_all()
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

    def _get(self, name: str) -> Vm:
        with self._lock:
            vm = self._vms.get(name)
        if vm is None:
            raise BackendError(f"firecracker: no VM {name!r} here")
        return vm


def _digest(path: str) -> str:
    """The sha256 of a file, or why there is none."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        return f"(unreadable: {exc.strerror})"
    return digest.hexdigest()
