"""The harness of the backend contract suite (test_backend_contract.py): one entry per
backend, all the suite needs to run every scenario on that backend against its real
engine or its double. A new backend gets the whole suite by adding its entry here.

An entry is a `Harness` subclass registered with `@entry`. Its `running(request)` sets
up the engine or double (or skips, saying why, where it is not here) and takes it
down after. The harness then says:

- `options()`: the backend's block of a target that reaches that engine or double,
  and `settings()`: whatever else such a target needs (an image present there, short
  timeouts against a double);
- `behave(behaviour)`: the target settings that make the sandbox's exec answer
  wrongly, hang or print more than the output cap (a `command`, unless the backend
  has something else in its place), and `mismatch()`: what the wrong answer's failure
  says;
- `unreachable()`: puts the engine out of reach of the targets made from then on,
  and returns words the failure must say;
- `leave(name, labels, start=...)`: a sandbox as an earlier exporter left it: by
  default created (and started) through a backend object outside the exporter
  (`direct`), dropped at the end as a killed exporter's is (`dropped`: closed, by
  default);
- `leftovers()`: what of any exporter's is still on the engine, for any target:
  sandboxes (by name), and what ran for them (processes, an exec's command);
- `cannot`: the scenarios that cannot run on this backend, each with why.

What no entry has to say, the suite checks itself: the metrics, the reasons, and that
no thread or child process a run started outlives it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest

from sandbox_exporter.backends.base import (
    CREATED_LABEL,
    EXPIRES_LABEL,
    INSTANCE_LABEL,
    MANAGED_LABEL,
    MAX_OUTPUT,
    TARGET_LABEL,
    Backend,
    Deadline,
    SandboxRef,
)
from sandbox_exporter.backends.state import StateDirectory
from sandbox_exporter.config import Target
from sandbox_exporter.probing.lifecycle import LifecycleRunner
from tests.conftest import TEST_IMAGE, Engine
from tests.fake_kubernetes import FakeKubernetes
from tests.fake_nomad import FakeNomad
from tests.fakes import thread_calls
from tests.firecracker_double import double_binary
from tests.helpers import alive, install_container_double, make_config, namespaces_missing
from tests.test_firecracker import vmms_in
from tests.tiny_guest import tiny_guest_image

TARGET = "contract"
INSTANCE = "test-instance"  # make_config's
FLOOD = 8 * MAX_OUTPUT  # bytes a flooding command prints: read whole, they would show


class Behaviour(StrEnum):
    WRONG = "wrong answer"  # a wrong exit code, and output
    HANG = "hang"  # never ends
    FLOOD = "flood"  # prints FLOOD bytes


COMMANDS = {
    Behaviour.WRONG: ["sh", "-c", "echo goodbye; exit 3"],
    Behaviour.HANG: ["sleep", "60"],
    Behaviour.FLOOD: ["head", "-c", str(FLOOD), "/dev/zero"],
}
MISMATCH = "exit code 3, expected 0; output 'goodbye\\n'"  # what the wrong answer's failure says
SHORT_TIMEOUTS = {"create": "5s", "start": "5s", "exec": "5s", "stop": "5s", "remove": "5s"}


def managed_labels(
    *, instance: str = INSTANCE, target: str = TARGET, age: float, ended: float | None = None
) -> dict[str, str]:
    """The labels the runner gives a sandbox, as exporter `instance` made it `age`
    seconds ago for `target`, its run over `ended` seconds ago (None: still going)."""
    now = time.time()
    return {
        MANAGED_LABEL: "true",
        TARGET_LABEL: target,
        INSTANCE_LABEL: instance,
        CREATED_LABEL: str(int(now - age)),
        EXPIRES_LABEL: str(int(now - ended if ended is not None else now + 600)),
    }


class Harness:
    backend: ClassVar[str]
    cannot: ClassVar[dict[str, str]] = {}

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self._direct: Backend[Any] | None = None

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[Self]:
        harness = cls(tmp_path, monkeypatch)
        with harness.running(request):
            yield harness

    @contextlib.contextmanager
    def running(self, request: pytest.FixtureRequest) -> Iterator[None]:
        yield

    def options(self) -> dict[str, Any]:
        return {}

    def settings(self) -> dict[str, Any]:
        return {}

    def behave(self, behaviour: Behaviour) -> dict[str, Any]:
        return {"command": COMMANDS[behaviour]}

    def mismatch(self) -> str:
        return MISMATCH

    def unreachable(self) -> str:
        raise NotImplementedError

    def leftovers(self) -> list[str]:
        raise NotImplementedError

    def leave(self, name: str, labels: dict[str, str], *, start: bool = False) -> None:
        backend, target = self.direct(), self.target()
        spec = LifecycleRunner(thread_calls(backend), target, INSTANCE).spec(name)
        sandbox = backend.create(dataclasses.replace(spec, labels=labels), Deadline.after(30))
        if start:
            backend.start(sandbox, Deadline.after(30))

    def dropped(self, backend: Backend[Any]) -> None:
        backend.close()

    # -- the same for every entry ------------------------------------------------------

    def target(self, **settings: Any) -> Target:
        """The target TARGET of exporter INSTANCE on this engine or double, with
        `settings` (its own block merged into the backend's options, its timeouts into
        the harness's)."""
        own = self.settings()
        timeouts = {**own.pop("timeouts", {}), **settings.pop("timeouts", {})}
        block = {**self.options(), **settings.pop(self.backend, {})}
        data = {"name": TARGET, "backend": self.backend, **own, **settings, self.backend: block}
        return make_config({**data, "timeouts": timeouts}).targets[0]

    def direct(self) -> Backend[Any]:
        """A backend object of the test's own, outside any exporter, as an earlier
        exporter's was: `leave` makes sandboxes with it, `remove` removes them. Dropped
        (`dropped`) when the test ends."""
        if self._direct is None:
            target = self.target()
            self._direct = target.kind.build(target.options, target.timeouts)
        return self._direct

    def remove(self, name: str) -> None:
        """A sandbox a test left, removed through the backend."""
        self.direct().remove(SandboxRef(name), Deadline.after(30))

    def close(self) -> None:
        if self._direct is not None:
            self.dropped(self._direct)


HARNESSES: dict[str, type[Harness]] = {}
# registered backends with no entry yet, and why
PENDING: dict[str, str] = {}


def entry(cls: type[Harness]) -> type[Harness]:
    HARNESSES[cls.backend] = cls
    return cls


# -- the entries, in the registry's order -----------------------------------------------


class _EngineHarness(Harness):
    """A Docker-API engine that scripts/test.sh starts (conftest.py)."""

    engine: Engine
    url: str  # where targets reach it

    @contextlib.contextmanager
    def running(self, request: pytest.FixtureRequest) -> Iterator[None]:
        self.engine = request.getfixturevalue(f"{self.backend}_engine")
        self.url = self.engine.url
        yield

    def options(self) -> dict[str, Any]:
        return {"base_url": self.url}

    def settings(self) -> dict[str, Any]:
        return {"image": TEST_IMAGE, "pull_policy": "never"}

    def unreachable(self) -> str:
        self.url = f"unix://{self.tmp_path}/no.sock"
        return "no such socket"

    def leftovers(self) -> list[str]:
        return [str(c.attrs["Names"][0]).lstrip("/") for c in self.engine.managed()]


@entry
class DockerHarness(_EngineHarness):
    backend = "docker"


@entry
class PodmanHarness(_EngineHarness):
    backend = "podman"


class _ApiDoubleHarness(Harness):
    """An API double served on loopback (loopback_app.py), whose execs run for real."""

    fake: FakeKubernetes | FakeNomad

    def settings(self) -> dict[str, Any]:
        return {"image": "busybox:1.36", "stop_grace": "1s", "timeouts": SHORT_TIMEOUTS}

    def unreachable(self) -> str:
        self.fake.stop()
        return "connection refused"

    def leftovers(self) -> list[str]:
        return [f"exec command {pid}" for pid in self.fake.running_commands()]


@entry
class KubernetesHarness(_ApiDoubleHarness):
    """The API-server double (fake_kubernetes.py), driven by the real client."""

    backend = "kubernetes"
    fake: FakeKubernetes
    kubeconfig: str

    @contextlib.contextmanager
    def running(self, request: pytest.FixtureRequest) -> Iterator[None]:
        pytest.importorskip("kubernetes")
        self.fake = FakeKubernetes()
        try:
            self.kubeconfig = self.fake.kubeconfig(str(self.tmp_path / "kubeconfig"))
            yield
        finally:
            self.fake.close()

    def options(self) -> dict[str, Any]:
        return {"kubeconfig": self.kubeconfig, "network_policy": True}

    def leftovers(self) -> list[str]:
        return (
            [f"pod {name}" for _, name in list(self.fake.pods)]
            + [f"networkpolicy {name}" for _, name in list(self.fake.policies)]
            + super().leftovers()
        )


@entry
class NamespaceHarness(Harness):
    """The real thing: util-linux unshare and nsenter on this kernel."""

    backend = "namespace"
    state: Path
    left_running: list[int]  # the processes of the sandboxes `leave` started

    @contextlib.contextmanager
    def running(self, request: pytest.FixtureRequest) -> Iterator[None]:
        why = namespaces_missing()
        if why is not None:
            pytest.skip(why)
        self.state = self.tmp_path / "state"
        self.left_running = []
        yield

    def options(self) -> dict[str, Any]:
        return {"state_dir": str(self.state)}

    def unreachable(self) -> str:
        empty = self.tmp_path / "empty-path"
        empty.mkdir()
        self.monkeypatch.setenv("PATH", str(empty))
        return "util-linux tools not found on PATH"

    def leave(self, name: str, labels: dict[str, str], *, start: bool = False) -> None:
        super().leave(name, labels, start=start)
        self.left_running += StateDirectory(self.state).processes(name)

    def dropped(self, backend: Backend[Any]) -> None:
        """Not closed: closing removes what it started, which a killed exporter's does not."""

    def leftovers(self) -> list[str]:
        dirs = sorted(p.name for p in self.state.iterdir()) if self.state.exists() else []
        return dirs + [f"process {pid}" for pid in self.left_running if alive(pid)]


@entry
class FirecrackerHarness(Harness):
    """The VMM double (firecracker_double.py, held to the real binary's API by its
    parity tests), which also plays the guest's listener and runs its commands: this
    machine's nested KVM cannot boot a guest that runs them (the real VMM's own tests
    are in test_firecracker.py)."""

    backend = "firecracker"
    state: Path
    binary: str

    @contextlib.contextmanager
    def running(self, request: pytest.FixtureRequest) -> Iterator[None]:
        self.state = self.tmp_path / "state"
        self.binary = str(double_binary(self.tmp_path))
        kernel, rootfs = self.tmp_path / "vmlinux", self.tmp_path / "rootfs.ext4"
        kernel.write_bytes(tiny_guest_image())
        rootfs.write_bytes(bytes(1 << 20))
        self.files = {"kernel": str(kernel), "rootfs": str(rootfs)}
        yield

    def options(self) -> dict[str, Any]:
        return {
            "binary": self.binary,
            **self.files,
            "state_dir": str(self.state),
            "vsock_attempt": "200ms",
        }

    def unreachable(self) -> str:
        self.binary = str(self.tmp_path / "no-firecracker")
        return "does not exist or is not executable"

    def dropped(self, backend: Backend[Any]) -> None:
        """Not closed: closing removes its VMs, which a killed exporter's does not."""

    def leftovers(self) -> list[str]:
        files = sorted(p.name for p in self.state.iterdir()) if self.state.exists() else []
        return files + [f"VMM {pid}" for pid in vmms_in(self.state)]


@entry
class NomadHarness(_ApiDoubleHarness):
    """The agent double (fake_nomad.py), driven by python-nomad and websocket-client."""

    backend = "nomad"
    token = "s3cr3t-0000-nomad-token"
    fake: FakeNomad

    @contextlib.contextmanager
    def running(self, request: pytest.FixtureRequest) -> Iterator[None]:
        pytest.importorskip("nomad")
        self.monkeypatch.setenv("TEST_NOMAD_TOKEN", self.token)
        self.fake = FakeNomad(token=self.token)
        try:
            yield
        finally:
            self.fake.close()

    def options(self) -> dict[str, Any]:
        return {"address": self.fake.url, "token": "${TEST_NOMAD_TOKEN}", "datacenters": ["dc1"]}

    def leftovers(self) -> list[str]:
        return (
            [f"job {job}" for job in self.fake.jobs()]
            + [f"allocation {alloc}" for alloc in self.fake.live_allocations()]
            + super().leftovers()
        )


@entry
class HyperlightHarness(Harness):
    """Doubles of the SDK's Sandbox (hyperlight_double.py), built in the worker process
    as the SDK's would be: no hypervisor here runs Hyperlight guests."""

    backend = "hyperlight"
    cannot: ClassVar[dict[str, str]] = {
        "orphans": "a micro-VM lives in its worker process and goes with it: no exporter "
        "leaves one behind (list_managed is always empty)"
    }
    doubles: ClassVar[dict[Behaviour, str]] = {
        Behaviour.WRONG: "GuestError",
        Behaviour.HANG: "Held",  # a native call that holds the worker's interpreter
        Behaviour.FLOOD: "Flood",
    }
    double = "Sandbox"

    def options(self) -> dict[str, Any]:
        return {"sandbox_class": f"tests.hyperlight_double:{self.double}"}

    def settings(self) -> dict[str, Any]:
        return {"timeouts": {"create": "10s", "exec": "10s"}}

    def behave(self, behaviour: Behaviour) -> dict[str, Any]:
        return {
            "hyperlight": {"sandbox_class": f"tests.hyperlight_double:{self.doubles[behaviour]}"}
        }

    def mismatch(self) -> str:
        return "exit code 1, expected 0; output 'Traceback"

    def unreachable(self) -> str:
        self.double = "NoHypervisor"
        return "No Hypervisor was found for Sandbox"

    def leftovers(self) -> list[str]:
        return []  # nothing outlives the worker process, which the suite sees end


@entry
class AppleHarness(Harness):
    """A double of the `container` CLI (container_double.py), first on PATH."""

    backend = "apple"

    @contextlib.contextmanager
    def running(self, request: pytest.FixtureRequest) -> Iterator[None]:
        install_container_double(self.tmp_path, self.monkeypatch)
        yield

    def unreachable(self) -> str:
        self.monkeypatch.setenv("CONTAINER_DOUBLE_FAIL", "apiserver")
        return "container system start"

    def leftovers(self) -> list[str]:
        state, pids = self.tmp_path / "state.json", self.tmp_path / "exec.pids"
        containers = list(json.loads(state.read_text())) if state.exists() else []
        commands = [int(pid) for pid in pids.read_text().split()] if pids.exists() else []
        return containers + [f"exec command {pid}" for pid in commands if alive(pid)]
