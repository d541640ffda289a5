"""`sandbox-exporter image build` without an engine: what it refuses and why."""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from sandbox_exporter.cli import main
from sandbox_exporter.images.busybox import (
    ImageBuildError,
    busybox_rootfs,
    find_static_busybox,
    is_static_elf,
)


def test_a_dynamic_executable_is_refused_with_what_to_install() -> None:
    assert not is_static_elf(Path(sys.executable).resolve().read_bytes())
    with pytest.raises(ImageBuildError, match="install busybox-static"):
        find_static_busybox(str(Path(sys.executable).resolve()))


def test_no_busybox_on_path_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ImageBuildError, match="apt-get install busybox-static"):
        find_static_busybox()


def test_a_backend_without_images_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "build", "-b", "namespace"]) == 2
    assert "none of these backends takes images" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox-static")
def test_the_rootfs_holds_busybox_its_applets_and_nobody() -> None:
    busybox = find_static_busybox()
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs(busybox))) as tar:
        names = tar.getnames()
        assert tar.getmember("bin/sh").linkname == "busybox"
        assert tar.getmember("tmp").mode == 0o1777
        passwd = tar.extractfile("etc/passwd")
        assert passwd is not None
        assert b"nobody:x:65534:65534" in passwd.read()
    assert {"bin/busybox", "bin/echo", "bin/sleep", "etc/group"} <= set(names)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox-static")
def test_a_missing_sdk_is_a_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # as after a plain `pip install`
    monkeypatch.setitem(sys.modules, "docker.errors", None)
    assert main(["image", "build", "-b", "docker"]) == 1
    assert "docker: needs a package that is not installed (docker" in (capsys.readouterr().err)
