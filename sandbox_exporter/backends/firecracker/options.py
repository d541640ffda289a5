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
