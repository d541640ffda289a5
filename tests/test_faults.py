"""Faults on a real dockerd of the tests' own, which they stop, kill (SIGKILL), freeze
(SIGSTOP), fill up and make read-only: what the metrics and logs say, that /metrics
keeps answering, and that no managed container is left once the engine is back.

One dockerd serves the whole module (starting one, with its image, costs seconds):
each test finds it running and answering, and leaves no container of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sandbox_exporter.backends.base import Deadline, SandboxRef, SandboxSpec
from sandbox_exporter.backends.docker import DockerBackend, DockerOptions, ping_unix_socket
from sandbox_exporter.config import Config, Settings, Target, parse_config
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.results import Phase, Reason
from tests.conftest import TEST_IMAGE, unavailable
from tests.engine_proxy import KillingProxy
from tests.fakes import by_name
from tests.helpers import alive, wait_for
from tests.test_server import call

ROOT = Path(__file__).parent.parent
PHASES = ("pull", "create", "start", "exec", "stop", "remove")


class PrivateDockerd:
    """A dockerd of the tests' own, which a test may stop, kill, freeze and restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = self.start()
        env = {**os.environ, "DOCKER_HOST": self.url}
        subprocess.run(
            [sys.executable, "-m", "sandbox_exporter", "image", "build", "-b", "docker"],
            env=env,
            check=True,
            capture_output=True,
        )
        # a clean stop writes the image store out: a SIGKILL seconds after an import
        # can otherwise lose the image, which is not the fault under test
        self.stop()
        self.start()

    def start(self) -> str:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "start-dockerd.sh"), str(self.directory)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    @property
    def pid(self) -> int:
        return int((self.directory / "docker.pid").read_text())

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self) -> None:
        pid = self.pid
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), timeout=60, what="dockerd to exit")

    def answers(self) -> bool:
        return ping_unix_socket(self.url.removeprefix("unix://")) is None

    def ready(self) -> None:
        """Running and answering, as each test expects to find it."""
        with contextlib.suppress(OSError, ValueError):
            self.signal(signal.SIGCONT)
        if not self.answers():
            self.start()

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.url)

    def managed(self, instance: str) -> list[Any]:
        client = self.client()
        try:
            return list(
                client.containers.list(
                    all=True, filters={"label": f"sandbox-exporter.io/instance={instance}"}
                )
            )
        finally:
            client.close()


@pytest.fixture(scope="module")
def shared_dockerd(docker_engine: Any) -> Iterator[PrivateDockerd]:
    if os.geteuid() != 0:
        unavailable("docker", "a private dockerd needs root")
    # short: containerd's sockets live below it, and a socket path has 108 bytes at most
    directory = Path(tempfile.mkdtemp(prefix="sxf-", dir="/tmp"))
    engine = PrivateDockerd(directory)
    yield engine
    with contextlib.suppress(OSError, ValueError):
        engine.signal(signal.SIGCONT)
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "stop-dockerd.sh"), str(engine.directory)],
        check=False,
        capture_output=True,
    )


@pytest.fixture
def dockerd(shared_dockerd: PrivateDockerd) -> PrivateDockerd:
    shared_dockerd.ready()
    return shared_dockerd


@contextlib.contextmanager
def mounted_over(directory: Path, *options: str) -> Iterator[None]:
    """A filesystem of its own over `directory` while inside (a tmpfs of `size=`, or
    the directory itself bound read-only)."""
    if "bind" in options:
        subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
        subprocess.run(["mount", "-o", ",".join(("remount", *options)), str(directory)], check=True)
    else:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(directory)], check=True
        )
    try:
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def target(url: str, timeout: str = "3s") -> Target:
    """Each phase bounded by `timeout` (short: faults make calls wait for it)."""
    config = parse_config(
        {
            "instance": "fault-test",
            "targets": [
                {
                    "name": "faulty",
                    "backend": "docker",
                    "image": TEST_IMAGE,
                    "pull_policy": "never",
                    "interval": "1s",
                    "jitter": "0s",
                    "timeouts": dict.fromkeys(PHASES, timeout),
                    "stop_grace": "500ms",
                    "max_age": "30s",
                    "docker": {"base_url": url},
                }
            ],
        }
    )
    return config.targets[0]


def sample(d: Daemon, name: str, **labels: str) -> float:
    return (
        d.registry.get_sample_value(name, {"target": "faulty", "backend": "docker", **labels})
        or 0.0
    )


