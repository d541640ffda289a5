"""Bare Linux namespaces through util-linux: no daemon, no image.

The floor every other backend is read against: what the kernel alone costs.

create = a private directory for the sandbox (its /tmp) and its record;
start  = `unshare` into new pid, mount, uts, ipc and network namespaces (and a
         user namespace when not root), until the init inside prints `ready`;
exec   = `nsenter` into those namespaces and run the command (its output read up
         to the cap, base.py);
stop   = SIGTERM to the init, until it exits (SIGKILL after the grace period);
remove = kill whatever is left, delete the directory.

The namespaces have no network (a fresh network namespace holds only a down
loopback) and a private /tmp. There are no cgroup limits: the floor measures
namespaces, not resource control.

Each sandbox's directory and processes are recorded through the shared state
directory (state.py), so a restarted exporter finds what a killed one left;
`unshare --kill-child` takes the init down with `unshare`. A call that outlives
its deadline has its child (`unshare` or `nsenter`) killed by `kill`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from sandbox_exporter.backends.base import (
    BackendError,
    BackendKind,
    BackendOptions,
    BackendUnavailable,
    Capabilities,
    Deadline,
    ExecResult,
    Found,
    Images,
    ManagedSandbox,
    NotFound,
    Output,
    SandboxRef,
    SandboxSpec,
    read_output,
    version_line,
)
from sandbox_exporter.backends.state import StateDirectory, default_root, proc_stat
from sandbox_exporter.config.settings import Timeouts

# $1: the sandbox's private directory, bound on /tmp; $2: its host name.
# PID 1 ignores signals it has no handler for, hence the trap.
INIT_SCRIPT = """set -e
mount --bind "$1" /tmp
hostname "$2"
trap 'exit 0' TERM
echo ready
sleep 2147483647 &
wait
"""
NAMESPACES = ("--pid", "--mount", "--uts", "--ipc", "--net")
ENTER = ("-p", "-m", "-u", "-i", "-n")
TOOLS = ("unshare", "nsenter", "mount", "hostname")


class NamespaceOptions(BackendOptions):
    state_dir: str | None = None
    """Where each sandbox's state is kept; null: /run/sandbox-exporter/namespace as root,
    else under $XDG_RUNTIME_DIR.
    """
    user_namespace: Literal["auto", "always", "never"] = "auto"
    """A user namespace too: `auto` (only when not root), `always` or `never`."""


def find_here() -> Found | NotFound:
    if not sys.platform.startswith("linux"):
        return NotFound(f"needs Linux namespaces; this is {sys.platform}")
    missing = [tool for tool in ("unshare", "nsenter") if shutil.which(tool) is None]
    if missing:
        return NotFound(f"util-linux {' and '.join(missing)} not found on PATH")
    # the tools are no proof: in a container without the privilege, unshare is refused
    user = ("--user", "--map-root-user") if os.geteuid() != 0 else ()
    try:
        tried = subprocess.run(
            ["unshare", *user, "--fork", *NAMESPACES, "true"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return NotFound(f"unshare did not run: {exc}")
    if tried.returncode != 0:
        why = tried.stderr.strip().splitlines()[-1] if tried.stderr.strip() else "refused"
        return NotFound(
            f"namespaces cannot be made here ({why}); in a container that "
            "takes root and CAP_SYS_ADMIN"
        )
    return Found({}, "the local kernel")


def _children(parent: int) -> list[int]:
    return _processes(lambda fields: fields[1] == str(parent))


def _group(leader: int) -> list[int]:
    """The processes of `leader`'s process group but `leader`."""
    return _processes(lambda fields: fields[2] == str(leader) and fields[0] != "Z", leader)


