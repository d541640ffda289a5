"""`sandbox-exporter init`: a starter config for what this machine has, valid as written."""

from __future__ import annotations

from pathlib import Path

import yaml

from sandbox_exporter.backends.base import Found
from sandbox_exporter.backends.firecracker import find_here as find_firecracker
from sandbox_exporter.config import load_config
from tests.conftest import Engine
from tests.helpers import run_init


def test_what_is_found_is_a_target_with_its_address_the_rest_says_why(
    docker_engine: Engine, tmp_path: Path
) -> None:
    written = tmp_path / "sandbox-exporter.yaml"
    done = run_init(
        "--output",
        str(written),
        DOCKER_HOST=docker_engine.url,
        CONTAINER_HOST="unix:///nonexistent/podman.sock",
    )
    assert done.returncode == 0, done.stderr
    config = load_config(written, environ={})
    docker = config.target("docker")
    assert docker.options.base_url == docker_engine.url  # type: ignore[attr-defined]
    assert (docker.image, docker.pull_policy) == ("sandbox-exporter/busybox:local", "never"), (
        "the probe image built here is used when it is there"
    )
    text = written.read_text()
    assert (
        "# podman: Podman does not answer at unix:///nonexistent/podman.sock: no such socket"
        in text
    )
    assert "# kubernetes: not looked for" in text
    commented = [line[1:] for line in text.splitlines() if line.startswith("#  ")]
    uncommented = yaml.safe_load("\n".join(line for line in commented if line.startswith("  ")))
    vms = [] if isinstance(find_firecracker(), Found) else ["firecracker"]
    assert [t["backend"] for t in uncommented] == [
        "podman",
        "kubernetes",
        *vms,
        "nomad",
        "apple",
    ], "each block, uncommented, is a target"
    again = run_init("--output", str(written))
    assert again.returncode == 1
    assert "cannot create" in again.stderr, "an existing config is never overwritten"


def test_backends_narrows_it_and_nothing_found_is_exit_1() -> None:
    only = run_init("-b", "namespace")
    assert only.returncode == 0, only.stderr
    assert [t["backend"] for t in yaml.safe_load(only.stdout)["targets"]] == ["namespace"]
    nothing = run_init("-b", "podman", CONTAINER_HOST="unix:///nonexistent/podman.sock")
    assert nothing.returncode == 1
    assert yaml.safe_load(nothing.stdout)["targets"] == []
    assert run_init("-b", "lxc").returncode == 2