def daemon(t: Target, backend: Any = None) -> Daemon:
    config = Config(instance="fault-test", defaults=Settings(), targets=(t,))
    return Daemon(
        config, listen_address=None, backends=by_name({"faulty": backend}) if backend else None
    )


def failed_once(d: Daemon, phase: Phase, words: str) -> None:
    """One run fails in `phase` with reason error, the engine's `words` in its result
    and its log line; and counted."""
    with capture_logs() as logs:
        result = d.probers[0].run()
    d.shutdown()
    assert result is not None
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (phase, Reason.ERROR)
    assert words in result.failure.message
    assert any(words in str(e.get("error")) for e in logs)
    assert sample(d, "sandbox_probe_failures_total", phase=str(phase), reason="error") == 1


def test_engine_stopped_between_probes_then_back(dockerd: PrivateDockerd) -> None:
    d = daemon(target(dockerd.url))
    d.start()
    try:
        wait_for(lambda: sample(d, "sandbox_probes_total", result="success") >= 1, what="a success")
        dockerd.stop()
        wait_for(
            lambda: (
                sample(d, "sandbox_probe_failures_total", phase="create", reason="unavailable") >= 2
            ),
            timeout=30,
            what="failures",
        )
        assert sample(d, "sandbox_backend_up") == 0
        assert call(d.app, "/metrics")[0].startswith("200"), "/metrics keeps answering"
        before = sample(d, "sandbox_probes_total", result="success")
        dockerd.start()
        wait_for(
            lambda: sample(d, "sandbox_probes_total", result="success") > before,
            timeout=60,
            what="recovery without a restart",
        )
        assert sample(d, "sandbox_backend_up") == 1
    finally:
        d.shutdown()
    assert dockerd.managed("fault-test") == []


