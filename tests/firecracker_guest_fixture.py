"""The Firecracker guest image (scripts/build-firecracker-guest.sh), built once per session.

The build needs root on Debian (apt-get, dpkg-deb, mknod); elsewhere the fixture skips.
Outputs go to SANDBOX_EXPORTER_FIRECRACKER_GUEST_DIR (default .cache/firecracker-guest) and
are reused while they are newer than the script and every file under guest/.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-firecracker-guest.sh"
GUEST_DIR = ROOT / "guest"
IMAGE_DIR = Path(
    os.environ.get("SANDBOX_EXPORTER_FIRECRACKER_GUEST_DIR", ROOT / ".cache" / "firecracker-guest")
).absolute()


@dataclass(frozen=True)
class FirecrackerGuestImage:
    """What scripts/build-firecracker-guest.sh makes: absolute paths."""

    kernel: Path
    initrd: Path
    rootfs: Path
    target_yaml: Path


def _image(directory: Path) -> FirecrackerGuestImage:
    return FirecrackerGuestImage(
        directory / "vmlinux",
        directory / "initrd.cpio",
        directory / "rootfs.ext4",
        directory / "target.yaml",
    )


def _up_to_date(image: FirecrackerGuestImage) -> bool:
    outputs = [image.kernel, image.initrd, image.rootfs, image.target_yaml]
    if not all(path.is_file() for path in outputs):
        return False
    inputs = [BUILD_SCRIPT, *(path for path in GUEST_DIR.rglob("*") if path.is_file())]
    return min(p.stat().st_mtime for p in outputs) > max(p.stat().st_mtime for p in inputs)


def build_guest_image(directory: Path = IMAGE_DIR) -> FirecrackerGuestImage:
    """The image in `directory`, built unless it is up to date (one builder at a time)."""
    image = _image(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _up_to_date(image):
            built = subprocess.run(
                ["bash", str(BUILD_SCRIPT), str(directory)],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if built.returncode != 0:
                pytest.fail(
                    f"{BUILD_SCRIPT.name} failed ({built.returncode}):\n"
                    f"{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
                )
    return image


@pytest.fixture(scope="session")
def firecracker_guest_image() -> FirecrackerGuestImage:
    if os.geteuid() != 0 or not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        pytest.skip("building the Firecracker guest needs root on Debian (apt-get, dpkg-deb)")
    return build_guest_image()
