"""The namespace backend, for real: unshare and nsenter on this kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.backends.base import SandboxSpec
from exporter.backends.namespace import NamespaceBackend
from exporter.lifecycle import LIFECYCLE, LifecycleRunner
from exporter.metrics import Metrics
from exporter.prober import Prober
from tests.helpers import make_target

pytestmark = pytest.mark.namespace


@pytest.fixture(autouse=True)
def _needs_namespaces(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux") or not shutil.which("unshare"):
        pytest.skip("needs Linux and util-linux unshare")
    probe = subprocess.run(
        ["unshare", "--fork", "--pid", "--mount-proc", "--mount", "--net",
         *([] if os.geteuid() == 0 else ["--user", "--map-root-user"]), "true"],
        capture_output=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"namespaces not permitted here: {probe.stderr.decode().strip()}")


def spec(name: str) -> SandboxSpec:
    return SandboxSpec(
        name=name,
        image="",
        labels={
            "sandbox-exporter.io/managed": "true",
            "sandbox-exporter.io/target": "fake",
            "sandbox-exporter.io/instance": "test-instance",
            "sandbox-exporter.io/created-at": "1",
        },
        cpus=1,
        memory_mb=64,
        pids_limit=64,
    )


def test_a_full_lifecycle_is_recorded(tmp_path: Path) -> None:
    target = make_target(namespace={"state_dir": str(tmp_path)})
    registry = CollectorRegistry()
    prober = Prober(target, "test-instance", Metrics(registry), stopping=threading.Event())
    result = prober.run()
    prober.close()
    assert result is not None
    assert result.success, result.failure
    assert set(result.durations) == set(LIFECYCLE)
    labels = {"target": "fake", "backend": "namespace"}
    assert registry.get_sample_value("sandbox_probes_total", {**labels, "result": "success"}) == 1
    assert registry.get_sample_value("sandbox_time_to_exec_seconds_count", labels) == 1
    assert list(tmp_path.iterdir()) == [], "nothing left in the state directory"


def test_the_command_runs_inside_new_namespaces(tmp_path: Path) -> None:
    backend = NamespaceBackend(make_target(namespace={"state_dir": str(tmp_path)}))
    name = "sandbox-exporter-fake-isolation"
    backend.create(spec(name))
    try:
        backend.start(name)
        answer = backend.exec(
            name, ["sh", "-c", "echo $$; cat /proc/sys/kernel/hostname; tail -n +3 /proc/net/dev"]
        )
        init_pid = backend._get(name).init_pid
        backend.stop(name, grace_seconds=5)
    finally:
        backend.remove(name)
    pid, hostname, *rest = answer.output.splitlines()
    assert answer.exit_code == 0
    assert int(pid) < 10, "a fresh pid namespace"
    assert hostname == name, "its own UTS namespace"
    assert [line.split(":")[0].strip() for line in rest if ":" in line] == ["lo"], (
        "no network but loopback"
    )
    assert not Path(f"/proc/{init_pid}").exists(), "the init exited on SIGTERM"
    assert not (tmp_path / name).exists()


def test_exec_mismatch_is_caught(tmp_path: Path) -> None:
    target = make_target(namespace={"state_dir": str(tmp_path)}, command=["sh", "-c", "echo bye"])
    backend = NamespaceBackend(target)
    result = LifecycleRunner(backend, target, "test-instance").run()
    assert result.failure is not None
    assert result.failure.reason == "exec_mismatch"
    assert list(tmp_path.iterdir()) == []


def test_a_sandbox_left_by_a_killed_exporter_is_found_and_removed(tmp_path: Path) -> None:
    target = make_target(namespace={"state_dir": str(tmp_path)})
    earlier = NamespaceBackend(target)
    name = "sandbox-exporter-fake-orphan"
    earlier.create(spec(name))
    earlier.start(name)
    init_pid = earlier._get(name).init_pid
    # a new process of the exporter knows nothing of `earlier`'s state
    later = NamespaceBackend(target)
    orphans = later.list_managed("test-instance", "fake")
    assert [o.name for o in orphans] == [name]
    assert later.list_managed("someone-else", "fake") == []
    later.remove(name)
    earlier._running[name].unshare.wait(timeout=10)
    assert not Path(f"/proc/{init_pid}").exists()
    assert not (tmp_path / name).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_an_unprivileged_user_runs_it_through_a_user_namespace(tmp_path: Path) -> None:
    if not shutil.which("setpriv"):
        pytest.skip("needs util-linux setpriv")
    home = Path(tempfile.mkdtemp(prefix="sandbox-exporter-test-"))
    home.chmod(0o777)
    try:
        run_as_nobody(home)
    finally:
        shutil.rmtree(home)


def run_as_nobody(tmp_path: Path) -> None:
    script = (
        "from exporter.lifecycle import LifecycleRunner\n"
        "from exporter.backends.namespace import NamespaceBackend\n"
        "from tests.helpers import make_target\n"
        f"t = make_target(namespace={{'state_dir': '{tmp_path}/state'}})\n"
        "r = LifecycleRunner(NamespaceBackend(t), t, 'i').run()\n"
        "print('OK' if r.success else r.failure)\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent, check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    if "Operation not permitted" in done.stdout + done.stderr and "unshare" in done.stdout:
        pytest.skip(f"unprivileged user namespaces are disabled here: {done.stdout.strip()}")
    assert done.stdout.strip().endswith("OK"), done.stdout + done.stderr
