"""The namespace backend, for real: unshare and nsenter on this kernel: what is its
alone (isolation, an unprivileged user, its start and its memory). What every backend
does is in test_backend_contract.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sandbox_exporter.backends.base import Deadline, SandboxSpec
from sandbox_exporter.backends.namespace import NamespaceBackend, NamespaceOptions
from sandbox_exporter.config import Target
from sandbox_exporter.probing.calls import PhaseTimeout
from sandbox_exporter.probing.lifecycle import LifecycleRunner
from tests.fakes import thread_calls
from tests.helpers import alive, imageless_spec, make_target, namespaces_missing, wait_for

pytestmark = pytest.mark.namespace


@pytest.fixture(autouse=True)
def _needs_namespaces(tmp_path: Path) -> None:
    why = namespaces_missing()
    if why is not None:
        pytest.skip(why)


def spec(name: str) -> SandboxSpec:
    labels = {
        "sandbox-exporter.io/managed": "true",
        "sandbox-exporter.io/target": "fake",
        "sandbox-exporter.io/instance": "test-instance",
        "sandbox-exporter.io/created-at": "1",
    }
    return imageless_spec(name, labels, stop_grace=5)


def backend_for(target: Target) -> NamespaceBackend:
    assert isinstance(target.options, NamespaceOptions)
    return NamespaceBackend(target.options, target.timeouts)


def soon() -> Deadline:
    return Deadline.after(10)


def test_the_command_runs_inside_new_namespaces(tmp_path: Path) -> None:
    backend = backend_for(make_target(namespace={"state_dir": str(tmp_path)}))
    name = "sandbox-exporter-fake-isolation"
    sandbox = backend.create(spec(name), soon())
    try:
        backend.start(sandbox, soon())
        answer = backend.exec(
            sandbox,
            ["sh", "-c", "echo $$; cat /proc/sys/kernel/hostname; tail -n +3 /proc/net/dev"],
            soon(),
        )
        init_pid = backend._get(name).init_pid
        backend.stop(sandbox, 5, soon())
    finally:
        backend.remove(sandbox, soon())
    pid, hostname, *rest = answer.output.splitlines()
    assert answer.exit_code == 0
    assert int(pid) < 10, "a fresh pid namespace"
    assert hostname == name, "its own UTS namespace"
    assert [line.split(":")[0].strip() for line in rest if ":" in line] == ["lo"], (
        "no network but loopback"
    )
    assert not Path(f"/proc/{init_pid}").exists(), "the init exited on SIGTERM"
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


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
LIST_MODULES = """
import json, pathlib, sys, sysconfig
stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"]).resolve()
found = {}
for name, module in list(sys.modules.items()):
    origin = getattr(module, "__file__", None)
    if "." in name or not origin or pathlib.Path(origin).resolve().is_relative_to(stdlib):
        continue
    path = pathlib.Path(origin)
    found[name] = str(path.parent if path.name == "__init__.py" else path)
print(json.dumps(found))
"""


def run_as_nobody(tmp_path: Path) -> None:
    """The lifecycle as uid 65534, from a copy of the modules it imports that this user
    can read: the checkout and its virtualenv may be in a directory only root reads
    (a home of mode 0700), where it would find none of them."""
    script = (
        "from sandbox_exporter.probing.lifecycle import LifecycleRunner\n"
        "from sandbox_exporter.probing.prober import calls_for\n"
        "from tests.helpers import make_target\n"
        f"t = make_target(namespace={{'state_dir': '{tmp_path}/state'}})\n"
        "r = LifecycleRunner(calls_for(t), t, 'i').run()\n"
        "print('OK' if r.success else r.failure)\n"
    )
    interpreter = subprocess.run(
        [*NOBODY, sys.executable, "-c", "import json"], capture_output=True, text=True, check=False
    )
    if interpreter.returncode != 0:
        pytest.skip(f"uid 65534 cannot run this interpreter: {interpreter.stderr.strip()}")
    # as root first, with a state directory of its own, to learn what the run imports
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            script.replace(f"{tmp_path}/state", f"{tmp_path}/root-state") + LIST_MODULES,
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        check=True,
    )
    modules = json.loads(listed.stdout.splitlines()[-1])
    readable = tmp_path / "lib"
    readable.mkdir()
    for origin in modules.values():
        source = Path(origin)
        target = readable / source.name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif not target.exists():
            shutil.copy2(source, target)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)
    done = subprocess.run(
        [*NOBODY, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=readable,
        check=False,
        env={**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(readable)},
    )
    if "Operation not permitted" in done.stdout + done.stderr and "unshare" in done.stdout:
        pytest.skip(f"unprivileged user namespaces are disabled here: {done.stdout.strip()}")
    assert done.stdout.strip().endswith("OK"), done.stdout + done.stderr


def test_a_start_past_its_deadline_is_ended_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An init that never says ready: the start ends at its deadline, and the
    process it waited on goes with the sandbox."""
    target = make_target(namespace={"state_dir": str(tmp_path)})
    backend = backend_for(target)
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "unshare").write_text("#!/bin/sh\nexec sleep 60\n")  # never says ready
    (stub / "unshare").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}:{os.environ['PATH']}")
    name = "sandbox-exporter-fake-stuck"
    sandbox = backend.create(spec(name), soon())
    with pytest.raises(PhaseTimeout, match="start did not finish within 300ms"):
        thread_calls(backend, target).start(sandbox, timeout=0.3)
    recorded = [int(line.split()[0]) for line in (tmp_path / name / "pid").read_text().splitlines()]
    backend.remove(sandbox, soon())
    wait_for(lambda: not any(alive(pid) for pid in recorded), what="its processes killed")
    assert not (tmp_path / name).exists()


def test_nothing_of_a_removed_sandbox_is_kept_in_memory(tmp_path: Path) -> None:
    """A daemon runs this backend for months: what it holds per sandbox goes with it."""
    target = make_target(namespace={"state_dir": str(tmp_path)})
    backend = backend_for(target)
    runner = LifecycleRunner(thread_calls(backend), target, "test-instance")
    assert all(runner.run().success for _ in range(3))
    assert backend._running == {}
    assert backend._children == {}
