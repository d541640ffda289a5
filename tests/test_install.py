"""The new user's path: the wheel, installed into an empty venv, works on its own.

Builds the wheel (pip's build isolation fetches setuptools from PyPI) and installs
it with its dependencies into a fresh virtualenv, outside the source tree: nothing
of the checkout is on the path. About 30 s on a warm pip cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done


def test_a_wheel_in_an_empty_venv_gives_a_working_first_hour(tmp_path: Path) -> None:
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-w",
        tmp_path / "dist",
        ROOT,
        cwd=tmp_path,
    )
    assert "deprecat" not in (built.stdout + built.stderr).lower(), built.stderr
    (wheel,) = (tmp_path / "dist").glob("sandbox_exporter-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "sandbox_exporter",
        "exporter",
    }, "no other top-level package"

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "pip", "install", "-q", wheel, cwd=tmp_path)
    exe = venv / "bin" / "sandbox-exporter"
    assert "init" in run(exe, "--help", cwd=tmp_path).stdout
    starter = run(exe, "init", "-b", "namespace", "-o", "first.yaml", cwd=tmp_path)
    assert "wrote first.yaml" in starter.stderr
    checked = run(exe, "check-config", "--config.file", "first.yaml", cwd=tmp_path)
    assert "namespace: backend namespace" in checked.stdout
    modeline = (tmp_path / "first.yaml").read_text().splitlines()[0]
    schema = Path(modeline.removeprefix("# yaml-language-server: $schema="))
    assert schema.is_relative_to(venv), f"{modeline}: not the copy installed with the wheel"
    shipped = ROOT / "sandbox_exporter" / "config" / "sandbox-exporter.schema.json"
    assert schema.read_text() == shipped.read_text()
    assert run(exe, "config", "schema", cwd=tmp_path).stdout == shipped.read_text()
    old_name = run(venv / "bin" / "python", "-m", "exporter", "--version", cwd=tmp_path)
    assert old_name.stdout.startswith("sandbox-exporter ")
    assert "`python -m exporter` is deprecated" in old_name.stderr
