"""The exporter's image (Dockerfile), as scripts/build-image.sh builds it: a smoke test
on the real Docker engine. scripts/test.sh builds it; elsewhere the tests skip."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_IMAGE, Engine, unavailable
from tests.helpers import scraped, wait_for
from tests.test_dashboard_and_rules import free_port

pytestmark = pytest.mark.docker

IMAGE = os.environ.get("SANDBOX_EXPORTER_TEST_EXPORTER_IMAGE", "sandbox-exporter:test")
UID = 10001
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # what build-image.sh gives pip
MB = 1_000_000


@pytest.fixture(scope="module")
def image(docker_engine: Engine) -> Any:
    docker = pytest.importorskip("docker")
    try:
        return docker_engine.client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        unavailable("image", f"the exporter's image {IMAGE} is missing (scripts/build-image.sh)")


def run(engine: Engine, *command: str, **options: Any) -> tuple[int, str]:
    container = engine.client.containers.run(IMAGE, list(command), detach=True, **options)
    try:
        status = container.wait(timeout=60)["StatusCode"]
        return status, container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)


def test_the_image_is_small_and_runs_as_a_numeric_non_root_user(image: Any) -> None:
    config = image.attrs["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["sandbox-exporter"]
    assert config["Cmd"] == ["run"]
    assert "9878/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][-1] == "sandbox_exporter.web.healthcheck"
    print(f"\nimage {IMAGE}: {image.attrs['Size'] / MB:.1f} MB")
    assert image.attrs["Size"] < 200 * MB


def test_help_and_check_config_on_a_mounted_config(
    image: Any, docker_engine: Engine, tmp_path: Path
) -> None:
    status, out = run(docker_engine, "--help")
    assert status == 0
    assert "usage: sandbox-exporter" in out
    good = tmp_path / "good.yaml"
    good.write_text("targets:\n  - {name: local, backend: docker}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: docker\n")
    for path in (good, bad):
        path.chmod(0o644)  # the image's user reads it
    mount = {"type": "bind", "read_only": True}
    status, out = run(
        docker_engine,
        "check-config",
        "--config.file",
        "/etc/sandbox-exporter.yaml",
        mounts=[{**mount, "source": str(good), "target": "/etc/sandbox-exporter.yaml"}],
    )
    assert (status, "local: backend docker" in out) == (0, True), out
    status, out = run(
        docker_engine,
        "check-config",
        "--config.file",
        "/etc/sandbox-exporter.yaml",
        mounts=[{**mount, "source": str(bad), "target": "/etc/sandbox-exporter.yaml"}],
    )
    assert status == 1
    assert "targets: expected a list of targets, or `auto`" in out


IMPORT_EVERY_SDK = """
import importlib, importlib.metadata as md, re, sys
extras = set(sys.argv[1].split(","))
def name(dist): return re.sub(r"[-_.]+", "-", dist).lower()
wanted = set()
for requirement in md.requires("sandbox-exporter") or []:
    marker = re.search(r'extra == "([^"]+)"', requirement)
    if marker and marker.group(1) in extras:
        wanted.add(name(re.split(r"[ ;<>=!~\\[]", requirement, maxsplit=1)[0]))
missing = sorted(wanted - {name(d.metadata["Name"]) for d in md.distributions()})
imported, failed = [], []
for module, dists in sorted(md.packages_distributions().items()):
    if module.startswith("_") or not wanted & {name(d) for d in dists}:
        continue
    try:
        importlib.import_module(module)
        imported.append(module)
    except Exception as exc:
        failed.append(f"{module}: {type(exc).__name__}: {exc}")
