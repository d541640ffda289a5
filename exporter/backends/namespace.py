"""Bare Linux namespaces through util-linux: no daemon, no image.

The floor every other backend is read against: what the kernel alone costs.

create = a private directory for the sandbox (its /tmp) and its metadata;
start  = `unshare` into new pid, mount, uts, ipc and network namespaces (and a
         user namespace when not root), until the init inside prints `ready`;
exec   = `nsenter` into those namespaces and run the command;
stop   = SIGTERM to the init, until it exits (SIGKILL after the grace period);
remove = kill whatever is left, delete the directory.

The namespaces have no network (a fresh network namespace holds only a down
loopback) and a private /tmp. There are no cgroup limits: the floor measures
namespaces, not resource control.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from exporter.backends.base import (
    CREATED_LABEL,
    INSTANCE_LABEL,
    MANAGED_LABEL,
    NAME_PREFIX,
    TARGET_LABEL,
    BackendError,
    BackendUnavailable,
    ExecResult,
    ManagedSandbox,
    SandboxSpec,
)
from exporter.config import NamespaceOptions, Target

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


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/sandbox-exporter/namespace")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "sandbox-exporter" / "namespace"
    return Path(tempfile.gettempdir()) / f"sandbox-exporter-{os.geteuid()}" / "namespace"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _children(parent: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields and fields[1] == str(parent):
                out.append(int(entry.name))
    return out


class _Running:
    """A started sandbox: the `unshare` process and the init inside the namespaces."""

    def __init__(self, unshare: subprocess.Popen[bytes], init_pid: int) -> None:
        self.unshare = unshare
        self.init_pid = init_pid


class NamespaceBackend:
    kind = "namespace"

    def __init__(self, target: Target) -> None:
        options = target.options
        assert isinstance(options, NamespaceOptions)
        self.state_dir = Path(options.state_dir) if options.state_dir else default_state_dir()
        if options.user_namespace == "auto":
            self.user_namespace = os.geteuid() != 0
        else:
            self.user_namespace = options.user_namespace == "always"
        self._exec_timeout = target.timeouts.exec
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    # -- protocol ----------------------------------------------------------------

    def ping(self) -> None:
        missing = [
            tool
            for tool in ("unshare", "nsenter", "mount", "hostname")
            if shutil.which(tool) is None
        ]
        if missing:
            raise BackendUnavailable(f"util-linux tools not found on PATH: {', '.join(missing)}")
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise BackendUnavailable(f"cannot use state directory {self.state_dir}: {exc}") from exc

    def image_present(self, image: str) -> bool:
        return True  # no images: the sandbox sees the host's files

    def pull_image(self, image: str) -> None:
        raise BackendError("the namespace backend has no images to pull")

    def create(self, spec: SandboxSpec) -> None:
        home = self._dir(spec.name)
        try:
            (home / "tmp").mkdir(parents=True, mode=0o700)
            (home / "meta.json").write_text(json.dumps({"name": spec.name, "labels": spec.labels}))
        except OSError as exc:
            raise BackendError(f"cannot create {home}: {exc}") from exc

    def start(self, name: str) -> None:
        home = self._dir(name)
        command = ["unshare", "--fork", "--kill-child", "--mount-proc", *NAMESPACES]
        if self.user_namespace:
            command += ["--user", "--map-root-user"]
        command += ["--", "sh", "-c", INIT_SCRIPT, "sandbox-init", str(home / "tmp"), name]
        try:
            unshare = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot run unshare: {exc}") from exc
        assert unshare.stdout is not None
        assert unshare.stderr is not None
        line = unshare.stdout.readline()
        if line != b"ready\n":
            unshare.kill()
            _, err = unshare.communicate()
            raise BackendError(
                f"the namespace init did not start (exit {unshare.returncode}): "
                f"{err.decode(errors='replace').strip() or line.decode(errors='replace')}"
            )
        children = _children(unshare.pid)
        if len(children) != 1:
            unshare.kill()
            unshare.wait()
            raise BackendError(f"expected one init under unshare {unshare.pid}, found {children}")
        running = _Running(unshare, children[0])
        with self._lock:
            self._running[name] = running
        (home / "pid").write_text(f"{running.init_pid} {_start_time(running.init_pid)}\n")

    def exec(self, name: str, command: list[str]) -> ExecResult:
        running = self._get(name)
        enter = ["nsenter", "-t", str(running.init_pid), *ENTER]
        if self.user_namespace:
            enter += ["-U", "--preserve-credentials"]
        try:
            done = subprocess.run(
                [*enter, "--", *command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=self._exec_timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"nsenter failed: {exc}") from exc
        return ExecResult(done.returncode, done.stdout.decode(errors="replace"))

    def stop(self, name: str, grace_seconds: float) -> None:
        with self._lock:
            running = self._running.get(name)
        if running is None:
            return  # never started (or already removed): nothing to stop
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.init_pid, signal.SIGTERM)
        try:
            running.unshare.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(running.init_pid, signal.SIGKILL)
            running.unshare.wait()
        running.unshare.communicate()

    def remove(self, name: str) -> None:
        with self._lock:
            running = self._running.pop(name, None)
        if running is not None:
            if running.unshare.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(running.init_pid, signal.SIGKILL)
                running.unshare.kill()
            running.unshare.communicate()
        else:
            self._kill_recorded_init(name)
        try:
            shutil.rmtree(self._dir(name))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackendError(f"cannot remove {self._dir(name)}: {exc}") from exc

    def list_managed(self, instance: str, target: str) -> list[ManagedSandbox]:
        found = []
        for meta_file in sorted(self.state_dir.glob(f"{NAME_PREFIX}*/meta.json")):
            try:
                labels = json.loads(meta_file.read_text())["labels"]
            except (OSError, ValueError, KeyError):
                continue
            if (
                labels.get(MANAGED_LABEL) == "true"
                and labels.get(INSTANCE_LABEL) == instance
                and labels.get(TARGET_LABEL) == target
            ):
                created = labels.get(CREATED_LABEL, "")
                found.append(
                    ManagedSandbox(
                        name=meta_file.parent.name,
                        target=target,
                        instance=instance,
                        created_at=float(created) if created.isdigit() else None,
                    )
                )
        return found

    def close(self) -> None:
        with self._lock:
            names = list(self._running)
        for name in names:
            with contextlib.suppress(BackendError):
                self.remove(name)

    # -- helpers -----------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        if "/" in name or name in (".", ".."):
            raise BackendError(f"invalid sandbox name {name!r}")
        return self.state_dir / name

    def _get(self, name: str) -> _Running:
        with self._lock:
            running = self._running.get(name)
        if running is None:
            raise BackendError(f"sandbox {name} is not running")
        return running

    def _kill_recorded_init(self, name: str) -> None:
        """Kill the init an earlier process of the exporter left, if it is still that init."""
        try:
            pid_text, _, started = (self._dir(name) / "pid").read_text().strip().partition(" ")
        except OSError:
            return
        if pid_text.isdigit() and _start_time(int(pid_text)) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_text), signal.SIGKILL)
