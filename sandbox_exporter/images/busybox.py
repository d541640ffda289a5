"""The probe image `sandbox-exporter/busybox:local`, made from the host's static busybox.

The default image (busybox from Docker Hub) needs a registry; offline, or behind a
registry that does not mirror it, every probe fails at `pull`. This builds the same
thing from what Debian's `busybox-static` (or any static busybox) installs: a root
filesystem with busybox, its applets as symlinks, and the `nobody` user the probes run
as, as an uncompressed tar that an engine imports (`docker import`, by its API).
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

LOCAL_IMAGE = "sandbox-exporter/busybox:local"
IMAGE_PATH = "/usr/local/bin:/usr/bin:/bin"
_PT_INTERP = 3  # an ELF program header naming a dynamic loader


class ImageBuildError(Exception):
    """The image cannot be made here; the message says what to do."""


def find_static_busybox(path: str | None = None) -> Path:
    """`path`, else busybox on PATH; a static executable, or ImageBuildError saying why."""
    found = path or shutil.which("busybox")
    if found is None:
        raise ImageBuildError(
            "no busybox on PATH: install a static one (Debian, Ubuntu: apt-get install "
            "busybox-static) or name one with --busybox PATH"
        )
    binary = Path(found)
    if not binary.is_file():
        raise ImageBuildError(f"--busybox: {binary} is not a file")
    if not is_static_elf(binary.read_bytes()):
        raise ImageBuildError(
            f"{binary} is not a static executable; the image has no libraries for it: "
            "install busybox-static, or name a static busybox with --busybox PATH"
        )
    return binary


def is_static_elf(data: bytes) -> bool:
    """A 64-bit little-endian ELF executable with no dynamic loader (no PT_INTERP)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for index in range(phnum):
        (kind,) = struct.unpack_from("<I", data, phoff + index * phentsize)
        if kind == _PT_INTERP:
            return False
    return True


def busybox_rootfs(busybox: Path) -> bytes:
    """The image's root filesystem as an uncompressed tar."""
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for directory, mode in (
            ("bin", 0o755),
            ("etc", 0o755),
            ("tmp", 0o1777),
            ("proc", 0o555),
            ("sys", 0o555),
            ("dev", 0o755),
        ):
            entry = tarfile.TarInfo(directory)
            entry.type, entry.mode = tarfile.DIRTYPE, mode
            tar.addfile(entry)
        _add_file(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
        _add_file(tar, "etc/passwd", passwd)
        _add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buffer.getvalue()


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    entry = tarfile.TarInfo(name)
    entry.size, entry.mode = len(data), mode
    tar.addfile(entry, io.BytesIO(data))