print("wanted", sorted(wanted))
print("imported", imported)
print("missing", missing)
print("failed", failed)
sys.exit(1 if missing or failed else 0)
"""


def extras(stage: str) -> set[str]:
    """The extras of sandbox-exporter a line of the Dockerfile names (its build or its
    final stage)."""
    dockerfile = (Path(__file__).parent.parent / "Dockerfile").read_text()
    named = re.findall(r'"(?:\.|sandbox-exporter)\[([a-z,]+)\]"', dockerfile)
    assert len(named) == 2, named
    return set(named[0 if stage == "build" else 1].split(","))


def test_the_image_installs_every_extra_it_builds_and_each_sdk_imports(
    image: Any, docker_engine: Engine
) -> None:
    """The final stage once installed fewer extras than the build stage made wheels for:
    a Firecracker target in the image said its package was not installed."""
    assert extras("final") == extras("build")
    status, out = run(
        docker_engine,
        "-c",
        IMPORT_EVERY_SDK,
        ",".join(sorted(extras("final"))),
        entrypoint="python3",
    )
    assert status == 0, out
    assert "httpcore" in out.split("imported", 1)[1].split("\n")[0], out


def test_the_build_secret_is_in_no_file_of_the_image(image: Any, docker_engine: Engine) -> None:
    """pip's CA bundle was a build secret: no file of the image holds its bytes, except
    the base image's own bundle when the two are the same file."""
    if not CA_BUNDLE.is_file():
        pytest.skip(f"{CA_BUNDLE} is not here, so none was given to the build")
    secret = CA_BUNDLE.read_bytes()
    script = (
        "import hashlib, os, sys\n"
        "size, digest = int(sys.argv[1]), sys.argv[2]\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    dirs[:] = [d for d in dirs if root + d not in ('/proc', '/sys', '/dev')]\n"
        "    for f in files:\n"
        "        p = os.path.join(root, f)\n"
        "        try:\n"
        "            if not os.path.islink(p) and os.path.getsize(p) == size and \\\n"
        "                    hashlib.sha256(open(p, 'rb').read()).hexdigest() == digest:\n"
        "                print(p)\n"
        "        except OSError:\n"
        "            pass\n"
    )
    status, out = run(
        docker_engine,
        "-c",
        script,
        str(len(secret)),
        hashlib.sha256(secret).hexdigest(),
        entrypoint="python3",
        user="0",
    )
    assert status == 0, out
    assert set(out.split()) <= {str(CA_BUNDLE)}, out


@pytest.fixture
def exporter(image: Any, docker_engine: Engine, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    socket_path = docker_engine.url.removeprefix("unix://")
    config = tmp_path / "config.yaml"
    config.write_text(
        "instance: image-test\n"
        "defaults: {interval: 2s, jitter: 0s, image: " + TEST_IMAGE + ", pull_policy: never}\n"
        "targets:\n  - {name: docker, backend: docker}\n"  # the default socket: mounted there
    )
    config.chmod(0o644)
    address = f"127.0.0.1:{free_port()}"
    container = docker_engine.client.containers.run(
        IMAGE,
        ["run", "--config.file", "/etc/sandbox-exporter.yaml", "--shutdown.timeout", "50s"],
        environment={"SANDBOX_EXPORTER_WEB_LISTEN_ADDRESS": address},  # the healthcheck reads it
        detach=True,
        network_mode="host",
        group_add=[str(os.stat(socket_path).st_gid)],  # the socket's group, as the README says
        mounts=[
            {"type": "bind", "source": socket_path, "target": "/var/run/docker.sock"},
            {
                "type": "bind",
                "source": str(config),
                "target": "/etc/sandbox-exporter.yaml",
                "read_only": True,
            },
        ],
        # the image's HEALTHCHECK, every second instead of every 30 s
        healthcheck={"interval": 1_000_000_000, "timeout": 5_000_000_000, "retries": 3},
    )
    try:
        yield container, f"http://{address}"
    finally:
        container.remove(force=True)


def test_run_with_the_engine_socket_records_a_docker_lifecycle_and_stops_clean(
    exporter: tuple[Any, str], docker_engine: Engine
) -> None:
    container, url = exporter

    def successes() -> float | None:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        return scraped(
            text, "sandbox_probes_total", target="docker", backend="docker", result="success"
        )

    wait_for(
        lambda: (successes() or 0) >= 1,
        timeout=90,
        what=f"a successful Docker lifecycle on /metrics; logs: {container.logs()[-2000:]!r}",
    )
    container.reload()
    pid = container.attrs["State"]["Pid"]
    uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
    assert uids == [str(UID)] * 4, "the exporter runs as the image's non-root uid"

    def health() -> str | None:
        container.reload()
        status: str | None = container.attrs["State"].get("Health", {}).get("Status")
        return status if status == "healthy" else None

    wait_for(health, timeout=30, what="the image's HEALTHCHECK to pass")

    container.stop(timeout=60)  # SIGTERM, then SIGKILL after 60 s
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs()[-2000:]
    assert not docker_engine.managed(**{"sandbox-exporter.io/instance": "image-test"})


def test_init_in_the_container_finds_the_mounted_engine_and_says_why_not_namespaces(
    image: Any, docker_engine: Engine
) -> None:
    socket_path = docker_engine.url.removeprefix("unix://")
    status, out = run(
        docker_engine,
        "init",
        group_add=[str(os.stat(socket_path).st_gid)],
        mounts=[{"type": "bind", "source": socket_path, "target": "/var/run/docker.sock"}],
    )
    assert status == 0, out
    assert "docker: {base_url: 'unix:///var/run/docker.sock'}" in out
    assert "# namespace: namespaces cannot be made here (unshare: " in out, out
