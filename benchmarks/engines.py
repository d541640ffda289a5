"""Private Docker and Podman engines for a benchmark, as scripts/test.sh starts them,
with the faults a soak injects: dockerd SIGKILLed and started again, the Podman
service frozen and thawed. Each engine has its own socket, storage and state
under one temporary directory, removed at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
IMAGE = "sandbox-exporter/busybox:local"
MANAGED = "sandbox-exporter.io/managed=true"


def _script(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/{name} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _pid(path: Path) -> int:
    return int(path.read_text().split()[0])


class PrivateEngines:
    """dockerd and a Podman API service, each with the probe image built in it."""

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="soak-engines-"))
        self.docker_dir = self.work / "docker"
        self.podman_dir = self.work / "podman"
        self.docker_url = _script("start-dockerd.sh", str(self.docker_dir))
        try:
            self.podman_url = _script("start-podman.sh", str(self.podman_dir))
            self.podman_env = {
                **os.environ,
                "CONTAINERS_CONF": str(self.podman_dir / "containers.conf"),
            }
            exporter = [sys.executable, "-m", "sandbox_exporter"]
            for variable, url, backend in (
                ("DOCKER_HOST", self.docker_url, "docker"),
                ("CONTAINER_HOST", self.podman_url, "podman"),
            ):
                subprocess.run(
                    [*exporter, "image", "build", "-b", backend],
                    check=True,
                    cwd=ROOT,
                    env={**self.podman_env, variable: url},
                    capture_output=True,
                )
        except BaseException:
            self.stop()
            raise

    @property
    def dockerd_pid(self) -> int:
        return _pid(self.docker_dir / "docker.pid")

    @property
    def podman_pid(self) -> int:
        return _pid(self.podman_dir / "podman.pid")

    def kill_dockerd(self) -> None:
        os.kill(self.dockerd_pid, signal.SIGKILL)

    def start_dockerd(self) -> float:
        """Start dockerd again on the same directories; seconds until it answers."""
        began = time.monotonic()
        _script("start-dockerd.sh", str(self.docker_dir))
        return time.monotonic() - began

    def freeze_podman(self) -> None:
        os.kill(self.podman_pid, signal.SIGSTOP)

    def thaw_podman(self) -> None:
        os.kill(self.podman_pid, signal.SIGCONT)

    def managed(self) -> dict[str, list[str]]:
        """The exporter's containers on each engine (its label), by engine."""
        import docker

        found: dict[str, list[str]] = {}
        for engine, url in (("docker", self.docker_url), ("podman", self.podman_url)):
            client: Any = docker.DockerClient(base_url=url, timeout=30)
            try:
                containers = client.containers.list(all=True, filters={"label": MANAGED})
                found[engine] = [c.name for c in containers]
            finally:
                client.close()
        return found

    def stop(self) -> None:
        if self.podman_dir.exists():
            subprocess.run(
                ["bash", str(ROOT / "scripts/stop-podman.sh"), str(self.podman_dir)],
                capture_output=True,
                check=False,
            )
        if self.docker_dir.exists():
            subprocess.run(
                ["bash", str(ROOT / "scripts/stop-dockerd.sh"), str(self.docker_dir)],
                capture_output=True,
                check=False,
            )
        subprocess.run(["rm", "-rf", str(self.work)], check=False)
