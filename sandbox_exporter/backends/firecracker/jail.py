"""How the VMM runs: in the VM's directory, or through the jailer in a chroot of its
own (the jail: its path, made and removed), and the files it is given there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sandbox_exporter.backends.base import BackendError, Deadline
from sandbox_exporter.backends.firecracker.host import copy_file, link_or_copy, resolve_binary
from sandbox_exporter.backends.firecracker.options import FirecrackerOptions
from sandbox_exporter.backends.firecracker.vm import API_SOCKET, ROOT_DRIVE, Vm, vm_id
from sandbox_exporter.backends.state import StateDirectory


def jail_path(options: FirecrackerOptions, name: str) -> Path | None:
    """The jail of sandbox `name` (`<chroot_base>/<exec file name>/<id>`, where the
    jailer chroots into `root/`), from the config alone: never from a file a
    record holds, since it is deleted as root."""
    jailer = options.jailer
    if jailer is None:
        return None
    return Path(jailer.chroot_base) / Path(options.binary).name / vm_id(name)


def make_jail(options: FirecrackerOptions, name: str, deadline: Deadline) -> Path:
    """The jail's root, owned by the jail's user, with the kernel and initrd in it."""
    jailer, jail = options.jailer, jail_path(options, name)
    assert jailer is not None
    assert jail is not None
    root = jail / "root"
    try:
        root.mkdir(parents=True)
        for path in filter(None, (options.kernel, options.initrd)):
            link_or_copy(Path(path).absolute(), root / Path(path).name, deadline)
        os.chown(root, jailer.uid, jailer.gid)
    except OSError as exc:
        raise BackendError(f"cannot make the jail {root}: {exc}") from exc
    return root


def remove_jail(options: FirecrackerOptions, state: StateDirectory, name: str) -> None:
    """After the VM's processes are gone; a failure keeps the record, for a retry."""
    jail = jail_path(options, name)
    if jail is None or not jail.exists():
        return
    state.kill_processes(name)
    try:
        shutil.rmtree(jail)
    except OSError as exc:
        raise BackendError(f"cannot remove the jail {jail}: {exc}") from exc


def for_vmm(options: FirecrackerOptions, path: str) -> str:
    """A file the VMM must open, as it sees it (in a jail: copied in by `make_jail`)."""
    return path if options.jailer is None else "/" + Path(path).name


def place_drive(vm: Vm, options: FirecrackerOptions, deadline: Deadline) -> None:
    """The root drive as `rootfs.ext4` in the VM's directory: a link to the shared
    image when read-only (unless jailed: a hard link, else a copy), else its own
    copy-on-write clone (or copy)."""
    source = Path(options.rootfs).absolute()
    target = vm.root / ROOT_DRIVE
    jailer = options.jailer
    try:
        if options.rootfs_mode == "copy":
            copy_file(source, target, deadline)
            if jailer is not None:  # the jailed VMM writes it as the jail's user
                os.chown(target, jailer.uid, jailer.gid)
        elif jailer is None:
            target.symlink_to(source)
        else:
            link_or_copy(source, target, deadline)
    except OSError as exc:
        raise BackendError(f"cannot place the root drive {source}: {exc}") from exc


def spawn(vm: Vm, options: FirecrackerOptions) -> subprocess.Popen[bytes]:
    """The VMM (or the jailer around it) started in a session of its own, its output
    into the VM's log."""
    binary = resolve_binary(options.binary)
    # warnings and errors only: the log's tail (in failure messages) is then the
    # guest's console and what went wrong, not the API's request chatter
    vmm_args = ["--api-sock", API_SOCKET, "--level", "Warning"]
    jailer = options.jailer
    if jailer is None:
        command, cwd = [binary, *vmm_args, "--id", vm_id(vm.name)], vm.root
    else:
        command = [resolve_binary(jailer.binary), "--id", vm_id(vm.name), "--exec-file", binary]
        command += ["--uid", str(jailer.uid), "--gid", str(jailer.gid)]
        command += ["--chroot-base-dir", jailer.chroot_base, "--", *vmm_args]
        # (the jailer passes --id on to the VMM itself)
        cwd = vm.home
    try:
        with vm.log.open("ab") as log_file:
            return subprocess.Popen(
                command,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as exc:
        raise BackendError(f"cannot run {command[0]}: {exc}") from exc
