"""A Firecracker target's options: the VMM, the guest's files, how VMs start, the jailer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sandbox_exporter.backends.base import BackendOptions
from sandbox_exporter.config.settings import PhaseDuration, StrictModel

DEFAULT_BOOT_ARGS = (
    "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd quiet"
)


class JailerOptions(StrictModel):
    binary: str = Field("jailer", min_length=1)
    """The jailer: a name looked up on PATH, or a path."""
    uid: int = Field(ge=0)
    """The uid the jailed VMM runs as."""
    gid: int = Field(ge=0)
    """The gid the jailed VMM runs as."""
    chroot_base: str = Field("/srv/jailer", min_length=1)
    """The directory the jailer builds each VM's chroot under."""


class FirecrackerOptions(BackendOptions):
    binary: str = Field("firecracker", min_length=1)
    """The `firecracker` VMM: a name looked up on PATH, or a path."""
    kernel: str = Field(min_length=1)
    """The guest kernel: an uncompressed ELF vmlinux."""
    initrd: str | None = None
    """An initrd for the guest; null: none."""
    rootfs: str = Field(min_length=1)
    """The root drive: an ext4 image holding the guest (docs/backends/firecracker-guest.md)."""
    rootfs_mode: Literal["read_only", "copy"] = "read_only"
    """`read_only`: every VM shares the image read-only; `copy`: each VM gets its own copy."""
    boot_args: str = DEFAULT_BOOT_ARGS
    """The guest kernel's command line."""
    guest_cid: int = Field(3, ge=3, lt=2**32 - 1)
    """The guest's vsock context id."""
    guest_port: int = Field(52, ge=1, lt=2**32 - 1)
    """The vsock port the guest's listener accepts commands on."""
    start_mode: Literal["boot", "snapshot"] = "boot"
    """`boot` each VM, or restore it from a `snapshot` taken once."""
    vsock_attempt: PhaseDuration = 1.0
    """How long one vsock CONNECT may wait for the guest's OK before it is tried again."""
    state_dir: str | None = None
    """Where each VM's socket, logs and files are kept; null: a directory under /run."""
    jailer: JailerOptions | None = None
    """Run each VMM under Firecracker's jailer; null: unjailed."""

    @model_validator(mode="after")
    def _jailed_snapshots(self) -> FirecrackerOptions:
        if self.jailer is not None and self.start_mode == "snapshot":
            raise ValueError("start_mode: snapshot cannot be used with jailer (not supported yet)")
        return self
