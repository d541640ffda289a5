"""Small shared helpers for tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sandbox_exporter.backends.base import BackendUnavailable, Deadline, SandboxSpec
from sandbox_exporter.backends.state import proc_stat
from sandbox_exporter.config import Config, Target, parse_config
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.prober import Prober


def run_init(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`sandbox-exporter init ARGS` in a child with only PATH and `env` set."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox_exporter", "init", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def make_config(*targets: dict[str, Any], defaults: dict[str, Any] | None = None) -> Config:
    data: dict[str, Any] = {
        "instance": "test-instance",
        "defaults": defaults or {},
        "targets": list(targets) or [{"name": "fake", "backend": "namespace"}],
    }
    return parse_config(data, source="<test>")


def make_target(backend: str = "namespace", **settings: Any) -> Target:
    """One target named `fake` of that backend kind, with the given settings (tests
    inject the backend object)."""
    return make_config({"name": "fake", "backend": backend, **settings}).targets[0]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Wait until `predicate()` is truthy; fail after `timeout` seconds. Not a sleep: it
    re-checks the condition as soon as a short wait elapses and stops at the deadline."""
    deadline = time.perf_counter() + timeout  # real time, whatever a test did to the clock
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.perf_counter() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        pause.wait(0.02)


def alive(pid: int) -> bool:
    """Process `pid` runs (is there and not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def children(pid: int) -> set[int]:
    """The pids of the processes whose parent is `pid` (zombies too)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (proc_stat(int(entry.name)) or ["", ""])[1] == str(pid):
            found.add(int(entry.name))
    return found


def namespaces_missing() -> str | None:
    """Why the namespace backend cannot run here (no Linux, no util-linux unshare, or
    not permitted); None when it can."""
    if not sys.platform.startswith("linux") or not shutil.which("unshare"):
        return "needs Linux and util-linux unshare"
    probe = subprocess.run(
        [
            "unshare",
            "--fork",
            "--pid",
            "--mount-proc",
            "--mount",
            "--net",
            *([] if os.geteuid() == 0 else ["--user", "--map-root-user"]),
            "true",
        ],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"namespaces not permitted here: {probe.stderr.decode().strip()}"
    return None


def scraped(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name{labels}` in a text exposition, None if absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def unreachable_message(target: dict[str, Any]) -> str:
    """What the backend of `target` (a config dict) says when its ping cannot reach its
    engine; fails the test when the ping does not raise BackendUnavailable."""
    built = make_config(target).targets[0]
    backend = built.kind.build(built.options, built.timeouts)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            backend.ping(Deadline.after(5))
    finally:
        backend.close()
    return str(caught.value)


def install_container_double(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The double of Apple's `container` CLI (container_double.py) first on PATH, its
    state under `root` (`state.json`, `calls.log`, `exec.pids`), no switch set."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "container"
    double = Path(__file__).parent / "container_double.py"
    exe.write_text(f"#!{sys.executable}\n" + double.read_text())
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CONTAINER_DOUBLE_STATE", str(root / "state.json"))
    for switch in ("CONTAINER_DOUBLE_FAIL", "CONTAINER_DOUBLE_SHAPE"):
        monkeypatch.delenv(switch, raising=False)


def imageless_spec(
    name: str, labels: dict[str, str] | None = None, *, memory_mb: int = 64, stop_grace: float = 1
) -> SandboxSpec:
    """A sandbox spec for a backend that takes no image (namespace, micro-VMs): 1 CPU,
    64 pids, as a backend is handed it by the runner."""
    return SandboxSpec(
        name=name,
        labels=labels or {},
        image="",
        pull_policy="never",
        cpus=1,
        memory_mb=memory_mb,
        pids_limit=64,
        stop_grace=stop_grace,
    )


def interrupted_bench(
    *args: str, once: Callable[[], Any], what: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`sandbox-exporter bench ARGS` as a process, sent Ctrl-C (SIGINT) as soon as
    `once()` holds (say, its sandboxes run); its exit status and what it printed."""
    import signal

    command = [sys.executable, "-m", "sandbox_exporter", "bench", *args]
    proc = subprocess.Popen(
        command,
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(once, timeout=30, what=what)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


# short enough that a test against a double of a remote control plane fails fast
QUICK_TIMEOUTS = {"create": "5s", "start": "5s", "exec": "5s", "stop": "5s", "remove": "5s"}


def double_prober(
    name: str,
    backend: str,
    block: str,
    options: dict[str, Any],
    *,
    instance: str,
    registry: CollectorRegistry | None = None,
    **settings: Any,
) -> Prober:
    """A Prober of one target `name` of `backend` against a test double: busybox, quick
    timeouts, a 1 s stop grace, `options` as its `block`; `settings` override any."""
    target = {
        "name": name,
        "backend": backend,
        "image": "busybox:1.36",
        "timeouts": QUICK_TIMEOUTS,
        "stop_grace": "1s",
        block: options,
        **settings,
    }
    config = parse_config({"instance": instance, "targets": [target]})
    return Prober(
        config.targets[0],
        instance,
        Metrics(registry or CollectorRegistry()),
        stopping=threading.Event(),
    )