def _processes(wanted: Callable[[list[str]], bool], but: int = 0) -> list[int]:
    """The pids whose /proc/PID/stat fields (from the state on) are `wanted`."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != but:
            fields = proc_stat(int(entry.name))
            if fields and wanted(fields):
                out.append(int(entry.name))
    return out


class _Running:
    """A started sandbox: the `unshare` process and the init inside the namespaces."""

    def __init__(self, unshare: subprocess.Popen[bytes], init_pid: int) -> None:
        self.unshare = unshare
        self.init_pid = init_pid


class NamespaceBackend:
    def __init__(self, options: NamespaceOptions, timeouts: Timeouts) -> None:
        root = Path(options.state_dir) if options.state_dir else default_root("namespace")
        self.state = StateDirectory(root)
        if options.user_namespace == "auto":
            self.user_namespace = os.geteuid() != 0
        else:
            self.user_namespace = options.user_namespace == "always"
        self._running: dict[str, _Running] = {}
        self._children: dict[str, set[subprocess.Popen[bytes]]] = {}  # for `kill`
        self._lock = threading.Lock()

    # -- protocol ----------------------------------------------------------------

    def ping(self, deadline: Deadline) -> None:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise BackendUnavailable(f"util-linux tools not found on PATH: {', '.join(missing)}")
        self.state.ensure()

    def describe(self, image: str | None, deadline: Deadline) -> dict[str, str]:
        """What `bench --json` records of this backend: the util-linux that makes the
        namespaces (the kernel is in the report's machine)."""
        line = version_line(["unshare", "--version"], deadline)
        return {"util_linux": line.rsplit(" ", 1)[-1]}

    def create(self, spec: SandboxSpec, deadline: Deadline) -> SandboxRef:
        home = self.state.create(spec.name, spec.labels)
        try:
            (home / "tmp").mkdir(mode=0o700)
        except OSError as exc:
            raise BackendError(f"cannot create {home / 'tmp'}: {exc}") from exc
        return SandboxRef(spec.name)

    def start(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        name = sandbox.name
        home = self.state.path(name)
        command = ["unshare", "--fork", "--kill-child", "--mount-proc", *NAMESPACES]
        if self.user_namespace:
            command += ["--user", "--map-root-user"]
        command += ["--", "sh", "-c", INIT_SCRIPT, "sandbox-init", str(home / "tmp"), name]
        unshare = self._spawn(name, command)
        self.state.add_process(name, unshare.pid)
        assert unshare.stdout is not None
        line = _read_line(unshare.stdout, deadline)
        if line != b"ready\n":
            unshare.kill()
            _, err = unshare.communicate()
            self._forget(name, unshare)
            if line is None:
                raise BackendError("the namespace init did not say ready within the deadline")
            raise BackendError(
                f"the namespace init did not start (exit {unshare.returncode}): "
                f"{err.decode(errors='replace').strip() or line.decode(errors='replace')}"
            )
        children = _children(unshare.pid)
        if len(children) != 1:
            unshare.kill()
            unshare.wait()
            self._forget(name, unshare)
            raise BackendError(f"expected one init under unshare {unshare.pid}, found {children}")
        with self._lock:
            self._running[name] = _Running(unshare, children[0])
        self.state.add_process(name, children[0])

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> ExecResult:
        running = self._get(sandbox.name)
        enter = ["nsenter", "-t", str(running.init_pid), *ENTER]
        if self.user_namespace:
            enter += ["-U", "--preserve-credentials"]
        child = self._spawn(sandbox.name, [*enter, "--", *command], stderr=subprocess.STDOUT)
        assert child.stdout is not None
        output = Output()
        try:
            if not read_output(child.stdout, deadline, output) or not _waited(child, deadline):
                raise BackendError("nsenter did not finish within the deadline")
        except BackendError:
            _kill_group(child)  # the command nsenter forked into the namespaces; nsenter ends
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
        finally:
            child.stdout.close()
            self._forget(sandbox.name, child)
        return ExecResult(child.returncode, output.text())

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        with self._lock:
            running = self._running.get(sandbox.name)
        if running is None:
            return  # never started (or already removed): nothing to stop
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.init_pid, signal.SIGTERM)
        try:
            running.unshare.wait(timeout=min(grace_seconds, deadline.remaining()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(running.init_pid, signal.SIGKILL)
            try:
                running.unshare.wait(timeout=deadline.remaining())
            except subprocess.TimeoutExpired as exc:
                raise BackendError(f"the init did not exit after SIGKILL: {exc}") from exc
        running.unshare.communicate()

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        name = sandbox.name
        with self._lock:
            running = self._running.pop(name, None)
        if running is not None:
            if running.unshare.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(running.init_pid, signal.SIGKILL)
                running.unshare.kill()
            running.unshare.communicate()
        self.kill(sandbox)
        with self._lock:
            self._children.pop(name, None)
        self.state.remove(name)  # kills what an earlier process of the exporter left, too

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        return self.state.managed(target)

    def kill(self, sandbox: SandboxRef) -> None:
        """SIGKILL the `unshare` or `nsenter` a call on this sandbox is waiting for,
        with the command `nsenter` forked (its process group)."""
        with self._lock:
            children = list(self._children.get(sandbox.name, ()))
        for child in children:
            _kill_group(child)

    def close(self) -> None:
        with self._lock:
            names = list(self._running)
        for name in names:
            with contextlib.suppress(BackendError):
                self.remove(SandboxRef(name), Deadline.after(5))

    # -- helpers -----------------------------------------------------------------

    def _spawn(
        self, name: str, command: list[str], stderr: int = subprocess.PIPE
    ) -> subprocess.Popen[bytes]:
        """`command` as a child of its own session, with its stdout and stderr piped
        (stderr may go to stdout), known to `kill` until `_forget`."""
        try:
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot run {command[0]}: {exc}") from exc
        with self._lock:
            self._children.setdefault(name, set()).add(child)
        return child

    def _forget(self, name: str, child: subprocess.Popen[bytes]) -> None:
        with self._lock:
            children = self._children.get(name)
            if children is not None:
                children.discard(child)
                if not children:
                    del self._children[name]

    def _get(self, name: str) -> _Running:
        with self._lock:
            running = self._running.get(name)
        if running is None:
            raise BackendError(f"sandbox {name} is not running")
        return running


def _waited(child: subprocess.Popen[bytes], deadline: Deadline) -> bool:
    """`child` exited within the deadline."""
    try:
        child.wait(timeout=deadline.remaining())
    except subprocess.TimeoutExpired:
        return False
    return True


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL what a child of its own session (`nsenter`, `unshare`) started there, and
    let the child, which waits for it, reap it and exit; the child itself only when it
    started nothing yet. Killed first, `nsenter` would leave the command it forked to
    PID 1 (of the pid namespace the exporter runs in) to reap, and until that reaps it
    the sandbox's pid namespace cannot end: its init's exit waits (1.3 to 2 s here,
    under a PID 1 that reaps now and then; for good under one that never does)."""
    for pid in _group(child.pid) or [child.pid]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _read_line(stream: Any, deadline: Deadline) -> bytes | None:
    """One line from a child's pipe, or None if none came before the deadline."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        line = b""
        while not line.endswith(b"\n"):
            if not selector.select(timeout=deadline.remaining()):
                return None
            chunk = os.read(stream.fileno(), 1)
            if not chunk:
                break
            line += chunk
        return line


KIND = BackendKind(
    name="namespace",
    options=NamespaceOptions,
    factory=NamespaceBackend,
    capabilities=Capabilities(images=Images.NONE, remote=False, needs_root=False, thread_safe=True),
    discover=find_here,
    summary="bare Linux namespaces through util-linux: no daemon, no image (the floor)",
)