class Sabotaged(DockerBackend):
    """The real Docker backend; on the first call of one phase it signals dockerd first."""

    def __init__(self, t: Target, engine: PrivateDockerd, phase: str, signum: int) -> None:
        assert isinstance(t.options, DockerOptions)
        super().__init__(t.options, t.timeouts)
        self.dockerd = engine
        self.phase = phase
        self.signum = signum
        self.done = threading.Event()

    def _strike(self, phase: str) -> None:
        if phase == self.phase and not self.done.is_set():
            self.done.set()
            self.dockerd.signal(self.signum)
            if self.signum == signal.SIGKILL:
                wait_for(lambda: not alive(self.dockerd.pid), what="dockerd dead")

    def create(self, spec: SandboxSpec, deadline: Deadline) -> SandboxRef:
        self._strike("create")
        return super().create(spec, deadline)

    def start(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        self._strike("start")
        super().start(sandbox, deadline)

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> Any:
        self._strike("exec")
        return super().exec(sandbox, command, deadline)

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        self._strike("stop")
        super().stop(sandbox, grace_seconds, deadline)

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        self._strike("remove")
        super().remove(sandbox, deadline)


@pytest.mark.parametrize("phase", ["create", "start", "exec", "stop", "remove"])
def test_engine_killed_in_each_phase(dockerd: PrivateDockerd, phase: str) -> None:
    t = target(dockerd.url)
    d = daemon(t, Sabotaged(t, dockerd, phase, signal.SIGKILL))
    prober = d.probers[0]
    try:
        result = prober.run()
        assert result is not None
        assert result.failure is not None
        assert result.failure.phase == Phase(phase)
        assert result.failure.reason == Reason.UNAVAILABLE
        assert sample(d, "sandbox_probe_failures_total", phase=phase, reason="unavailable") == 1
        assert sample(d, "sandbox_backend_up") == 0
        dockerd.start()
        again = prober.run()  # first retries the removal that failed, then probes
        assert again is not None
        assert again.success, again.failure
    finally:
        d.shutdown()
    assert dockerd.managed("fault-test") == [], "the half-made container is gone"


@pytest.mark.parametrize("phase", ["create", "start", "exec", "stop", "remove"])
def test_engine_killed_mid_phase_before_it_answers(dockerd: PrivateDockerd, phase: str) -> None:
    """The engine has the phase's request and has done its work (a container made,
    started, stopped, removed...) and dies as it starts to answer: the exporter is
    never told, and must still clean up whatever now exists."""

    def kill() -> None:
        dockerd.signal(signal.SIGKILL)
        wait_for(lambda: not alive(dockerd.pid), what="dockerd dead")

    proxy = KillingProxy(
        dockerd.directory / "proxy.sock", Path(dockerd.url.removeprefix("unix://")), kill
    )
    d = daemon(target(proxy.url))
    prober = d.probers[0]
    try:
        proxy.arm(phase)
        result = prober.run()
        assert proxy.struck.is_set(), "the engine died before answering"
        assert result is not None
        assert result.failure is not None
        assert (result.failure.phase, result.failure.reason) == (Phase(phase), Reason.UNAVAILABLE)
        assert sample(d, "sandbox_probe_failures_total", phase=phase, reason="unavailable") == 1
        assert sample(d, "sandbox_backend_up") == 0
        dockerd.start()
        # the work was done: a container exists that the exporter was never told of
        # (or, killed answering the remove, it is already gone)
        assert len(dockerd.managed("fault-test")) == (0 if phase == "remove" else 1)
        again = prober.run()  # first retries the removal that failed, then probes
        assert again is not None
        assert again.success, again.failure
        assert sample(d, "sandbox_orphans_removed_total") == (0 if phase == "remove" else 1)
    finally:
        d.shutdown()
        proxy.close()
    assert dockerd.managed("fault-test") == [], "whatever the engine made is gone"


def test_engine_frozen_mid_phase(dockerd: PrivateDockerd) -> None:
    t = target(dockerd.url, "1500ms")  # every call to the frozen engine waits this long
    d = daemon(t, Sabotaged(t, dockerd, "start", signal.SIGSTOP))
    threads_before = threading.active_count()
    fds_before = len(os.listdir("/proc/self/fd"))
    peak = {"threads": 0, "fds": 0}

    def watch() -> bool:
        peak["threads"] = max(peak["threads"], threading.active_count())
        peak["fds"] = max(peak["fds"], len(os.listdir("/proc/self/fd")))
        return (
            sample(d, "sandbox_probe_skipped_total") >= 3
            and sample(d, "sandbox_probe_failures_total", phase="create", reason="unavailable") >= 2
        )

    d.start()
    try:
        wait_for(
            lambda: sample(d, "sandbox_probe_failures_total", phase="start", reason="timeout") == 1,
            timeout=30,
            what="the start phase timing out",
        )
        wait_for(watch, timeout=60, what="several intervals frozen")
        assert peak["threads"] <= threads_before + 15, peak
        assert peak["fds"] <= fds_before + 30, peak
        assert call(d.app, "/metrics")[0].startswith("200")
        dockerd.signal(signal.SIGCONT)
        before = sample(d, "sandbox_probes_total", result="success")
        wait_for(
            lambda: sample(d, "sandbox_probes_total", result="success") > before,
            timeout=60,
            what="recovery after SIGCONT",
        )
    finally:
        dockerd.signal(signal.SIGCONT)
        d.shutdown()
    wait_for(lambda: dockerd.managed("fault-test") == [], timeout=30, what="everything cleaned up")


def test_a_full_disk_on_the_engine_is_a_failure_with_the_engines_message(
    dockerd: PrivateDockerd,
) -> None:
    # where the engine writes each new container, on a small filesystem, filled up
    containers = dockerd.directory / "data" / "containers"
    with mounted_over(containers, "size=1m"):
        free = os.statvfs(containers)
        with (containers / "filler").open("wb") as filler, contextlib.suppress(OSError):
            filler.write(bytes(free.f_bavail * free.f_frsize + (1 << 20)))
        failed_once(daemon(target(dockerd.url)), Phase.CREATE, "no space left on device")
    assert dockerd.managed("fault-test") == []


def test_a_read_only_engine_store_is_a_failure_with_the_engines_message(
    dockerd: PrivateDockerd,
) -> None:
    # where the engine keeps its containers, made read-only under it (the rest of its
    # store is busy: it cannot be remounted read-only as a whole)
    containers = dockerd.directory / "data" / "containers"
    with mounted_over(containers, "bind", "ro"):
        failed_once(daemon(target(dockerd.url)), Phase.CREATE, "read-only file system")
    assert dockerd.managed("fault-test") == []


def test_a_permission_error_in_the_engine_is_a_failure_with_the_engines_message(
    docker_base_url: str, docker_client: Any
) -> None:
    """The OCI runtime is refused (EACCES) starting the sandbox's process."""
    t = target(docker_base_url).model_copy(
        update={"docker": DockerOptions(base_url=docker_base_url, keepalive=("/etc/passwd",))}
    )
    failed_once(daemon(t), Phase.START, "permission denied")
    assert (
        docker_client.containers.list(
            all=True, filters={"label": "sandbox-exporter.io/instance=fault-test"}
        )
        == []
    )
