"""Per-sandbox records of local backends, on disk, so that an exporter restarted after
`kill -9` finds and removes what the killed one left.

One directory per sandbox under the backend's state root:

    <root>/<sandbox name>/meta.json   {"name": ..., "labels": {...}}, written by `create`
    <root>/<sandbox name>/pid         the processes it runs, one "<pid> <start time>" per
                                      line; a pid is signalled only while /proc shows
                                      the same start time (pids are reused)
    <root>/<sandbox name>/...         whatever else the backend keeps (a private /tmp,
                                      sockets, logs)

The root defaults to /run/sandbox-exporter/<backend> as root, else under
$XDG_RUNTIME_DIR, else under the temporary directory: places a reboot empties,
as it empties the processes they describe.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path

from sandbox_exporter.backends.base import (
    NAME_PREFIX,
    BackendError,
    BackendUnavailable,
    ManagedSandbox,
    is_managed,
)


def default_root(backend: str) -> Path:
    if os.geteuid() == 0:
        return Path("/run/sandbox-exporter") / backend
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "sandbox-exporter" / backend
    return Path(tempfile.gettempdir()) / f"sandbox-exporter-{os.geteuid()}" / backend


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards); None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), None if there is none."""
    fields = proc_stat(pid)
    return fields[19] if fields else None


class StateDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        """Create the root (mode 0700); BackendUnavailable when it cannot be used, or
        when another user could have planted records in it (what they name is killed
        and deleted)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            found = self.root.lstat()
        except OSError as exc:
            raise BackendUnavailable(f"cannot use state directory {self.root}: {exc}") from exc
        why = None
        if not stat.S_ISDIR(found.st_mode):
            why = "is not a directory"
        elif found.st_uid != os.geteuid():
            why = f"belongs to uid {found.st_uid}, not to this exporter's ({os.geteuid()})"
        elif found.st_mode & 0o022:
            why = f"can be written by others (mode {stat.S_IMODE(found.st_mode):o})"
        if why is not None:
            raise BackendUnavailable(f"cannot use state directory {self.root}: it {why}")

    def path(self, name: str) -> Path:
        if not name or "/" in name or name in (".", ".."):
            raise BackendError(f"invalid sandbox name {name!r}")
        return self.root / name

    def create(self, name: str, labels: dict[str, str]) -> Path:
        """The sandbox's directory, with its labels recorded."""
        home = self.path(name)
        try:
            home.mkdir(parents=True, mode=0o700)
            (home / "meta.json").write_text(json.dumps({"name": name, "labels": labels}))
        except OSError as exc:
            raise BackendError(f"cannot create {home}: {exc}") from exc
        return home

    def add_process(self, name: str, pid: int) -> None:
        """Record a process of the sandbox (with its start time, against pid reuse)."""
        with (self.path(name) / "pid").open("a") as record:
            record.write(f"{pid} {start_time(pid)}\n")

    def processes(self, name: str) -> list[int]:
        """The recorded processes of `name` that are still the ones recorded."""
        try:
            lines = (self.path(name) / "pid").read_text().splitlines()
        except OSError:
            return []
        alive = []
        for line in lines:
            pid, _, started = line.strip().partition(" ")
            if pid.isdigit() and start_time(int(pid)) == started:
                alive.append(int(pid))
        return alive

    def kill_processes(self, name: str) -> None:
        for pid in self.processes(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, name: str) -> None:
        """Kill what is recorded, delete the directory; a missing one is not an error."""
        self.kill_processes(name)
        home = self.path(name)
        try:
            shutil.rmtree(home)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackendError(f"cannot remove {home}: {exc}") from exc

    def managed(self, target: str) -> list[ManagedSandbox]:
        """The recorded sandboxes made for `target`, by any exporter instance."""
        found = []
        for meta in sorted(self.root.glob(f"{NAME_PREFIX}*/meta.json")):
            try:
                labels = json.loads(meta.read_text())["labels"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(labels, dict) and is_managed(labels, target):
                found.append(ManagedSandbox.from_labels(meta.parent.name, labels))
        return found
